"""lightsr: lightweight single-image super-resolution networks, their checkpoints, evaluation, training and upscaling.

Importing the package is cheap: submodules (and torch itself) load on first use of a public name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lightsr._version import __version__

_EXPORTS = {
    "create_model": "lightsr.sources",
    "list_models": "lightsr.models.registry",
    "ModelInfo": "lightsr.models.base",
    "SRNet": "lightsr.models.base",
    "load_model": "lightsr.sources",
    "save_model": "lightsr.checkpoints",
    "CheckpointError": "lightsr.checkpoints",
    "upscale": "lightsr.upscaler",
    "Upscaler": "lightsr.upscaler",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from lightsr.checkpoints import CheckpointError, save_model
    from lightsr.models.base import ModelInfo, SRNet
    from lightsr.models.registry import list_models
    from lightsr.sources import create_model, load_model
    from lightsr.upscaler import Upscaler, upscale


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lightsr' has no attribute {name!r}")
