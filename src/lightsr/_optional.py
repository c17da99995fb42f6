"""Optional dependencies (the extras of ``pyproject.toml``): one check, one message, for every part that needs one.

Only :func:`importlib.util.find_spec` runs here, which imports nothing: the command-line parsers call it while
``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from lightsr.errors import UsageError


def missing(*modules: str) -> list[str]:
    """The modules of ``modules`` that are not installed."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require(what: str, modules: tuple[str, ...], extra: str) -> None:
    """A one-line :class:`UsageError` naming ``what`` (an option, a feature), the missing modules and the extra that
    installs them, unless every one of ``modules`` is installed."""
    absent = missing(*modules)
    if absent:
        raise UsageError(f"{what} needs {' and '.join(absent)}: pip install 'lightsr[{extra}]'")


def load(module: str, what: str, extra: str) -> ModuleType:
    """``import module``, or :func:`require`'s one-line error."""
    require(what, (module,), extra)
    try:
        return importlib.import_module(module)
    except ImportError as e:  # installed but broken (a missing shared library): say which
        raise UsageError(f"{what} needs {module}, which fails to import ({e}): pip install 'lightsr[{extra}]'"
                         ) from None
