"""Models named on the command line: ``--model``/``--weights``/``--onnx``, and ``[LABEL=]NAME_OR_PATH`` (``eval
--model``/``--weights``, ``compare --models``), resolved by :mod:`lightsr.sources` with its messages."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def load_spec(spec: str, scale: int | None = None, param_key: str | None = None,
              option: str = "--models") -> tuple[str, SRNet]:
    """A model named on the command line, ``LABEL=`` optional: whatever :mod:`lightsr.sources` resolves (a file, a
    published name, a bundled file or network name). Returns ``(label, model)``; the label is the given
    ``LABEL``, the checkpoint's name (:func:`checkpoint_label`) or the name."""
    from lightsr.sources import load_network  # here, not above: ``lightsr compare --help`` stays fast (no torch)

    label, target = split_spec(spec)
    model = load_network(target, scale, param_key=param_key, option=option)
    return label or (checkpoint_label(target) if Path(target).is_file() else target), model


def load_named(model: str | None, weights: str | None, scale: int | None, onnx: str | None = None) -> Any:
    """What ``--model NAME``, ``--weights X`` (a network it must be when both are given) and ``--onnx FILE``
    name (:func:`lightsr.sources.resolve`): ``--onnx``, else ``--weights``, else the bundled weights of
    ``--model`` (default: :func:`~lightsr.bundled.default_upscale_model`) at ``scale``."""
    from lightsr.sources import resolve

    if onnx:
        return resolve(onnx, option="--onnx")
    if weights:
        return resolve(weights, scale, arch=model, option="--weights", onnx=False)
    return resolve(model, scale, option="--model", onnx=False)


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
