"""Benchmark ``lightsr.resize.imresize`` against a straightforward float64 reference.

Generates every LR image of Set5, Set14 and B100 at x2, x3, x4 (``imresize(modcrop(HR, k), 1/k)``) with
both implementations, times them (images are loaded before timing) and reports how many pixels match the
MATLAB-made ``LR_bicubic`` files.

    python benchmarks/bench_imresize.py [--shared PATH] [--sets Set5 Set14 B100] [--repeat 1]

The reference computes the weights of each output row on the fly and applies them with a per-output-row
numpy loop, keeping MATLAB's semantics (dimension order, uint8 rounding after each pass).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from lightsr.resize import contributions, imresize, modcrop  # noqa: E402

SCALES = (2, 3, 4)
Data = dict[str, list[tuple[np.ndarray, int, np.ndarray]]]


def _cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return np.where(
        a <= 1,
        1.5 * a**3 - 2.5 * a**2 + 1,
        np.where(a <= 2, -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2, 0.0),
    )


def _ref_axis(img: np.ndarray, axis: int, out_len: int, scale: float) -> np.ndarray:
    """Resize float64 ``img`` along ``axis``, one output row at a time."""
    src = np.moveaxis(img, axis, 0)
    n = src.shape[0]
    stretch = min(scale, 1.0)
    width = 4.0 / stretch
    taps = np.arange(math.ceil(width) + 2)
    out = np.empty((out_len, *src.shape[1:]), dtype=np.float64)
    for i in range(out_len):
        u = (i + 1) / scale + 0.5 * (1 - 1 / scale)
        j = math.floor(u - width / 2) + taps  # 1-based
        w = stretch * _cubic(stretch * (u - j))
        w /= w.sum()
        m = (j - 1) % (2 * n)
        idx = np.where(m < n, m, 2 * n - 1 - m)
        out[i] = np.tensordot(w, src[idx], axes=1)
    return np.moveaxis(out, 0, axis)


def reference_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    out_hw = (math.ceil(img.shape[0] * scale), math.ceil(img.shape[1] * scale))
    cur = img
    for axis in (0, 1):  # equal scales: height first
        res = _ref_axis(cur.astype(np.float64), axis, out_hw[axis], scale)
        cur = np.clip(np.floor(res + 0.5), 0, 255).astype(np.uint8)
    return cur


def _float_once(img: np.ndarray, scale: float) -> np.ndarray:
    out = imresize(img.astype(np.float64), scale)
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def load(shared: Path, sets: list[str]) -> Data:
    data: Data = {}
    for name in sets:
        root = shared / "data" / "benchmark" / name
        items = []
        for hr_path in sorted((root / "HR").glob("*.png")):
            hr = np.array(Image.open(hr_path))
            for k in SCALES:
                lr = np.array(Image.open(root / "LR_bicubic" / f"X{k}" / f"{hr_path.stem}x{k}.png"))
                items.append((modcrop(hr, k), k, lr))
        if not items:
            raise SystemExit(f"no images under {root}")
        data[name] = items
    return data


def run(fn: Callable[[np.ndarray, float], np.ndarray], data: Data, repeat: int) -> tuple[dict[str, float], float]:
    """Best-of-``repeat`` seconds per set, and the fraction of matching LR values."""
    times: dict[str, float] = {}
    good = total = 0
    for name, items in data.items():
        best = math.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            outs = [fn(hr, 1 / k) for hr, k, _ in items]
            best = min(best, time.perf_counter() - t0)
        times[name] = best
        for out, (_, _, lr) in zip(outs, items, strict=True):
            total += lr.size
            if out.shape == lr.shape:
                good += int(np.count_nonzero(out == lr))
    return times, good / total


def main() -> None:
    default_shared = os.environ.get("LIGHTSR_SHARED") or str(REPO_ROOT.parent / "shared")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=default_shared, help="shared data folder (default: %(default)s)")
    parser.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"])
    parser.add_argument("--repeat", type=int, default=1, help="timing repeats (best is reported)")
    args = parser.parse_args()

    data = load(Path(args.shared), args.sets)
    n_images = {name: len(items) // len(SCALES) for name, items in data.items()}
    print(f"images: {n_images}, scales x{SCALES}, {sum(len(v) for v in data.values())} resizes")

    contributions.cache_clear()
    results = {
        "imresize": run(imresize, data, args.repeat),
        "reference": run(reference_imresize, data, args.repeat),
        # BasicSR-style: both passes in float, a single rounding at the end (shows why per-pass matters)
        "float-once": run(_float_once, data, 1),
    }
    for label, (times, match) in results.items():
        total = sum(times.values())
        line = f"{label:>10}: total {total:7.3f} s, match {100 * match:.4f}%"
        if "B100" in times:
            line += f", B100 (x2+x3+x4) per 100 images {100 * times['B100'] / n_images['B100']:.3f} s"
        print(line + "  | " + ", ".join(f"{k} {v:.3f} s" for k, v in times.items()))
    ratio = sum(results["reference"][0].values()) / sum(results["imresize"][0].values())
    print(f"speed-up of imresize over the reference: {ratio:.1f}x")


if __name__ == "__main__":
    main()
