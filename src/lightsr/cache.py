"""Where lightsr keeps what it downloads (published weights) and builds (exports for other runtimes)."""

from __future__ import annotations

import os
from pathlib import Path

from lightsr._files import probe_writable
from lightsr.errors import CacheError


def home() -> Path:
    """The cache folder: ``$LIGHTSR_HOME`` or ``~/.cache/lightsr``."""
    env = os.environ.get("LIGHTSR_HOME")
    try:
        return Path(env).expanduser() if env else Path.home() / ".cache" / "lightsr"
    except (RuntimeError, KeyError):  # "~user" of no user, or no home folder at all
        raise CacheError(f"LIGHTSR_HOME={env or ''}: no such home folder; set LIGHTSR_HOME to a writable "
                         "folder") from None


def usable_folder(sub: str = "") -> Path:
    """``home() / sub``, created if needed and checked to take new files.

    Raises a one-line :class:`CacheError` naming the folder (and ``LIGHTSR_HOME`` when it is set) and the fix:
    a file standing where the folder must be, a folder that cannot be created or is not writable. Writability is
    tested with a probe file: permission bits say nothing for root, a read-only mount or an ACL.
    """
    root = home()
    folder = root / sub if sub else root
    name = f"LIGHTSR_HOME={root}" if os.environ.get("LIGHTSR_HOME") else f"{root} (lightsr's cache folder)"
    fix = "set LIGHTSR_HOME to a writable folder"
    try:
        for parent in (folder, *folder.parents):
            if parent.exists() or parent.is_symlink():
                if not parent.is_dir():
                    what = "a broken link" if not parent.exists() else "a file"
                    where = "" if parent == root else f" ({parent})"
                    raise CacheError(f"{name}: {what} stands where the folder must be{where}; {fix}")
                break
        folder.mkdir(parents=True, exist_ok=True)
        probe_writable(folder)
    except CacheError:
        raise
    except OSError as e:
        where = "" if folder == root else f" ({folder})"
        raise CacheError(f"{name}: cannot write there{where} ({e.strerror or e}); {fix}") from None
    return folder
