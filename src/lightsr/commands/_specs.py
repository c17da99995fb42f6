"""Models named on the command line: ``[LABEL=]NAME_OR_PATH`` (``eval --weights``, ``compare --models``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightsr.models.base import SRNet


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
    # Imported here, not above: ``lightsr compare --help`` stays fast (no torch).
    from lightsr.bundled import bundled_names
    from lightsr.checkpoints import CheckpointError, bundled_model
    from lightsr.hub import load_model, published
    from lightsr.models.registry import list_models

    label, target = split_spec(spec)
    path = Path(target)
    if path.is_file():
        return label or checkpoint_label(path), load_model(path, scale=scale, param_key=param_key)
    if allow_names and (target in list_models() or target in bundled_names()):
        return label or target, bundled_model(target, scale, option=option)
    if target in published() or not path.suffix:  # a published checkpoint or a bundled file by name
        try:
            return label or target, load_model(target, scale=scale, param_key=param_key)
        except CheckpointError as e:
            if target in published() or "no such checkpoint file" not in str(e):
                raise
    names = ", ".join(sorted(published()))
    what = (f"neither a file, a network name ({', '.join(list_models())}) nor published weights ({names})"
            if allow_names else f"no such file, nor published weights ({names})")
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
