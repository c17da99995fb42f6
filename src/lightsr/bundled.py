"""Weights shipped inside the package (``lightsr/weights/<name>_x<scale>.safetensors``): where they are.

Loading them by name is :mod:`lightsr.sources`; this module finds the files and reads their provenance.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

# The default network (training's `model.arch`, the bicubic track): of the three, LKSMN gained the most Set5 PSNR
# per CPU-second in the 15-minute training curves (docs/training.md), and it is also the cheapest to run.
DEFAULT_MODEL = "lksmn"
# What upscaling (CLI, API, web page) runs when no model is named: the first of these with a bundled file at the
# requested scale. Photos are mostly JPEGs, often noisy, where the real-photo model scores clearly higher, at a
# small cost on clean downscaled images (README, "Which model for what"); at ×2/×3 only the bicubic track exists.
UPSCALE_DEFAULTS = ("lksmn_real", DEFAULT_MODEL)

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


def bundled_names() -> list[str]:
    """Every name with bundled weights: the networks' own (``lksmn``) and variants trained for another input
    (``lksmn_real``, whose file's metadata names its network). A name is what ``--model`` and
    ``create_model(..., pretrained=True)`` accept."""
    folder = _weights_dir()
    if not folder.is_dir():
        return []
    return sorted({m["name"] for f in folder.iterdir() if (m := _NAME.fullmatch(f.name))})


def default_upscale_model(scale: int | None = None) -> str:
    """The bundled name upscaling uses at ``scale`` (default 4) when no model is named (:data:`UPSCALE_DEFAULTS`)."""
    return next((n for n in UPSCALE_DEFAULTS if (scale or 4) in bundled_weights(n)), DEFAULT_MODEL)


def bundled_path(name: str, scale: int) -> Path | None:
    """The bundled file of ``name`` at ``scale``, or None."""
    return bundled_weights(name).get(scale)


def bundled_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a lightsr safetensors file (training provenance and scores of a bundled file)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


# What a bundled file was trained for, when its metadata does not say (the bicubic track's files predate the key).
CLEAN_INPUT = "clean downscaled images"


def intended_input(path: str | Path) -> str:
    """What the bundled file at ``path`` was trained for (its ``intended_input`` metadata), in a few words."""
    return bundled_metadata(path).get("intended_input", CLEAN_INPUT)


# The provenance of each training run behind a bundled file (scripts/bundle_weights.py writes them; a file
# warm-started from an earlier run's weights carries that run's record, and its predecessors', under "previous").
RUN_KEYS = ("run", "checkpoint", "iterations", "train_hours", "train_cpu_hours", "hardware", "init_from",
            "train_data", "degradation", "teacher", "train_images", "derived_from")
_NUMBER_KEYS = {"iterations": int, "train_images": int, "train_hours": float, "train_cpu_hours": float}
_JSON_KEYS = ("degradation", "teacher", "derived_from", "previous")


def run_record(meta: Mapping[str, str]) -> dict[str, Any]:
    """The last run's provenance from a bundled file's metadata strings, decoded (``previous``: the nested record
    of the runs before it). A field that does not decode is left out rather than guessed."""
    rec: dict[str, Any] = {}
    for key in (*RUN_KEYS, "previous"):
        raw = meta.get(key)
        if raw is None:
            continue
        try:
            if key in _NUMBER_KEYS:
                rec[key] = _NUMBER_KEYS[key](float(raw))
            else:
                rec[key] = json.loads(raw) if key in _JSON_KEYS else raw
        except (TypeError, ValueError, OverflowError):
            continue
    return rec


def training_runs(meta: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every training run behind a bundled file, first to last, each without its ``previous`` link."""
    last = run_record(meta)
    prev = last.pop("previous", None)
    runs = [last]
    while isinstance(prev, dict) and len(runs) < 100:  # a chain, not a cycle: shipped records are finite
        runs.append({k: v for k, v in prev.items() if k != "previous"})
        prev = prev.get("previous")
    return runs[::-1]
