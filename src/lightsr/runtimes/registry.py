"""Name → runtime registry: what each runtime is, as data (no torch, no runtime package is imported here).

Like spandrel's architecture registry, one record per runtime says what generic code may know about it; like
timm's ``_registry``/``_factory`` split, building is the factory's job (:mod:`lightsr.runtimes.factory`), which
imports the runtime's module only when it builds one. The command-line parsers read :data:`RUNTIMES` for their
choices and help while ``--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from lightsr import _optional
from lightsr.errors import UsageError


@dataclass(frozen=True)
class RuntimeSpec:
    """What generic code knows about a runtime.

    ``build``: the function making a :class:`~lightsr.runtimes.Runtime` of a network,
    ``build(model, precision, device, threads, fuse)`` (precision and device resolved and checked against this
    record), or its ``"module:function"`` path, imported when the first runtime is built (the built-in runtimes'
    modules import torch and their packages). ``open_file``: the same for an exported ``.onnx`` file,
    ``open_file(path, precision, device, threads)``, where the runtime runs such files. ``precisions``: the
    precisions it runs (a network's own list narrows them); ``devices``: the device types it runs on (``auto``
    picks among them). ``extra``/``requires``: the ``pip install 'lightsr[extra]'`` that installs the modules it
    imports. ``graph``: it runs the network's ONNX export (made and cached on first use), so the network's
    training form (``--no-fuse``) is not among its choices. ``options``: keyword options its ``build`` takes
    besides those (``calibration``: the images of an int8 graph's calibration). ``summary``: a few words for
    ``--help``.
    """

    name: str
    build: str | Callable[..., Any]
    summary: str
    precisions: tuple[str, ...]
    devices: tuple[str, ...]
    extra: str | None = None
    requires: tuple[str, ...] = ()
    graph: bool = False
    open_file: str | Callable[..., Any] | None = None
    options: tuple[str, ...] = ()


# The runtime of networks named without --backend.
DEFAULT_RUNTIME = "torch"

# The built-in runtimes, in the order --help lists them.
_BUILTIN = (
    RuntimeSpec("torch", "lightsr.runtimes.torch:build", "PyTorch, the inference form (--no-fuse: the training form)",
                precisions=("fp32", "bf16", "fp16"), devices=("cpu", "cuda", "mps", "xpu")),
    # Its CPU kernels have no bf16 path for these graphs.
    RuntimeSpec("onnxruntime", "lightsr.runtimes.onnxruntime:build", "onnxruntime running the network's ONNX export",
                precisions=("fp32",), devices=("cpu", "cuda"), extra="onnx", requires=("onnx", "onnxruntime"),
                graph=True, open_file="lightsr.runtimes.onnxruntime:open_file"),
    # int8: the export quantized by NNCF (lightsr.runtimes.int8; pip install 'lightsr[int8]').
    RuntimeSpec("openvino", "lightsr.runtimes.openvino:build",
                "OpenVINO running the network's ONNX export (CPU; int8: quantized by NNCF)",
                precisions=("fp32", "bf16", "int8"), devices=("cpu",), extra="openvino",
                requires=("onnx", "openvino"), graph=True, open_file="lightsr.runtimes.openvino:open_file",
                options=("calibration",)),
)

RUNTIMES: dict[str, RuntimeSpec] = {}


def register(spec: RuntimeSpec) -> None:
    """Add a runtime to the registry (an error if the name is taken)."""
    if spec.name in RUNTIMES:
        raise ValueError(f"a runtime named {spec.name!r} is already registered")
    RUNTIMES[spec.name] = spec


def unregister(name: str) -> None:
    """Remove a runtime from the registry (nothing if it is not there)."""
    RUNTIMES.pop(name, None)


@contextlib.contextmanager
def registered(*specs: RuntimeSpec) -> Iterator[None]:
    """Runtimes registered for the duration of a ``with`` block (tests, experiments)."""
    for spec in specs:
        register(spec)
    try:
        yield
    finally:
        for spec in specs:
            unregister(spec.name)


for _spec in _BUILTIN:
    register(_spec)


def list_runtimes() -> list[str]:
    """The registered runtimes, in registration order (the built-in ones first)."""
    return list(RUNTIMES)


def runtime_spec(name: str, option: str = "--backend") -> RuntimeSpec:
    """The record of ``name``; a one-line :class:`UsageError` naming ``option`` for an unknown one."""
    try:
        return RUNTIMES[name]
    except (KeyError, TypeError):
        raise UsageError(f"{option} {name!r}: choose one of {', '.join(RUNTIMES)}") from None


def check_runtime(name: str, option: str = "--backend") -> RuntimeSpec:
    """:func:`runtime_spec`, and a one-line error naming the extra to install when its packages are missing."""
    spec = runtime_spec(name, option)
    if spec.requires:
        _optional.require(f"{option} {name}", spec.requires, spec.extra or name)
    return spec


def runtime_for(precision: str) -> str:
    """The runtime a network runs on in ``precision`` when none is named: :data:`DEFAULT_RUNTIME`, unless it does
    not offer that precision and another runtime does (the first registered one)."""
    if precision in RUNTIMES[DEFAULT_RUNTIME].precisions or precision == "auto":
        return DEFAULT_RUNTIME
    return next((name for name, spec in RUNTIMES.items() if precision in spec.precisions), DEFAULT_RUNTIME)


def option_runtimes(option: str) -> list[str]:
    """The runtimes whose ``build`` takes the keyword ``option``."""
    return [name for name, spec in RUNTIMES.items() if option in spec.options]


def file_runtimes() -> list[str]:
    """The runtimes that run exported ``.onnx`` files."""
    return [name for name, spec in RUNTIMES.items() if spec.open_file]


def entry_point(target: str | Callable[..., Any]) -> Callable[..., Any]:
    """The function a record names: itself, or the one at ``"module:function"``, imported now."""
    if callable(target):
        return target
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def named_unless_default(name: str) -> str | None:
    """``name`` where a summary names the runtime: None for :data:`DEFAULT_RUNTIME`, which goes without saying."""
    return None if name == DEFAULT_RUNTIME else name


def choices_help() -> str:
    """The runtimes as ``--backend``'s help lists them."""
    return "; ".join(f"{name}: {spec.summary}" + (f" (pip install 'lightsr[{spec.extra}]')" if spec.extra else "")
                     for name, spec in RUNTIMES.items())
