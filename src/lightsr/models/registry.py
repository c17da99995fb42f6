"""Name → network registry: ``create_model("elan_light", scale=4)``, ``list_models()``, ``model_spec(name)``.

Each architecture package exports ``SPECS``; registering a built-in architecture is one entry in
:data:`_BUILTIN`. Other code (plugins, tests) adds networks with :func:`register`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from lightsr.errors import UsageError
from lightsr.models import elan, hasn, lksmn
from lightsr.models.base import SRNet
from lightsr.models.spec import ModelSpec

_BUILTIN = (elan, hasn, lksmn)

_SPECS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> None:
    """Add a network to the registry (an error if the name is taken)."""
    if spec.name in _SPECS:
        raise ValueError(f"a network named {spec.name!r} is already registered")
    _SPECS[spec.name] = spec


def unregister(name: str) -> None:
    """Remove a network from the registry (nothing if it is not there)."""
    _SPECS.pop(name, None)


@contextlib.contextmanager
def registered(*specs: ModelSpec) -> Iterator[None]:
    """Networks registered for the duration of a ``with`` block (tests, experiments)."""
    for spec in specs:
        register(spec)
    try:
        yield
    finally:
        for spec in specs:
            unregister(spec.name)


for _package in _BUILTIN:
    for _spec in _package.SPECS:
        register(_spec)


def list_models() -> list[str]:
    """The registered networks' names, sorted."""
    return sorted(_SPECS)


def model_spec(name: str) -> ModelSpec:
    """The spec of a registered network; an unknown name is a one-line :class:`~lightsr.errors.UsageError`."""
    try:
        return _SPECS[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def find_spec(name: str | None) -> ModelSpec | None:
    """The spec of ``name``, or None when it is not a registered network (e.g. another tool's ONNX graph)."""
    return _SPECS.get(name or "")


def specs() -> list[ModelSpec]:
    """Every registered network's spec, by name."""
    return [_SPECS[name] for name in list_models()]


def create_model(name: str, scale: int = 4, **overrides: Any) -> SRNet:
    """Build a randomly initialised network by registry name; ``overrides`` replace the paper's defaults."""
    spec = model_spec(name)
    if not isinstance(scale, int) or scale < 1:
        raise UsageError(f"scale must be a positive integer, got {scale!r}")
    model = spec.network(scale=scale, **{**spec.defaults, **overrides})
    model.arch = name
    model.precisions = spec.precisions
    return model
