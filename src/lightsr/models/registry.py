"""Name → network registry: ``create_model("elan_light", scale=4)`` and ``list_models()``."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from lightsr.errors import UsageError
from lightsr.models.base import SRNet


@dataclass(frozen=True)
class ModelSpec:
    name: str
    module: str  # imported only when the model is built, so `import lightsr` stays light
    cls: str
    paper: str
    defaults: dict[str, Any] = field(default_factory=dict)
    scales: tuple[int, ...] = (2, 3, 4)


_SPECS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> None:
    _SPECS[spec.name] = spec


_ELAN_PAPER = "Zhang et al., Efficient Long-Range Attention Network for Image Super-resolution, ECCV 2022"
register(ModelSpec("elan_light", "lightsr.models.elan", "ELAN", _ELAN_PAPER,
                   dict(num_blocks=24, channels=60, n_share=1, exp_ratio=2, window_sizes=(4, 8, 16))))
register(ModelSpec("elan", "lightsr.models.elan", "ELAN", _ELAN_PAPER,
                   dict(num_blocks=36, channels=180, n_share=0, exp_ratio=2, window_sizes=(4, 8, 16))))
register(ModelSpec("hasn", "lightsr.models.hasn", "HASN",
                   "Cao et al., Hybrid Attention Separable Network for Efficient Image Super-resolution, "
                   "The Visual Computer 2024", dict(channels=52, num_blocks=6)))
register(ModelSpec("lksmn", "lightsr.models.lksmn", "LKSMN",
                   "Large Kernel Spatial Modulation Network for Efficient Image Super-resolution, "
                   "The Visual Computer 2024 (reconstructed from the paper's text)",
                   dict(channels=48, num_blocks=6)))


def list_models() -> list[str]:
    return sorted(_SPECS)


def model_spec(name: str) -> ModelSpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def create_model(name: str, scale: int = 4, **overrides: Any) -> SRNet:
    """Build a randomly initialised network by registry name; ``overrides`` replace the paper's defaults."""
    spec = model_spec(name)
    if not isinstance(scale, int) or scale < 1:
        raise UsageError(f"scale must be a positive integer, got {scale!r}")
    cls = getattr(importlib.import_module(spec.module), spec.cls)
    kwargs = {**spec.defaults, **overrides}
    model = cls(scale=scale, **kwargs)
    model.arch = name
    return model
