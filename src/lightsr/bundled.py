"""Weights shipped inside the package (``lightsr/weights/<name>_x<scale>.safetensors``): where they are.

Loading them by name is :mod:`lightsr.sources`; this module finds the files and reads their provenance.
"""

from __future__ import annotations

import json
import math
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
_JSON_KEYS = {"degradation": dict, "teacher": dict, "derived_from": list, "previous": dict}


def _decode(key: str, value: Any) -> Any:
    """One provenance field, from its metadata string or from a nested record's JSON value; ValueError when it
    is not what the key holds."""
    if key in _NUMBER_KEYS:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(key)
        number = float(value)
        if not math.isfinite(number) or number < 0 or (_NUMBER_KEYS[key] is int and not number.is_integer()):
            raise ValueError(key)
        return _NUMBER_KEYS[key](number)
    if key in _JSON_KEYS:
        decoded = json.loads(value) if isinstance(value, str) else value
        if not isinstance(decoded, _JSON_KEYS[key]):
            raise ValueError(key)
        return decoded
    if not isinstance(value, str):
        raise ValueError(key)
    return value


def run_record(meta: Mapping[str, Any]) -> dict[str, Any]:
    """One run's provenance, decoded from a bundled file's metadata strings or from a nested ``previous`` record
    (``previous`` itself stays the raw nested record of the runs before it). A field that is not what its key
    holds is left out rather than guessed."""
    rec: dict[str, Any] = {}
    for key in (*RUN_KEYS, "previous"):
        if key not in meta:
            continue
        try:
            rec[key] = _decode(key, meta[key])
        except (TypeError, ValueError, OverflowError):
            continue
    return rec


def training_runs(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every training run a bundled file's provenance records, first to last, each without its ``previous``
    link; no runs for a file without a record (no ``run``)."""
    runs: list[dict[str, Any]] = []
    record: Mapping[str, Any] | None = meta
    while isinstance(record, Mapping) and "run" in record and len(runs) < 100:  # shipped chains are short
        rec = run_record(record)
        record = rec.pop("previous", None)
        runs.append(rec)
    return runs[::-1]
