"""Inference latency of every form, backend and precision of every network (docs/speed.md's latency table).

For each network and scale it times, on one image giving a 1280×720 output (input 1280/s × 720/s, or
``--input WxH``): the training form (``train``), the fused form under ``torch.compile`` (``compile``, with
Inductor's weight freezing unless ``--no-freezing``), and every ``BACKEND:PRECISION`` of
:func:`lightsr.runtimes.build` — ``torch:fp32`` (the fused form, what ``upscale --precision fp32`` runs),
``torch:bf16``, ``onnxruntime:fp32``, ``openvino:fp32``, ``openvino:bf16`` (the non-torch ones run the ONNX
export of the form the network's spec names), and ``onnxruntime:fp32:FORM`` / ``openvino:fp32:FORM`` (an export of
``training`` or ``fused``, to choose ``graph_form``). Warm-up, then ``--runs`` rounds in which the variants take
turns (A/B/C… alternately, so that a noisy machine slows all of them alike); the median and minimum per variant,
all in this one process with the same thread count and allocator. It prints the ratio to the training form and to
``torch:fp32``, the max abs difference of each output against the float32 training form, the share of the compute
floor reached (MACs from ``lightsr profile`` at ``--peak`` GFLOP/s, measured on a large matmul when not given), and
the process's peak RSS. A variant whose backend or precision this machine lacks is skipped with a note.

``--official ARCH=DIR`` (e.g. ``--official hasn=~/src/HASN --official elan_light=~/src/ELAN``) adds the official
network code's eager forward (``official``, loaded by ``official_code.py`` from a checkout of its repository) to
the same alternating rounds; the random-init official network is then the source of the weights every lightsr form
loads (through lightsr's converter of the official layout), so its max abs difference is a live equivalence check.

Run it once per allocator to compare them, e.g.::

    LIGHTSR_ALLOCATOR=system python benchmarks/latency.py --models hasn --scales 4   # glibc's defaults
    python benchmarks/latency.py --models hasn --scales 4                            # glibc tuned, as the CLI does
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python benchmarks/latency.py ...

(``python -m lightsr`` re-executes itself under tcmalloc when installed; this script does not, so that you
choose.)
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's lightsr, not an installed one

import lightsr
from lightsr.errors import LightSRError
from lightsr.models.base import calibrate_batchnorm
from lightsr.profile import count_macs


def bench_model(name: str, scale: int, h: int, w: int, official: Path | None = None,
                weights: str | None = None) -> tuple[torch.nn.Module, torch.Tensor, torch.nn.Module | None]:
    """A random-init network (seed 0) in eval mode and an image-like ``h×w`` input it is calibrated on; with a
    checkout of the official code, the official network too, whose weights the returned lightsr network loads;
    with ``weights`` (a name or file), those weights instead.

    Image-like (coarse noise, bicubic-upsampled): on i.i.d. noise ELAN's attention is chaotic and float32
    evaluations of the same function differ wildly, which would hide real errors; and random-init ELAN's default
    BatchNorm statistics make its attention ill-conditioned (see ``calibrate_batchnorm``).
    """
    torch.manual_seed(0)
    if weights is None:
        model = lightsr.create_model(name, scale=scale).eval()
    else:
        model = lightsr.load_model(weights, name=name, scale=scale).eval()
    coarse = torch.rand(1, 3, max(h // 4, 2), max(w // 4, 2))
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic").clamp(0, 1)
    if weights is not None:
        return model, x, None
    if official is None:
        calibrate_batchnorm(model, x[..., :64, :64])
        return model, x, None
    import official_code

    from lightsr.checkpoints import load_state_dict

    torch.manual_seed(0)
    ref, stand_ins = official_code.load(name, official, scale)
    if stand_ins:
        print(f"# official {name}: stand-ins for {', '.join(stand_ins)} (see official_code.py)", file=sys.stderr)
    calibrate_batchnorm(ref, x[..., :64, :64])
    model = load_state_dict(official_code.official_state_dict(ref), name=name, scale=scale,
                            source=f"official {name}").eval()
    return model, x, ref


def matmul_peak(seconds: float = 2.0) -> float:
    """GFLOP/s of a large float32 matmul on this machine (the compute floor's reference)."""
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 2048**3 * n / (time.perf_counter() - t0) / 1e9


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, x, runs: int, warmup: int) -> tuple[float, torch.Tensor]:
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            y = fn(x)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times), y


