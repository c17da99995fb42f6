"""The ablation table of docs/training.md from the arms' own logs (and B100 scores of their final EMA weights).

    python scripts/ablation_table.py training/lksmn_x4_abl_291 training/lksmn_x4_abl_533 \
        training/lksmn_x4_abl_533_kd [--b100]

Per arm: its data and teacher (from the run's config), every setting in which the arms differ (patch, batch,
teacher weight, learning rate, iterations), the validation PSNR the trainer logged (EMA weights) on each set it
validated, at every validation, the training speed, and with ``--b100`` the B100 ×scale Y-PSNR of the last
checkpoint's EMA weights under the papers' protocol. ``--b100`` writes the scores to ``<run>/scores_b100.json``,
which later calls read instead of evaluating again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning_curve import read_curves

ROOT = Path(__file__).resolve().parents[1]


def _b100(run: Path, data: Path, threads: int) -> float:
    cache = run / "scores_b100.json"
    if cache.is_file():
        return float(json.loads(cache.read_text())["B100"])
    import torch

    from lightsr.checkpoints import load_model
    from lightsr.evaluate import evaluate
    from lightsr.train.state import EMA_FILE, latest_checkpoint

    torch.set_num_threads(threads)
    ckpt = latest_checkpoint(run / "checkpoints")
    if ckpt is None:
        raise SystemExit(f"{run}/checkpoints: no complete checkpoint")
    model = load_model(ckpt / EMA_FILE).fuse()
    psnr = evaluate(model, data, ["B100"], model.scale, progress=False)[0].psnr
    cache.write_text(json.dumps({"B100": round(psnr, 4), "checkpoint": ckpt.name}) + "\n")
    return psnr


# Settings an ablation varies, as (column, where in the run's config); a column is shown only where arms differ.
_SETTINGS = (
    ("HR patch", ("data", "patch_size")),
    ("batch", ("train", "batch_size")),
    ("teacher weight", ("distill", "weight")),
    ("lr", ("train", "optimizer", "lr")),
    ("iterations", ("train", "max_iters")),
)


def _setting(cfg: dict, path: tuple[str, ...]) -> str:
    node: object = cfg
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return "—" if node is None else f"{node:g}" if isinstance(node, float) else str(node)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--b100", action="store_true", help="also score the final EMA weights on B100")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "benchmark")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    rows = []
    for run in args.runs:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        teacher = (cfg.get("distill") or {}).get("teacher")
        curves = {s: {it: v for it, _, v in pts} for s, pts in read_curves(run).items()}
        settings = [_setting(cfg, path) for _, path in _SETTINGS]
        logs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
        speed = [r["it_per_s"] for r in logs if "it_per_s" in r]
        images = next((r["images"] for r in reversed(logs) if r.get("event") == "start"), None)
        b100 = _b100(run, args.data, args.threads) if args.b100 else None
        rows.append((run.name, images, Path(teacher).name if teacher else "—", settings, curves, b100,
                     sorted(speed)[len(speed) // 2] if speed else None))
    varied = [i for i in range(len(_SETTINGS)) if len({r[3][i] for r in rows}) > 1]
    sets = list(dict.fromkeys(s for r in rows for s in r[4]))
    its = sorted({it for r in rows for curve in r[4].values() for it in curve})
    head = ["arm", "images", "teacher"] + [_SETTINGS[i][0] for i in varied]
    head += [f"{s} @{it:,}" for s in sets for it in its]
    head += ["B100 (last checkpoint)"] if args.b100 else []
    head += ["it/s (median)"]
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    for name, images, teacher, settings, curves, b100, speed in rows:
        cells = [f"`{name}`", str(images or "?"), teacher] + [settings[i] for i in varied]
        cells += [f"{curves[s][it]:.3f}" if it in curves.get(s, {}) else "—" for s in sets for it in its]
        cells += [f"{b100:.3f}"] if b100 is not None else []
        cells += [f"{speed:.2f}" if speed else "—"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
