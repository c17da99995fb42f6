"""Peak memory of ``lightsr upscale`` on a 960×540 image at ×4 (a 3840×2160 result) with automatic tiling.

For each network a random-init checkpoint is saved to a temporary folder, then the real command line runs in
a child process under ``/usr/bin/time -v``; its "Maximum resident set size" is the whole process's peak RSS
(interpreter, torch, weights, image buffers, one tile's activations). The input is a Set14 image resized to
960×540 when ../shared is present (content does not change memory; it keeps the run realistic), else noise.

    python benchmarks/upscale_memory.py [--models hasn lksmn elan_light] [--limit-mb 1500] [--extra ARGS...]

Exits with status 1 when a peak exceeds ``--limit-mb``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

import lightsr  # noqa: E402


def _input_image(path: Path) -> None:
    shared = Path(os.environ.get("LIGHTSR_SHARED", REPO_ROOT.parent / "shared"))
    src = shared / "data/benchmark/Set14/HR/baboon.png"
    if src.is_file():
        Image.open(src).convert("RGB").resize((960, 540), Image.Resampling.BICUBIC).save(path)
    else:
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (540, 960, 3), dtype=np.uint8)).save(path)


def measure(model: str, workdir: Path, extra: list[str]) -> tuple[float, float, str]:
    """(peak RSS in MB, seconds, plan description) of one upscale run in a child process."""
    weights = workdir / f"{model}_x4.safetensors"
    lightsr.save_model(lightsr.create_model(model, scale=4), weights)
    src, dst = workdir / "in_960x540.png", workdir / f"out_{model}.png"
    if not src.exists():
        _input_image(src)
    up = lightsr.Upscaler(weights)
    plan = up.plan(540, 960)
    desc = (f"{'streamed' if plan.streamed else 'blended'}, {plan.n_tiles} tiles, core ≤ "
            f"{max(r.stop - r.start for r in plan.rows)}×"
            f"{max(c.stop - c.start for c in plan.cols)}, window ≤ {plan.max_window[0]}×{plan.max_window[1]}")
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "lightsr", "upscale", str(src), "-o", str(dst),
           "--weights", str(weights), "--overwrite", "-q", *extra]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    secs = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{model}: upscale failed (status {res.returncode}):\n{res.stderr[-2000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)
    if not m:
        raise SystemExit(f"{model}: no RSS figure from /usr/bin/time:\n{res.stderr[-2000:]}")
    with Image.open(dst) as im:
        assert im.size == (3840, 2160), im.size
    return int(m[1]) / 1024, secs, desc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["hasn", "lksmn", "elan_light"])
    ap.add_argument("--limit-mb", type=float, default=1500.0)
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `lightsr upscale` options")
    args = ap.parse_args()
    if not Path("/usr/bin/time").exists():
        raise SystemExit("needs GNU time at /usr/bin/time")
    worst = 0.0
    print("| model | peak RSS (MB) | time (s) | plan |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            mb, secs, desc = measure(model, Path(tmp), args.extra)
            worst = max(worst, mb)
            print(f"| {model} | {mb:.0f} | {secs:.0f} | {desc} |", flush=True)
    ok = worst <= args.limit_mb
    print(f"peak {worst:.0f} MB {'≤' if ok else '>'} limit {args.limit_mb:.0f} MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
