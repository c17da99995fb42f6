"""Upscaling images with a loaded network: the Python API and the ``lightsr upscale`` command."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from lightsr.bundled import DEFAULT_MODEL, bundled_path
from lightsr.imageio import ImageReadError, read_image, tensor_to_uint8, uint8_to_tensor, write_image
from lightsr.models.base import SRNet


def resolve_model(name: str | None, weights: str | None, scale: int | None) -> SRNet | None:
    """The network a command asks for: a checkpoint, or the bundled weights of ``name`` at ``scale``.

    Returns None only when nothing was asked for and nothing is bundled (the fresh-install case).
    """
    from lightsr.checkpoints import CheckpointError, load_model

    if weights:
        return load_model(weights, name=name, scale=scale)
    scale = scale or 4
    path = bundled_path(name or DEFAULT_MODEL, scale)
    if path is None:
        if name is None:
            return None
        raise CheckpointError(f"--model {name}: no bundled weights for ×{scale}; pass --weights PATH")
    return load_model(path)


@torch.inference_mode()
def upscale_array(model: SRNet, img) -> object:
    """Upscale one uint8 ``H×W×3`` array; returns uint8 ``sH×sW×3``."""
    x = uint8_to_tensor(img).to(next(model.parameters()).device)
    return tensor_to_uint8(model(x))


def add_arguments(u: argparse.ArgumentParser) -> None:
    u.add_argument("inputs", nargs="+", metavar="INPUT", help="image files")
    u.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    u.add_argument("--model", help="network name (picks the bundled weights for --scale)")
    u.add_argument("--weights", help="checkpoint file (.safetensors or .pth, any supported layout)")
    u.add_argument("--scale", type=int, help="upscaling factor (default: the checkpoint's, or 4)")
    u.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def run_cli(args: argparse.Namespace) -> int:
    model = resolve_model(args.model, args.weights, args.scale)
    if model is None:
        print(f"lightsr: no bundled weights yet for the default model ({DEFAULT_MODEL} ×{args.scale or 4}); "
              "pass --weights PATH to a checkpoint (see README)", file=sys.stderr)
        return 0
    inputs = [Path(p) for p in args.inputs]
    out = Path(args.output)
    to_folder = len(inputs) > 1 or out.is_dir() or args.output.endswith(("/", "\\"))
    failures, start = 0, time.perf_counter()
    for src in inputs:
        dst = out / f"{src.stem}_x{model.scale}{src.suffix}" if to_folder else out
        if dst.resolve() == src.resolve():
            print(f"lightsr: error: {dst}: refusing to overwrite an input", file=sys.stderr)
            failures += 1
            continue
        if dst.exists() and not args.overwrite:
            print(f"lightsr: error: {dst}: exists (use --overwrite)", file=sys.stderr)
            failures += 1
            continue
        try:
            img = read_image(src)
        except ImageReadError as e:
            print(f"lightsr: error: {e}", file=sys.stderr)
            failures += 1
            continue
        write_image(dst, upscale_array(model, img))
    n = len(inputs)
    print(f"lightsr: {n - failures}/{n} images upscaled ×{model.scale} in {time.perf_counter() - start:.1f} s"
          + (f", {failures} failed" if failures else ""), file=sys.stderr)
    return 1 if failures else 0
