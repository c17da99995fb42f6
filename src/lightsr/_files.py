"""File-writing details shared by every writer (images, ONNX, safetensors)."""

from __future__ import annotations

import os
from pathlib import Path


def default_permissions(path: str | Path) -> None:
    """Give an atomically written file the mode a plain ``open(path, "w")`` would have given it.

    ``tempfile.mkstemp`` (and some writers) create files readable by their owner only; renamed into place, such a
    temporary would leave the user's outputs unreadable by anyone else, unlike every other tool's.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
