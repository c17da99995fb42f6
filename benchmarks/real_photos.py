"""Clean and degraded benchmark inputs: bicubic, the bicubic-trained networks and the real-photo one, side by side.

For every condition (clean, and each ``--degrade`` spec) and set, the Y-PSNR/SSIM of bicubic upscaling and of
each model on the LR images degraded as ``lightsr eval --degrade`` degrades them (seeded per image name: the same
inputs on every machine). Prints one Markdown table, the one the real-photo model's card and docs/models.md show.

    python benchmarks/real_photos.py                                   # bundled lksmn ×4 vs bicubic
    python benchmarks/real_photos.py --weights real=runs/lksmn_real_x4/best/ema.safetensors --sets Set5 Set14
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

CONDITIONS = ("clean", "jpeg:75", "jpeg:40", "noise:10,jpeg:60")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="bundled weights by name (default: lksmn_x4)")
    p.add_argument("--weights", action="append", default=[], metavar="LABEL=PATH", help="a checkpoint file")
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"])
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS))
    p.add_argument("--data", default=str(Path(os.environ.get("LIGHTSR_SHARED", REPO_ROOT.parent / "shared"))
                                          / "data" / "benchmark"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    import lightsr
    from lightsr.evaluate import evaluate

    torch.set_num_threads(args.threads)
    models: list[tuple[str, torch.nn.Module | None]] = [("bicubic", None)]
    for name in args.model or ([] if args.weights else ["lksmn_x4"]):
        models.append((name, lightsr.load_model(name).fuse()))
    for spec in args.weights:
        label, _, path = spec.partition("=")
        models.append((label, lightsr.load_model(path).fuse()))
    scale = {m.scale for _, m in models if m is not None} or {4}
    if len(scale) != 1:
        sys.exit("models of one scale only")
    s = scale.pop()
    rows = []
    t0 = time.perf_counter()
    for cond in args.conditions:
        for label, model in models:
            res = evaluate(model, args.data, args.sets, s, progress=False,
                           degrade=None if cond == "clean" else cond)
            rows.append((cond, label, {r.set: (r.psnr, r.ssim) for r in res}))
            print(f"# {cond} {label} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    print(f"| ×{s}, Y PSNR / SSIM | LR | " + " | ".join(args.sets) + " |")
    print("|---|---|" + "---|" * len(args.sets))
    for cond, label, sc in rows:
        print(f"| {label} | {cond} | " + " | ".join(f"{sc[k][0]:.2f} / {sc[k][1]:.4f}" for k in args.sets) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
