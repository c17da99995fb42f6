"""JSON from files lightsr does not trust (checkpoint metadata): nesting bounded, never a ``RecursionError``."""

from __future__ import annotations

import json
from typing import Any

# Deeper than any metadata lightsr reads (a safetensors header or a network's config is 3 levels deep).
MAX_DEPTH = 32


def loads(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads``, refusing with a ``ValueError`` a document whose arrays and objects nest deeper than
    ``max_depth`` (the decoder itself would raise ``RecursionError`` from about a thousand levels on)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return value


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: an untrusted value named in a one-line message."""
    try:
        text = repr(value)
    except RecursionError:  # pragma: no cover - values come from loads(), bounded
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 1] + "…"
