"""Complexity report: trainable parameters, multiply-adds and CPU latency (``lightsr profile`` is
:mod:`lightsr.commands.profile`).

Multiply-adds are counted by ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2) on the ``meta``
device, so no arithmetic is run. It counts convolutions and every matrix product — linear layers, ``bmm`` /
``matmul`` (window attention, transposed channel attention) and ``scaled_dot_product_attention``. It does not count
element-wise work (activations, normalisation, softmax, residual additions, gating products), pooling,
interpolation, padding, rolls or pixel shuffle; the papers' MAC figures leave these out too.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import torch

from lightsr.models.base import SRNet
from lightsr.runtimes.registry import DEFAULT_RUNTIME

# The papers report MACs for a 1280×720 output.
REFERENCE_OUTPUT = (720, 1280)


@dataclass
class Profile:
    """Parameters, multiply-adds (``torch.utils.flop_counter``) and optional latency of a network."""
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
    backend: str | None = None
    precision: str | None = None


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
    """Median wall-clock milliseconds of ``runs`` forward passes (after ``warmup``) on one image; ``model``: a
    network or a :class:`lightsr.runtimes.Runtime`."""
    device = model.device if isinstance(getattr(model, "device", None), torch.device) else next(
        model.parameters()).device
    x = torch.rand(1, 3, *input_hw, device=device)
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


def profile(model: SRNet, input_hw: tuple[int, int] | None = None, latency_hw: tuple[int, int] | None = None,
            runs: int = 5, fuse: bool = True, backend: str = DEFAULT_RUNTIME, precision: str = "fp32",
            calibration: str | os.PathLike | None = None) -> Profile:
    """Parameters and MACs (for a 1280×720 output unless ``input_hw`` is given); latency if ``latency_hw``.

    MACs are those of the network as the paper draws it (the training form); latency is timed on the inference
    form (``model.fuse()``, what ``upscale`` and ``eval`` run) unless ``fuse=False``, on the runtime ``backend``
    (:data:`lightsr.runtimes.RUNTIMES`) in ``precision`` (:func:`lightsr.runtimes.build`; ``auto`` resolved as
    ``upscale`` resolves it; ``calibration``: an int8 graph's calibration folder).
    """
    s = model.scale
    input_hw = input_hw or (REFERENCE_OUTPUT[0] // s, REFERENCE_OUTPUT[1] // s)
    macs, by_op = count_macs(model, input_hw)
    prof = Profile(model.arch, s, model.num_trainable_params(), tuple(input_hw), macs, by_op)
    if latency_hw:
        from lightsr.allocator import active_allocator
        from lightsr.runtimes.factory import build

        device = next(model.parameters()).device
        runtime = build(model, backend, precision, device, fuse=fuse, calibration=calibration)
        prof.latency_ms = measure_latency(runtime, latency_hw, runs=runs)
        prof.form = "fused" if fuse else "training form"
        prof.backend, prof.precision = runtime.runtime, runtime.precision
        prof.latency_input_hw, prof.threads, prof.runs = tuple(latency_hw), torch.get_num_threads(), runs
        prof.allocator = active_allocator()
    return prof
