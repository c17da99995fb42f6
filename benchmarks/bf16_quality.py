"""What bf16 costs in quality: Y-PSNR/SSIM of each weights file in fp32 and in bf16 (the precision ``upscale``'s
``auto`` picks on CPUs with AMX or AVX512-BF16), on the papers' protocol, per set.

Default: every bundled file and both shared checkpoints (official HASN ×4, FriedRiceLab's ELAN-light ×4) on
Set5, Set14 and B100, the torch backend. Prints one Markdown table with the change in dB.

    python benchmarks/bf16_quality.py
    python benchmarks/bf16_quality.py --weights hasn_x4 --sets Set5 --backend openvino
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))
SHARED = Path(os.environ.get("LIGHTSR_SHARED", REPO_ROOT.parent / "shared"))
# (label, weights file or bundled name, container entry)
SHARED_CHECKPOINTS = [("HASN ×4 official", SHARED / "weights" / "HASN_x4_official.pth", "params"),
                      ("ELAN-light ×4 FriedRiceLab", SHARED / "weights" / "ELAN-light_x4_FriedRiceLab.pth", None)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", nargs="+", help="bundled names (lksmn_x4) or files (default: all, see above)")
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"])
    p.add_argument("--backend", default="torch", help="torch or openvino (bf16 runs)")
    p.add_argument("--data", default=str(SHARED / "data" / "benchmark"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    import lightsr
    from lightsr.bundled import bundled_names, bundled_weights
    from lightsr.evaluate import evaluate
    from lightsr.runtimes import build

    torch.set_num_threads(args.threads)
    if args.weights:
        entries = [(w, w, None) for w in args.weights]
    else:
        entries = [(f"{n}_x{s}", f"{n}_x{s}", None) for n in bundled_names() for s in sorted(bundled_weights(n))]
        entries += [(label, str(path), key) for label, path, key in SHARED_CHECKPOINTS if path.is_file()]
    print(f"| weights | set | fp32 | bf16 ({args.backend}) | Δ dB | Δ SSIM |")
    print("|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    for label, target, key in entries:
        model = lightsr.load_model(target, param_key=key)
        res = {}
        for backend, precision in (("torch", "fp32"), (args.backend, "bf16")):
            rt = build(model, backend, precision, "cpu")
            res[precision] = {r.set: r for r in evaluate(rt, args.data, args.sets, model.scale, progress=False)}
        for s in args.sets:
            a, b = res["fp32"][s], res["bf16"][s]
            print(f"| {label} | {s} | {a.psnr:.4f} | {b.psnr:.4f} | {b.psnr - a.psnr:+.4f} | {b.ssim - a.ssim:+.5f} |",
                  flush=True)
        print(f"# {label} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
