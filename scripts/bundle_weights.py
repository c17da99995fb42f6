"""Turn a training run into a bundled weights file: ``src/lightsr/weights/<arch>_x<scale>.safetensors``.

Takes the EMA weights of the run's newest complete checkpoint (not the best-on-Set5 one: the test sets must not
pick the model they then score), evaluates them and the bicubic baseline on Set5/Set14/B100 under the papers'
protocol, and writes the file with its provenance and scores in the safetensors metadata (`lightsr models`
prints them). The scores also go to ``<run store>/scores.json`` for the model cards.

    python scripts/bundle_weights.py runs/lksmn_x4_bundled --hardware "2-core AMD EPYC CPU, 2 threads"
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
import yaml

from lightsr.checkpoints import load_model, save_model
from lightsr.evaluate import evaluate
from lightsr.train.state import EMA_FILE, MODEL_FILE, STATE_FILE, latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="run directory (runs/NAME or training/NAME)")
    p.add_argument("--hardware", required=True, help="what trained it, e.g. '2-core AMD EPYC CPU, 2 threads'")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "benchmark")
    p.add_argument("--out", type=Path, default=ROOT / "src" / "lightsr" / "weights")
    p.add_argument("--scores", type=Path, help="where to write scores.json (default: training/NAME/)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the evaluation")
    args = p.parse_args()

    ckpt = latest_checkpoint(args.run / "checkpoints")
    if ckpt is None:
        raise SystemExit(f"{args.run}/checkpoints: no complete checkpoint")
    weights = ckpt / EMA_FILE if (ckpt / EMA_FILE).is_file() else ckpt / MODEL_FILE
    state = torch.load(ckpt / STATE_FILE, weights_only=True, map_location="cpu")
    cfg = yaml.safe_load((args.run / "config.yaml").read_text())
    model = load_model(weights).eval()
    scale = model.scale
    sets = ["Set5", "Set14", "B100"]
    torch.set_num_threads(args.threads)
    scores = {r.set: [round(r.psnr, 4), round(r.ssim, 4)]
              for r in evaluate(model.fuse(), args.data, sets, scale, progress=False)}
    bicubic = {r.set: [round(r.psnr, 4), round(r.ssim, 4)]
               for r in evaluate(None, args.data, sets, scale, progress=False)}
    record = {
        "arch": model.arch, "scale": scale, "run": cfg["name"], "checkpoint": ckpt.name,
        "weights": "EMA" if weights.name == EMA_FILE else "model", "iterations": int(state["iteration"]),
        "train_hours": round(float(state["elapsed"]) / 3600, 3), "hardware": args.hardware,
        "train_data": ", ".join(Path(d).name for d in cfg["data"]["hr_dirs"]), "patch_size": cfg["data"]["patch_size"],
        "batch_size": cfg["train"]["batch_size"], "init_from": cfg.get("init_from") or "",
        "psnr_ssim": scores, "bicubic_psnr_ssim": bicubic,
        "torch": torch.__version__, "python": platform.python_version(),
    }
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in record.items() if k not in ("arch", "scale")}
    out = save_model(model, args.out / f"{model.arch}_x{scale}.safetensors", extra=meta)
    scores_path = args.scores or ROOT / "training" / cfg["name"] / "scores.json"
    scores_path.parent.mkdir(parents=True, exist_ok=True)
    scores_path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {scores_path}")
    for s in sets:
        print(f"{s} ×{scale}: {scores[s][0]:.2f} / {scores[s][1]:.4f}  (bicubic {bicubic[s][0]:.2f} / "
              f"{bicubic[s][1]:.4f}, {scores[s][0] - bicubic[s][0]:+.2f} dB)")


if __name__ == "__main__":
    main()
