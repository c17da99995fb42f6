"""Weights shipped inside the package (``lightsr/weights/<name>_x<scale>.safetensors``)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightsr.models.base import SRNet

# The network used when no --model/--weights is given.
DEFAULT_MODEL = "hasn"

_NAME = re.compile(r"(?P<name>[a-z_]+)_x(?P<scale>\d+)\.safetensors")


def _weights_dir() -> Path:
    return Path(str(resources.files("lightsr") / "weights"))


def bundled_weights(name: str | None = None) -> dict[int, Path]:
    """Bundled files of ``name`` (or of every network when None) by scale."""
    out: dict[int, Path] = {}
    folder = _weights_dir()
    if not folder.is_dir():
        return out
    for f in sorted(folder.iterdir()):
        m = _NAME.fullmatch(f.name)
        if m and (name is None or m["name"] == name):
            out[int(m["scale"])] = f
    return out


def bundled_path(name: str, scale: int) -> Path | None:
    return bundled_weights(name).get(scale)


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
