"""GPU checks in one run (about 10 minutes on one modern GPU): every network at ×4, one table.

For each network (its bundled ×4 weights, else the published ones on disk, else random init), each precision
(fp32, bf16, fp16) and form (the inference form ``fuse()`` and the training form), ``lightsr.Upscaler`` upscales a
960×540 image to 3840×2160 with automatic tiles and reports: median latency and images/s (after a warm-up),
peak GPU memory, the tile size ``auto`` picked against the memory budget, and whether the output stayed finite
(fp16 overflow: ELAN's attention is the one to watch). Then training iterations/s of each network with AMP off,
bf16 and fp16 (batch 16, 48×48 LR patches, Adam, L1).

    python benchmarks/gpu_check.py                   # CUDA
    python benchmarks/gpu_check.py --quick --device cpu   # a smoke run of the same code paths on a CPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import lightsr  # noqa: E402
from lightsr.bundled import bundled_path  # noqa: E402
from lightsr.upscaler import NonFiniteOutputError, Upscaler  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _image(h: int, w: int) -> np.ndarray:
    """A photo-like test image (smooth gradients, edges, texture): what the networks see in use."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([np.sin(x / 23) * 60 + y / h * 120, np.cos(y / 17) * 50 + x / w * 100,
                    ((x // 32 + y // 32) % 2) * 80 + 40], -1) + rng.normal(0, 6, (h, w, 3))
    return np.clip(img + 60, 0, 255).astype(np.uint8)


def _network(name: str) -> lightsr.SRNet:
    path = bundled_path(name, 4)
    return lightsr.load_model(path) if path else lightsr.create_model(name, scale=4).eval()


def upscale_rows(device: torch.device, size: tuple[int, int], runs: int, precisions: list[str]) -> list[str]:
    img = _image(*size)
    rows = []
    for name in lightsr.list_models():
        net = _network(name)
        for precision in precisions:
            if precision not in net.info.precisions:
                continue
            for fused in (True, False):
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                up = Upscaler(net, device=str(device), precision=precision, fuse=fused)
                plan = up.plan(size[0], size[1], 3, 1)
                times, finite = [], "yes"
                try:
                    for i in range(runs + 1):
                        _sync(device)
                        t = time.perf_counter()
                        up.upscale(img)
                        _sync(device)
                        if i:  # the first run is the warm-up
                            times.append(time.perf_counter() - t)
                except NonFiniteOutputError:
                    finite = "**no (overflow)**"
                med = statistics.median(times) if times else float("nan")
                peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
                tiles = "whole image" if plan.n_tiles == 1 else f"{plan.tile} px ({plan.n_tiles} tiles)"
                rows.append(f"| {name} | {precision} | {'inference' if fused else 'training'} | {med:.3f} | "
                            f"{1 / med:.2f} | {peak:.0f} | {tiles}, budget {up.max_memory / 2**30:.1f} GB | "
                            f"{finite} |")
                print(rows[-1], flush=True)
    return rows


def train_rows(device: torch.device, steps: int, patch: int, amps: list[str]) -> list[str]:
    rows = []
    for name in lightsr.list_models():
        for amp in amps:
            torch.manual_seed(0)
            net = lightsr.create_model(name, scale=4).to(device).train()
            opt = torch.optim.Adam(net.parameters(), lr=2e-4)
            scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
            lr = torch.rand(16, 3, patch, patch, device=device)
            hr = torch.rand(16, 3, 4 * patch, 4 * patch, device=device)
            times = []
            for i in range(steps + 2):
                _sync(device)
                t = time.perf_counter()
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    loss = torch.nn.functional.l1_loss(net(lr), hr)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                _sync(device)
                if i >= 2:  # two warm-up steps
                    times.append(time.perf_counter() - t)
            rate = 1 / statistics.median(times)
            finite = "yes" if torch.isfinite(loss).item() else "**no**"
            rows.append(f"| {name} | {amp} | {rate:.2f} | {finite} |")
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes and one run: checks the code paths, not speed")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (use --device cpu --quick for a smoke run)", file=sys.stderr)
        return 2
    size, runs, steps, patch = ((48, 64), 1, 1, 16) if args.quick else ((540, 960), 5, 20, 48)
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    amps = ["none", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    t0 = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# {name}, torch {torch.__version__}, {size[1]}×{size[0]} → ×4\n")
    print("| network | precision | form | latency (s) | images/s | peak GPU MB | auto tile | finite |")
    print("|---|---|---|---|---|---|---|---|")
    upscale_rows(device, size, runs, precisions)
    print("\n| network | AMP | training it/s (batch 16) | finite loss |")
    print("|---|---|---|---|")
    train_rows(device, steps, patch, amps)
    print(f"\n# {time.perf_counter() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
