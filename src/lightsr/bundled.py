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


def bundled_model(name: str, scale: int | None = None, option: str = "--model") -> SRNet:
    """The bundled weights of network ``name`` at ``scale`` (default 4); one-line errors name ``option`` and
    what is missing."""
    from lightsr.checkpoints import CheckpointError, load_model
    from lightsr.models.registry import list_models

    if name not in list_models():
        raise CheckpointError(f"{option} {name}: unknown network; choose from {', '.join(list_models())}")
    scale = 4 if scale is None else scale
    path = bundled_path(name, scale)
    if path is None:
        have = ", ".join(f"×{s}" for s in sorted(bundled_weights(name))) or "none"
        raise CheckpointError(f"{option} {name}: no bundled weights for ×{scale} (bundled: {have}); "
                              "pass --weights PATH")
    return load_model(path)


def resolve_model(name: str | None, weights: str | None, scale: int | None) -> SRNet:
    """The network a command asks for: a checkpoint, or the bundled weights of ``name`` (default
    :data:`DEFAULT_MODEL`) at ``scale`` (default 4)."""
    from lightsr.checkpoints import load_model

    if weights:
        return load_model(weights, name=name, scale=scale)
    return bundled_model(name or DEFAULT_MODEL, scale)


def split_spec(spec: str) -> tuple[str, str]:
    """``"LABEL=TARGET"`` → ``(LABEL, TARGET)``; anything else (a name, a path, even one holding '=') →
    ``("", spec)``. A label is a plain word: no path separator, not starting with a dot."""
    label, sep, target = spec.partition("=")
    if (not sep or not label or not target or Path(spec).exists() or "/" in label or "\\" in label
            or label.startswith(".")):
        return "", spec
    return label, target


def load_spec(spec: str, scale: int | None = None, param_key: str | None = None, allow_names: bool = True,
              option: str = "--models") -> tuple[str, SRNet]:
    """A model named on the command line: a bundled network's name or a checkpoint path, ``LABEL=`` optional.

    Returns ``(label, model)``; the label is the network name, the checkpoint's name, or the given ``LABEL``.
    A file wins over a network name of the same spelling.
    """
    from lightsr.checkpoints import CheckpointError, load_model
    from lightsr.models.registry import list_models

    label, target = split_spec(spec)
    path = Path(target)
    if path.is_file():
        return label or checkpoint_label(path), load_model(path, scale=scale, param_key=param_key)
    if allow_names and target in list_models():
        return label or target, bundled_model(target, scale, option=option)
    what = f"neither a file nor a network name ({', '.join(list_models())})" if allow_names else "no such file"
    raise CheckpointError(f"{option} {spec}: {what}")


# Folders and file names of a training run's layout (runs/NAME/best/ema.safetensors, .../iter_N/model...).
_RUN_LAYOUT = {"best", "checkpoints", "latest", "last"}
_GENERIC_STEMS = {"ema", "model", "net", "params", "params_ema", "best", "last", "latest", "weights"}


def checkpoint_label(path: str | Path) -> str:
    """A readable name for a checkpoint: its stem, or its run's folder for ``runs/NAME/best/ema.safetensors``."""
    path = Path(path)
    if path.stem.lower() not in _GENERIC_STEMS:
        return path.stem
    parents = [p.name for p in path.parents if p.name]
    i = 0
    while i < len(parents) and (parents[i].lower() in _RUN_LAYOUT or re.fullmatch(r"iter_\d+", parents[i])):
        i += 1
    return parents[i] if 0 < i < len(parents) else path.stem


def unique_labels(labels: list[str]) -> list[str]:
    """``labels`` with repeats made distinct (``a``, ``a-2``, …), never colliding with a given label."""
    taken = set(labels)
    out: list[str] = []
    for label in labels:
        if label not in out:
            out.append(label)
            continue
        k = 2
        while f"{label}-{k}" in taken or f"{label}-{k}" in out:
            k += 1
        out.append(f"{label}-{k}")
    return out
