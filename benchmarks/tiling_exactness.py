"""Tiled against whole-image output, per checkpoint and tile size; streamed (exact) against blended tiles.

A 500×500 crop of Set14's ``barbara`` (cloth folds, stripes, a face) is upscaled by ``lightsr.Upscaler`` whole
(``tile=0``) and with cores of 32, 64, 128 pixels and the automatic size under ``--max-memory`` (small enough for
several tiles), as the command line would run them: streamed (exact) tiles for networks with global operators,
blended tiles for the others. Each row gives the plan, the PSNR of the tiled uint8 output against the whole-image
uint8 output (inf when identical), the largest difference in levels, and the time of that one run (2 threads).
``--blended`` also runs blended tiles of the same sizes through the same inference form, for comparison.
``--backend openvino|onnxruntime`` runs everything (whole image included) on that backend: streamed tiles as one
graph per stage, ELAN's wrapped tiles through the export that takes the seams; the first tiled run of each
network includes exporting and compiling those graphs (``--time`` reuses warm runtimes).

    python benchmarks/tiling_exactness.py                      # bundled LKSMN and HASN ×4, official HASN ×4
    python benchmarks/tiling_exactness.py --models elan_light --tiles 64 auto
    python benchmarks/tiling_exactness.py --models lksmn --tiles 64 128 --blended
    python benchmarks/tiling_exactness.py --models lksmn --time 64 --rounds 3   # A/B timing only
    python benchmarks/tiling_exactness.py --backend openvino --models lksmn hasn elan_light --tiles 64 128

Exits with status 1 when a streamed or wrapped run is below 60 dB or more than 2 levels off.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

import lightsr  # noqa: E402
from lightsr.runtimes import RUNTIMES  # noqa: E402
from lightsr.tiling import arch_tiling, plan_tiles  # noqa: E402

SHARED = Path(os.environ.get("LIGHTSR_SHARED", REPO_ROOT.parent / "shared"))
OFFICIAL = {"hasn_official": "weights/HASN_x4_official.pth",
            "elan_light_official": "weights/ELAN-light_x4_FriedRiceLab.pth"}


def _image(size: int) -> np.ndarray:
    img = np.asarray(Image.open(SHARED / "data/benchmark/Set14/HR/barbara.png").convert("RGB"))
    top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return np.ascontiguousarray(img[top:top + size, left:left + size])


def _model(name: str) -> lightsr.SRNet:
    if name in OFFICIAL:
        return lightsr.load_model(SHARED / OFFICIAL[name])
    return lightsr.load_model(name, scale=4)


def _compare(got: np.ndarray, ref: np.ndarray) -> tuple[float, int]:
    d = got.astype(np.float64) - ref.astype(np.float64)
    mse = float((d**2).mean())
    return (10 * math.log10(255**2 / mse) if mse else math.inf), int(np.abs(d).max())


def _describe(plan) -> str:
    kind = "streamed" if plan.streamed else "blended, wrapped" if plan.wrap else "blended"
    return f"{kind}, {plan.n_tiles} tiles ≤ {max(r.stop - r.start for r in plan.rows)} px"


def _time_ab(args: argparse.Namespace, img: np.ndarray) -> None:
    """Whole image, streamed and blended tiles of one size, timed alternately; minimum and median of the rounds."""
    h, w = img.shape[:2]
    print(f"# Set14 barbara, {w}×{h} centre crop, ×4, {args.backend} {args.precision}, {args.threads} threads, "
          f"tile {args.time}, {args.rounds} alternating rounds")
    print("| weights | run | min (s) | median (s) |\n|---|---|---|---|")
    for name in args.models:
        model = _model(name)
        whole = lightsr.Upscaler(model, tile=0, precision=args.precision, backend=args.backend)
        tiled = lightsr.Upscaler(model, tile=args.time, precision=args.precision, backend=args.backend)
        spec = arch_tiling(tiled.arch)
        x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
        runs = {"whole image": (whole, whole.plan(h, w)), "streamed": (tiled, tiled.plan(h, w)),
                "blended": (tiled, plan_tiles(h, w, args.time, spec.overlap, spec.align))}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.rounds):
            for k, (up, plan) in runs.items():
                t0 = time.perf_counter()
                up.upscale_tensor(x, plan=plan)
                times[k].append(time.perf_counter() - t0)
        for k, ts in times.items():
            print(f"| {name} | {k} | {min(ts):.1f} | {float(np.median(ts)):.1f} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["lksmn", "hasn", "hasn_official"],
                    help="bundled names (×4) or hasn_official / elan_light_official (from ../shared)")
    ap.add_argument("--tiles", nargs="+", default=["32", "64", "128", "auto"])
    ap.add_argument("--size", type=int, default=500)
    ap.add_argument("--max-memory", default="400MB", help="budget of the automatic tile size")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--blended", action="store_true", help="also run blended tiles of the same sizes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", default="torch", choices=list(RUNTIMES))
    ap.add_argument("--time", type=int, metavar="TILE",
                    help="only time whole, streamed and blended runs at this tile, alternately (--rounds each)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    img = _image(args.size)
    h, w = img.shape[:2]
    if args.time:
        _time_ab(args, img)
        return 0
    print(f"# Set14 barbara, {w}×{h} centre crop, ×4, {args.backend} {args.precision}, {args.threads} threads")
    print("| weights | tile | plan | PSNR vs whole (dB) | max diff (levels) | time (s) |\n|---|---|---|---|---|---|")
    ok = True
    for name in args.models:
        model = _model(name)
        t0 = time.perf_counter()
        whole = lightsr.Upscaler(model, tile=0, precision=args.precision, backend=args.backend)(img)
        print(f"| {name} | whole | 1 tile | – | – | {time.perf_counter() - t0:.1f} |", flush=True)
        for tile in args.tiles:
            kw = {"precision": args.precision, "backend": args.backend}
            up = (lightsr.Upscaler(model, max_memory=args.max_memory, **kw) if tile == "auto"
                  else lightsr.Upscaler(model, tile=int(tile), **kw))
            plan = up.plan(h, w)
            runs = [(plan, lambda up=up: up(img))]
            if args.blended and plan.streamed:
                spec = arch_tiling(up.arch)
                blended = plan_tiles(h, w, plan.tile, spec.overlap, spec.align)

                def run_blended(up=up, blended=blended) -> np.ndarray:
                    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
                    y = up.upscale_tensor(x, plan=blended)
                    return (y.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()

                runs.append((blended, run_blended))
            for p, run in runs:
                t0 = time.perf_counter()
                got = run()
                secs = time.perf_counter() - t0
                psnr, levels = _compare(got, whole)
                if (p.streamed or p.wrap) and (psnr < 60 or levels > 2):
                    ok = False
                print(f"| {name} | {tile} | {_describe(p)} | {psnr:.1f} | {levels} | {secs:.1f} |", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
