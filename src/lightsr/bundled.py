"""Weights shipped inside the package (``lightsr/weights/<name>_x<scale>.safetensors``)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightsr.models.base import SRNet

# The network used when no --model/--weights is given: of the three, LKSMN gained the most Set5 PSNR per
# CPU-second in the 15-minute training curves (docs/training.md), and it is also the cheapest to run.
DEFAULT_MODEL = "lksmn"

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


def bundled_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a lightsr safetensors file (training provenance and scores of a bundled file)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def resolve_model(name: str | None, weights: str | None, scale: int | None) -> SRNet:
    """The network a command asks for: a checkpoint, or the bundled weights of ``name`` (default
    :data:`DEFAULT_MODEL`) at ``scale`` (default 4)."""
    from lightsr.checkpoints import CheckpointError, load_model

    if weights:
        return load_model(weights, name=name, scale=scale)
    scale = scale or 4
    target = name or DEFAULT_MODEL
    path = bundled_path(target, scale)
    if path is None:
        have = ", ".join(f"×{s}" for s in sorted(bundled_weights(target))) or "none"
        raise CheckpointError(f"--model {target}: no bundled weights for ×{scale} (bundled: {have}); "
                              "pass --weights PATH")
    return load_model(path)


def split_spec(spec: str) -> tuple[str, str]:
    """``"LABEL=TARGET"`` → ``(LABEL, TARGET)``; a plain target (also one whose name holds '=') → ``("", spec)``."""
    label, sep, target = spec.partition("=")
    if not sep or not label or Path(spec).is_file():
        return "", spec
    return label, target


def load_spec(spec: str, scale: int | None = None, param_key: str | None = None,
              allow_names: bool = True) -> tuple[str, SRNet]:
    """A model named on the command line: a bundled network's name or a checkpoint path, ``LABEL=`` optional.

    Returns ``(label, model)``; the label is the network name, the checkpoint's name, or the given ``LABEL``.
    """
    from lightsr.checkpoints import CheckpointError, load_model
    from lightsr.models.registry import list_models

    label, target = split_spec(spec)
    if allow_names and target in list_models():
        return label or target, resolve_model(target, None, scale)
    path = Path(target)
    if not path.is_file():
        names = f"neither a network name ({', '.join(list_models())}) nor a file" if allow_names else "no such file"
        raise CheckpointError(f"{target}: {names}")
    return label or checkpoint_label(path), load_model(path, scale=scale, param_key=param_key)


_GENERIC = {"ema", "model", "net", "params", "params_ema", "best", "last", "latest", "checkpoints", "weights"}


def checkpoint_label(path: str | Path) -> str:
    """A readable name for a checkpoint: its stem, or its run's folder for ``runs/NAME/best/ema.safetensors``."""
    path = Path(path)
    for part in (path.stem, *(p.name for p in path.parents)):
        if part and part.lower() not in _GENERIC and not re.fullmatch(r"iter_\d+", part):
            return part
    return path.stem
