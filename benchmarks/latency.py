"""Inference latency of every form of every network (the README's latency table).

For each network and scale it times, on one image giving a 1280×720 output (input 1280/s × 720/s):
the training form, the fused form (``model.fuse()``), the fused form under ``torch.compile`` (with Inductor's
weight freezing unless ``--no-freezing``: constant weights folded and pre-packed), and the ONNX
export under onnxruntime — warm-up, then the median of ``--runs`` runs, all in this one process with the same
thread count and allocator. It prints the ratio to the training form, the max abs difference of each output
against the training form, the share of the compute floor reached (MACs from ``lightsr profile`` at
``--peak`` GFLOP/s, measured on a large matmul when not given), and the peak RSS increase of each variant.

Run it once per allocator to compare them, e.g.::

    LIGHTSR_ALLOCATOR=system python benchmarks/latency.py --models hasn --scales 4
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python benchmarks/latency.py ...

(``python -m lightsr`` re-executes itself under tcmalloc; this script does not, so that you choose.)
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

import torch

import lightsr
from lightsr.models.base import calibrate_batchnorm
from lightsr.profile import count_macs


def bench_model(name: str, scale: int, h: int, w: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """A random-init network (seed 0) in eval mode and an image-like ``h×w`` input it is calibrated on.

    Image-like (coarse noise, bicubic-upsampled): on i.i.d. noise ELAN's attention is chaotic and float32
    evaluations of the same function differ wildly, which would hide real errors; and random-init ELAN's default
    BatchNorm statistics make its attention ill-conditioned (see ``calibrate_batchnorm``).
    """
    torch.manual_seed(0)
    model = lightsr.create_model(name, scale=scale).eval()
    coarse = torch.rand(1, 3, max(h // 4, 2), max(w // 4, 2))
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic").clamp(0, 1)
    calibrate_batchnorm(model, x[..., :64, :64])
    return model, x


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


def onnx_runner(model, x):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from lightsr.export import export_onnx

    path = os.path.join(tempfile.mkdtemp(), "m.onnx")
    export_onnx(model, path, check=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda t: torch.from_numpy(sess.run(None, {name: t.numpy()})[0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["elan_light", "hasn", "lksmn", "elan"])
    p.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    p.add_argument("--variants", nargs="+", default=["train", "fused", "compile", "onnx"])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-freezing", action="store_true", help="compile without Inductor's weight freezing")
    p.add_argument("--peak", type=float, help="GFLOP/s of the compute floor (default: measured)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    peak = args.peak or matmul_peak()
    alloc = "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "glibc"
    print(f"# {args.threads} threads, allocator {alloc}, matmul peak {peak:.0f} GFLOP/s, median of {args.runs}")
    print("| model | scale | variant | latency (s) | × vs train | max abs diff | floor share | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for s in args.scales:
            model, x = bench_model(name, s, 720 // s, 1280 // s)
            floor = 2 * count_macs(model, tuple(x.shape[-2:]))[0] / (peak * 1e9)
            ref, t_train = None, None
            for variant in args.variants:
                if variant == "train":
                    fn = model
                elif variant == "fused":
                    fn = model.fuse()
                elif variant == "compile":
                    # Freezing treats the weights as constants (folded, pre-packed for oneDNN): measured 8–20%
                    # faster than plain compile for the fused LKSMN and ELAN-light on one thread.
                    import torch._inductor.config as inductor_config

                    inductor_config.freezing = not args.no_freezing
                    fn = torch.compile(model.fuse())
                elif variant == "onnx":
                    fn = onnx_runner(model.fuse(), x)
                    if fn is None:
                        continue
                else:
                    raise SystemExit(f"unknown variant {variant}")
                base = rss_mb()
                t, y = timed(fn, x, args.runs, args.warmup)
                if ref is None:
                    ref, t_train = y, t if variant == "train" else None
                diff = (y - ref).abs().max().item()
                ratio = f"{t_train / t:.2f}" if t_train else "—"
                print(f"| {name} | ×{s} | {variant} | {t:.3f} | {ratio} | {diff:.1e} | {floor / t:.0%} | "
                      f"{rss_mb() - base:+.0f} (total {rss_mb():.0f}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
