"""Exported ``.onnx`` files a user names (``lightsr upscale --onnx``): the checks every runtime that runs such files
makes before the first image — lightsr's metadata (``scale`` required; ``arch``, ``config``), one float
``N×3×H×W`` input, and a tiny probe run whose output must be ×scale of its input.

A file is not one of lightsr's cached exports: nothing says how it was made, so each runtime's ``open_file``
reads it with these checks and reports anything else as a one-line :class:`~lightsr.errors.OnnxModelError`
naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightsr import _json
from lightsr.errors import OnnxModelError

# The largest scale factor a file's metadata may state (the networks are ×2–×4; ×16 leaves room).
MAX_SCALE = 16
# The input the load-time probe runs: odd, non-square, below every network's window and minimum size.
PROBE_SIZE = (7, 9)


@dataclass(frozen=True)
class FileMetadata:
    """What lightsr wrote into an exported file: ``scale``, ``arch`` (None if absent), ``config`` (the network's
    keyword arguments, None if absent) and every entry as read (``entries``)."""

    scale: int
    arch: str | None
    config: dict[str, Any] | None
    entries: dict[str, str] = field(default_factory=dict)


def read_metadata(path: Path, meta: Mapping[str, str]) -> FileMetadata:
    """``scale`` (required), ``arch`` and ``config`` (JSON) as lightsr wrote them into the file at ``path``;
    anything else is an error naming the file and the entry."""
    def bad(key: str, expected: str) -> OnnxModelError:
        value = meta[key]
        shown = repr(value if len(value) <= 40 else value[:40] + "…")
        return OnnxModelError(f"{path}: bad lightsr metadata {key}={shown} (expected {expected})")

    if "scale" not in meta:
        raise OnnxModelError(f"{path}: no lightsr metadata (scale); export it with `lightsr export`")
    text = meta["scale"].strip()
    if not re.fullmatch(r"[0-9]{1,3}", text) or not 1 <= int(text) <= MAX_SCALE:
        raise bad("scale", f"an integer from 1 to {MAX_SCALE}")
    arch = meta.get("arch")
    if arch is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", arch):
        raise bad("arch", "a network name")
    config = None
    if "config" in meta:
        try:
            config = _json.loads(meta["config"])
        except ValueError:
            config = None
        if not isinstance(config, dict):
            raise bad("config", "a JSON object")
    return FileMetadata(int(text), arch, config, dict(meta))


def check_input(path: Path, inputs: Sequence[tuple[bool, Sequence[int | None]]], described: str) -> None:
    """The graph takes one float32 input of rank 4 with 3 channels (or a symbolic channel count); ``inputs``:
    (float32, dims with None where symbolic) per input, ``described``: the same as the runtime prints them."""
    ok = (len(inputs) == 1 and inputs[0][0] and len(inputs[0][1]) == 4 and inputs[0][1][1] in (3, None))
    if not ok:
        raise OnnxModelError(f"{path}: expected one float input N×3×H×W, the graph takes {described}")


def check_output(path: Path, out_shape: Sequence[int], in_shape: Sequence[int], scale: int) -> None:
    """The output of an ``N×3×H×W`` input is ``N×3×sH×sW`` for the metadata's scale ``s``."""
    n, _, h, w = in_shape
    expected = (n, 3, h * scale, w * scale)
    if tuple(out_shape) != expected:
        raise OnnxModelError(f"{path}: output {'×'.join(map(str, out_shape))} for a "
                             f"{'×'.join(map(str, in_shape))} input is not ×{scale} (its metadata "
                             f"scale); expected {'×'.join(map(str, expected))}")