def graph_of_form(model: torch.nn.Module, backend: str, precision: str, form: str) -> Callable[[torch.Tensor],
                                                                                            torch.Tensor]:
    """``backend`` (onnxruntime or openvino, fp32) running an export of ``form`` (training or fused), whatever
    form the network's spec exports: how ``graph_form`` is chosen. The export lives in a temporary folder
    removed at exit."""
    import atexit
    import shutil
    import tempfile

    from lightsr.runtimes import build, file_runtimes
    from lightsr.runtimes.base import OnnxFile
    from lightsr.runtimes.graphs import cpu_fp32, write_graph

    if form not in ("training", "fused") or backend not in file_runtimes() or precision != "fp32":
        raise SystemExit(f"--variants {backend}:{precision}:{form}: expected "
                         f"{'|'.join(file_runtimes())}:fp32:training|fused")
    folder = tempfile.mkdtemp(prefix="lightsr-latency-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = Path(folder) / f"{form}.onnx"
    net = cpu_fp32(model)
    write_graph(cpu_fp32(net.fuse()) if form == "fused" else net, path, 17)
    return build(OnnxFile(path), backend, "fp32", "cpu", torch.get_num_threads())


def runner(model: torch.nn.Module, variant: str, no_freezing: bool):
    """The callable timed for ``variant`` (None when this machine cannot run it)."""
    if variant == "train":
        return model
    if variant == "compile":
        # Freezing treats the weights as constants (folded, pre-packed for oneDNN): measured 8–20% faster than
        # plain compile for the fused LKSMN and ELAN-light on one thread.
        import torch._inductor.config as inductor_config

        inductor_config.freezing = not no_freezing
        return torch.compile(model.fuse())
    from lightsr.runtimes import build

    backend, _, precision = variant.partition(":")
    precision, _, form = precision.partition(":")
    try:
        if form:
            return graph_of_form(model, backend, precision, form)
        return build(model, backend, precision or "fp32", "cpu", threads=torch.get_num_threads())
    except (LightSRError, ImportError) as e:
        print(f"# {variant}: skipped ({e})", file=sys.stderr)
        return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["elan_light", "hasn", "lksmn", "elan"])
    p.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    p.add_argument("--variants", nargs="+", default=["train", "torch:fp32", "torch:bf16", "onnxruntime:fp32",
                                                     "openvino:fp32", "openvino:bf16"],
                   help="train, compile, BACKEND:PRECISION or BACKEND:fp32:FORM (default: %(default)s)")
    p.add_argument("--input", type=str, help="WxH input instead of the one giving a 1280×720 output")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-freezing", action="store_true", help="compile without Inductor's weight freezing")
    p.add_argument("--peak", type=float, help="GFLOP/s of the compute floor (default: measured)")
    p.add_argument("--weights", action="append", default=[], metavar="ARCH=NAME",
                   help="time trained weights (a bundled or published name, or a file) instead of a random init "
                        "(repeatable)")
    p.add_argument("--official", action="append", default=[], metavar="ARCH=DIR",
                   help="time the official code from a checkout too (elan_light, elan, hasn; repeatable)")
    args = p.parse_args()
    official: dict[str, Path] = {}
    if args.official:  # checked before anything is printed
        import official_code
    for item in args.official:
        arch, sep, folder = item.partition("=")
        if not sep or arch not in args.models:
            p.error(f"--official {item}: expected ARCH=DIR with ARCH among --models")
        try:
            official[arch] = official_code.check(arch, Path(folder).expanduser())
        except ValueError as e:
            p.error(f"--official {item}: {e}")
    weights = dict(item.partition("=")[::2] for item in args.weights)
    if any(not v or k not in args.models for k, v in weights.items()):
        p.error("--weights: expected ARCH=NAME with ARCH among --models")
    if set(weights) & set(official):
        p.error("--weights and --official each give the weights: name an architecture in one of them")
    torch.set_num_threads(args.threads)
    from lightsr.allocator import active_allocator, tune_glibc

    if os.environ.get("LIGHTSR_ALLOCATOR", "auto").lower() != "system" and active_allocator() == "system":
        tune_glibc()  # as the command line does without tcmalloc
    peak = args.peak or matmul_peak()
    alloc = active_allocator()
    print(f"# {args.threads} threads, allocator {alloc}, matmul peak {peak:.0f} GFLOP/s, {args.runs} alternating "
          "rounds after warm-up")
    print("| model | scale | input | variant | median (s) | min (s) | × vs train | × vs torch:fp32 | max abs diff "
          "| floor share |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for s in args.scales:
            w, h = map(int, args.input.split("x")) if args.input else (1280 // s, 720 // s)
            try:
                model, x, official_net = bench_model(name, s, h, w, official.get(name), weights.get(name))
            except LightSRError as e:  # e.g. --weights of one scale among several --scales
                print(f"# {name} ×{s}: skipped ({e})", file=sys.stderr)
                continue
            floor = 2 * count_macs(model, tuple(x.shape[-2:]))[0] / (peak * 1e9)
            fns = {} if official_net is None else {"official": official_net}
            for variant in args.variants:
                fn = runner(model, variant, args.no_freezing)
                if fn is not None:
                    fns[variant] = fn
            times: dict[str, list[float]] = {v: [] for v in fns}
            outs = {}
            with torch.inference_mode():
                ref = model(x)
                for v, fn in fns.items():  # warm-up (and the outputs compared)
                    for _ in range(args.warmup):
                        outs[v] = fn(x)
                for _ in range(args.runs):
                    for v, fn in fns.items():
                        t0 = time.perf_counter()
                        fn(x)
                        times[v].append(time.perf_counter() - t0)
            med = {v: statistics.median(t) for v, t in times.items()}
            for v in fns:
                diff = (outs[v].float() - ref).abs().max().item()
                vs_train = f"{med['train'] / med[v]:.2f}" if "train" in med else "—"
                vs_fp32 = f"{med['torch:fp32'] / med[v]:.2f}" if "torch:fp32" in med else "—"
                print(f"| {name} | ×{s} | {w}×{h} | {v} | {med[v]:.3f} | {min(times[v]):.3f} | {vs_train} | "
                      f"{vs_fp32} | {diff:.1e} | {floor / med[v]:.0%} |", flush=True)
    print(f"# peak RSS of this process: {rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
