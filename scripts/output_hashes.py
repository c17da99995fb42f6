"""SHA-256 of every SR image that the bundled files and the shared published checkpoints make of Set5.

A refactoring that must not change what the networks compute is checked by running this before and after it
and comparing the two JSON files:

    python scripts/output_hashes.py -o before.json
    ... change ...
    python scripts/output_hashes.py -o after.json && cmp before.json after.json

Per file, each model at its own scale:

* ``training`` / ``inference``: the training form and the inference form on every Set5 image (float32, CPU);
* ``upscaler``: :class:`lightsr.Upscaler` (uint8 in and out, fp32) on the ``--images`` smallest Set5 images,
  whole and in tiles, on every runtime installed — torch and the graph runtimes (onnxruntime, OpenVINO), whose
  exports, stage graphs and seamed exports are built afresh in a temporary cache, never read from an earlier
  run's;
* ``plans``: the tile plans the Upscaler picks for a few image sizes and memory budgets.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import lightsr

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTSR_SHARED", ROOT.parent / "shared"))
# The graph runtimes and the packages each needs; those not installed are left out (and named in the output).
GRAPH_RUNTIMES = {"onnxruntime": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino")}
# Tile cores (input pixels) of the tiled runs: several tiles on every Set5 image at every scale.
TILE = 24
# (height, width, channels, bytes per sample, memory budget) of the recorded tile plans.
PLANS = ((720, 1280, 3, 1, "256MB"), (1080, 1920, 4, 2, "1GB"), (300, 200, 3, 1, "40MB"), (64, 64, 1, 1, "8MB"))


def _checkpoints() -> list[Path]:
    bundled = sorted((ROOT / "src" / "lightsr" / "weights").glob("*.safetensors"))
    shared = [SHARED / "weights" / "HASN_x4_official.pth", SHARED / "weights" / "ELAN-light_x4_FriedRiceLab.pth"]
    return bundled + [p for p in shared if p.is_file()]


def _images(scale: int) -> list[Path]:
    return sorted((SHARED / "data" / "benchmark" / "Set5" / "LR_bicubic" / f"X{scale}").glob("*.png"))


def _smallest(scale: int, n: int) -> list[Path]:
    """The ``n`` Set5 images of fewest pixels (the graph runtimes' exports and runs are slow on CPU)."""
    return sorted(_images(scale), key=lambda p: (np.prod(Image.open(p).size), p.name))[:n]


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@torch.inference_mode()
def _hashes(model: torch.nn.Module, scale: int) -> dict[str, str]:
    out = {}
    for path in _images(scale):
        lr = np.asarray(Image.open(path).convert("RGB"))
        x = torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255
        y = model(x)[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        out[path.name] = _sha(y)
    return out


def _runtimes() -> list[str]:
    return ["torch"] + [r for r, mods in GRAPH_RUNTIMES.items()
                        if all(importlib.util.find_spec(m) is not None for m in mods)]


def _upscaler_hashes(net: lightsr.SRNet, scale: int, images: int) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for runtime in _runtimes():
        res = {}
        for tile in (0, TILE):
            up = lightsr.Upscaler(net, tile=tile, device="cpu", precision="fp32", backend=runtime)
            for path in _smallest(scale, images):
                lr = np.asarray(Image.open(path).convert("RGB"))
                res[f"{path.name} tile {tile}"] = _sha(up.upscale(lr))
        out[runtime] = res
    # The other inputs the Upscaler converts (torch only): alpha by bicubic and by the network, gray, 16 bits,
    # PIL images, float arrays, an outscale resize.
    lr = np.asarray(Image.open(_smallest(scale, 1)[0]).convert("RGB"))
    h, w = lr.shape[:2]
    alpha = (np.arange(h * w).reshape(h, w, 1) * 7 % 256).astype(np.uint8)
    rgba = np.concatenate([lr, alpha], 2)
    cases = {
        "rgba bicubic": (lightsr.Upscaler(net, tile=TILE, device="cpu", precision="fp32"), rgba),
        "rgba model": (lightsr.Upscaler(net, tile=TILE, device="cpu", precision="fp32", alpha="model"), rgba),
        "gray": (lightsr.Upscaler(net, device="cpu", precision="fp32"), lr[:, :, 1]),
        "16-bit": (lightsr.Upscaler(net, device="cpu", precision="fp32"), lr.astype(np.uint16) * 257 + 3),
        "float": (lightsr.Upscaler(net, device="cpu", precision="fp32"), lr.astype(np.float32) / 255),
        "PIL LA": (lightsr.Upscaler(net, device="cpu", precision="fp32"), Image.fromarray(rgba).convert("LA")),
        "outscale 2.5": (lightsr.Upscaler(net, device="cpu", precision="fp32", outscale=2.5), lr),
    }
    out["torch inputs"] = {k: _sha(np.asarray(up.upscale(x))) for k, (up, x) in cases.items()}
    return out


def _plans(net: lightsr.SRNet) -> dict[str, str]:
    out = {}
    for h, w, c, b, memory in PLANS:
        up = lightsr.Upscaler(net, device="cpu", precision="fp32", max_memory=memory)
        out[f"{h}x{w}x{c} {8 * b}-bit {memory}"] = repr(up.plan(h, w, c, b))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", required=True, help="JSON file to write")
    p.add_argument("--images", type=int, default=1,
                   help="Set5 images per file through the Upscaler on each runtime (default 1: the graph runtimes' "
                        "exports take most of the time)")
    args = p.parse_args()
    torch.set_num_threads(2)
    result: dict = {"runtimes": _runtimes()}
    with tempfile.TemporaryDirectory() as home:
        os.environ["LIGHTSR_HOME"] = home  # exports made by this run's code, not read from an earlier one's cache
        for ckpt in _checkpoints():
            net = lightsr.load_model(ckpt)
            scale = net.info.scale
            result[ckpt.name] = {"training": _hashes(net, scale), "inference": _hashes(net.fuse(), scale),
                                 "upscaler": _upscaler_hashes(net, scale, args.images), "plans": _plans(net)}
            print(ckpt.name, "done", flush=True)
    Path(args.output).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
