"""SHA-256 of every SR image that the bundled files and the shared published checkpoints make of Set5.

A refactoring that must not change what the networks compute is checked by running this before and after it
and comparing the two JSON files (training form and inference form, each model at its own scale):

    python scripts/output_hashes.py -o before.json
    ... change ...
    python scripts/output_hashes.py -o after.json && cmp before.json after.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import lightsr

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTSR_SHARED", ROOT.parent / "shared"))


def _checkpoints() -> list[Path]:
    bundled = sorted((ROOT / "src" / "lightsr" / "weights").glob("*.safetensors"))
    shared = [SHARED / "weights" / "HASN_x4_official.pth", SHARED / "weights" / "ELAN-light_x4_FriedRiceLab.pth"]
    return bundled + [p for p in shared if p.is_file()]


@torch.inference_mode()
def _hashes(model: torch.nn.Module, scale: int) -> dict[str, str]:
    out = {}
    folder = SHARED / "data" / "benchmark" / "Set5" / "LR_bicubic" / f"X{scale}"
    for path in sorted(folder.glob("*.png")):
        lr = np.asarray(Image.open(path).convert("RGB"))
        x = torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255
        y = model(x)[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        out[path.name] = hashlib.sha256(y.tobytes()).hexdigest()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", required=True, help="JSON file to write")
    args = p.parse_args()
    torch.set_num_threads(2)
    result = {}
    for ckpt in _checkpoints():
        net = lightsr.load_model(ckpt)
        scale = net.info.scale
        result[ckpt.name] = {"training": _hashes(net, scale), "inference": _hashes(net.fuse(), scale)}
        print(ckpt.name, "done", flush=True)
    Path(args.output).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
