"""File-writing details shared by every writer (images, ONNX, safetensors, figures)."""

from __future__ import annotations

import os
import stat
from functools import lru_cache
from pathlib import Path

from lightsr.errors import UsageError


@lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``, kernel ≥ 4.7)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)  # elsewhere: the classic swap, once per process
    os.umask(mask)
    return mask


def default_permissions(tmp: str | Path, dest: str | Path | None = None) -> None:
    """Give an atomically written temporary the mode ``open(dest, "w")`` would have left on ``dest``.

    ``tempfile.mkstemp`` (and some writers) create owner-only files; renamed into place, such a temporary would
    leave the user's outputs unreadable by anyone else, unlike every other tool's. A replaced file keeps its mode.
    """
    if dest is not None and Path(dest).exists():
        os.chmod(tmp, stat.S_IMODE(Path(dest).stat().st_mode))
    else:
        os.chmod(tmp, 0o666 & ~_umask())


def check_creatable(path: str | Path, option: str = "") -> None:
    """Fail now, in one line, if ``path`` could never be written because a file stands where a folder must be
    (``option``: the command-line option that named it, if any)."""
    for parent in Path(path).absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{option + ' ' if option else ''}{path}: {parent} is a file, not a folder")
            return
