"""Complexity report: trainable parameters, multiply-adds and CPU latency (``lightsr profile``).

Multiply-adds are counted by ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2) on the ``meta``
device, so no arithmetic is run. It counts convolutions and every matrix product — linear layers, ``bmm`` /
``matmul`` (ELAN's window attention, LKSMN's MDTA) and ``scaled_dot_product_attention``. It does not count
element-wise work (activations, normalisation, softmax, residual additions, gating products), pooling,
interpolation, padding, rolls or pixel shuffle; the papers' MAC figures leave these out too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from lightsr import _argtypes
from lightsr.errors import UsageError

# The papers report MACs for a 1280×720 output.
REFERENCE_OUTPUT = (720, 1280)


@dataclass
class Profile:
    arch: str
    scale: int
    params: int
    input_hw: tuple[int, int]
    macs: int
    macs_by_op: dict[str, int]
    latency_ms: float | None = None
    latency_input_hw: tuple[int, int] | None = None
    threads: int | None = None
    runs: int | None = None
    allocator: str | None = None
    form: str | None = None


def count_macs(model: torch.nn.Module, input_hw: tuple[int, int]) -> tuple[int, dict[str, int]]:
    """Multiply-adds of one forward pass at ``input_hw``, total and per aten op."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    meta_model = copy.deepcopy(model).to("meta").eval()
    x = torch.empty(1, 3, *input_hw, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_model(x)
    by_op = {str(op).split(".")[-2] if "." in str(op) else str(op): int(n) // 2
             for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return counter.get_total_flops() // 2, by_op


def measure_latency(model: torch.nn.Module, input_hw: tuple[int, int], runs: int = 5, warmup: int = 1) -> float:
    """Median wall-clock milliseconds of ``runs`` forward passes (after ``warmup``) on one image."""
    x = torch.rand(1, 3, *input_hw, device=next(model.parameters()).device)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            model(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def profile(model, input_hw: tuple[int, int] | None = None, latency_hw: tuple[int, int] | None = None,
            runs: int = 5, fuse: bool = True) -> Profile:
    """Parameters and MACs (for a 1280×720 output unless ``input_hw`` is given); latency if ``latency_hw``.

    MACs are those of the network as the paper draws it (the training form); latency is timed on the inference
    form (``model.fuse()``, what ``upscale`` and ``eval`` run) unless ``fuse=False``.
    """
    s = model.scale
    input_hw = input_hw or (REFERENCE_OUTPUT[0] // s, REFERENCE_OUTPUT[1] // s)
    macs, by_op = count_macs(model, input_hw)
    prof = Profile(model.arch, s, model.num_trainable_params(), tuple(input_hw), macs, by_op)
    if latency_hw:
        prof.latency_ms = measure_latency(model.fuse() if fuse else model, latency_hw, runs=runs)
        prof.form = "fused" if fuse else "training form"
        from lightsr.allocator import active_allocator

        prof.latency_input_hw, prof.threads, prof.runs = tuple(latency_hw), torch.get_num_threads(), runs
        prof.allocator = active_allocator()
    return prof


def _hw(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH (e.g. 320x180), got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="network name (random init: enough for counting and timing)")
    src.add_argument("--weights", help="checkpoint file")
    p.add_argument("--scale", type=_argtypes.positive, default=None, help="scale (default 4, or the checkpoint's)")
    p.add_argument("--input-size", type=_hw, metavar="WxH",
                   help="input size for MACs (default: the input giving a 1280×720 output)")
    p.add_argument("--latency", type=_hw, metavar="WxH", nargs="?", const=(180, 320),
                   help="also time the forward pass on a WxH input (default 320x180)")
    p.add_argument("--runs", type=_argtypes.positive, default=5, help="timed runs (median reported)")
    p.add_argument("--no-fuse", action="store_true", help="time the training form instead of the inference form")
    p.add_argument("--threads", type=_argtypes.positive, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")


def run_cli(args: argparse.Namespace) -> int:
    if args.runs < 1:
        raise UsageError(f"--runs must be at least 1, got {args.runs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.weights:
        from lightsr.checkpoints import load_model

        model = load_model(args.weights, scale=args.scale)
    else:
        from lightsr.models.registry import create_model

        model = create_model(args.model, scale=4 if args.scale is None else args.scale).eval()
    prof = profile(model, args.input_size, args.latency, args.runs, fuse=not args.no_fuse)
    if args.json:
        print(json.dumps(asdict(prof), indent=1))
        return 0
    h, w = prof.input_hw
    print("| model | scale | params | input | MACs | latency |")
    print("|---|---|---|---|---|---|")
    lat = "—"
    if prof.latency_ms is not None:
        lat = (f"{prof.latency_ms:.1f} ms ({prof.latency_input_hw[1]}×{prof.latency_input_hw[0]}, {prof.form}, "
               f"{prof.threads} threads, {prof.allocator}, median of {prof.runs})")
    print(f"| {prof.arch} | ×{prof.scale} | {prof.params:,} | {w}×{h} | {prof.macs / 1e9:.2f} G | {lat} |")
    return 0
