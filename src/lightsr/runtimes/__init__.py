"""Inference runtimes: PyTorch, and onnxruntime or OpenVINO running the network's ONNX export.

One module per runtime (:mod:`~lightsr.runtimes.torch`, :mod:`~lightsr.runtimes.onnxruntime`,
:mod:`~lightsr.runtimes.openvino`), the graph runtimes' shared machinery (:mod:`~lightsr.runtimes.graphs`: the
export cache, the per-tile stage graphs, the seamed export; :mod:`~lightsr.runtimes.files`: the checks of an
exported file a user names), and a registry, :data:`RUNTIMES` (name → a
:class:`RuntimeSpec`: the extra to install, the precisions and devices it offers, how to build it). :func:`build`
makes a :class:`Runtime` of a network or an exported file; :class:`~lightsr.upscaler.Upscaler` (``backend=``),
``lightsr eval`` and ``lightsr profile`` run it, and the commands' ``--backend`` choices are the registry's names.

Importing this package is cheap (the registry is data): :func:`build`, :class:`Runtime` and
:func:`default_runtime` load torch on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lightsr.runtimes.registry import (
    DEFAULT_RUNTIME,
    RUNTIMES,
    RuntimeSpec,
    check_runtime,
    choices_help,
    file_runtimes,
    list_runtimes,
    named_unless_default,
    option_runtimes,
    register,
    registered,
    runtime_for,
    runtime_spec,
    unregister,
)

_LAZY = {"build": "lightsr.runtimes.factory", "default_runtime": "lightsr.runtimes.factory",
         "Runtime": "lightsr.runtimes.base"}

__all__ = ["DEFAULT_RUNTIME", "RUNTIMES", "Runtime", "RuntimeSpec", "build", "check_runtime", "choices_help",
           "default_runtime", "file_runtimes", "list_runtimes", "named_unless_default", "option_runtimes", "register",
           "registered", "runtime_for", "runtime_spec", "unregister"]

if TYPE_CHECKING:
    from lightsr.runtimes.base import Runtime
    from lightsr.runtimes.factory import build, default_runtime


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightsr.runtimes' has no attribute {name!r}")
