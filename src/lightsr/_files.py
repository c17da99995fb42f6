"""File-writing details shared by every writer (images, ONNX, safetensors, figures)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import tempfile
import threading
import zlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from lightsr.errors import LightSRError, UsageError, WriteError, first_line


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


def check_creatable(path: str | Path, option: str = "", probed: set[Path] | None = None,
                    folder: bool = False) -> None:
    """Fail now, in one line, if ``path`` (a file, or with ``folder`` a folder to write files in) could never be
    written (``option``: the command-line option that named it, if any): a file stands where a folder must be,
    or the nearest existing folder does not take new files.

    Writability is tested by creating and removing a probe file there: permission bits say nothing for root, a
    read-only mount or an ACL. ``probed``: folders already found writable (each is probed once), updated.
    """
    label = f"{option} {path}" if option else str(path)
    p = Path(path).absolute()
    for parent in (p, *p.parents) if folder else p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{label}: {parent} is a file, not a folder")
            if probed is None or parent not in probed:
                try:
                    probe_writable(parent)
                except OSError as e:
                    raise UsageError(f"{label}: cannot write in {parent} ({e.strerror or e})") from None
                if probed is not None:
                    probed.add(parent)
            return


def probe_writable(folder: str | Path) -> None:
    """Create and remove a probe file in ``folder``; an ``OSError`` when the folder takes no new files. (The probe
    is named as atomic temporaries are, so that one left by a killed process is swept.)"""
    fd, probe = tempfile.mkstemp(prefix=f".probe.lightsr-{_host_tag()}-{os.getpid()}-", suffix=".tmp", dir=folder)
    os.close(fd)
    os.unlink(probe)


def write_error(path: str | Path, e: BaseException) -> WriteError:
    """The one-line error for a failed write of ``path`` (a full disk, a folder that turned read-only, …)."""
    if isinstance(e, OSError):
        reason = e.strerror or str(e)
    else:  # e.g. safetensors' SafetensorError, torch's "PytorchStreamWriter failed writing file"
        reason = f"{type(e).__name__}: {first_line(e, 200)}" if str(e).strip() else type(e).__name__
    return WriteError(f"{path}: cannot write ({reason}); nothing written")


# ------------------------------------------------------------------------------------- atomic temporaries
#
# Every atomically written file goes through a hidden temporary beside it, named
# ``.<stem>.lightsr-<host>-<pid>-<random><suffix>.tmp``. A writer that is killed (SIGKILL, power loss) cannot
# remove its temporary; the next lightsr process writing into that folder removes those whose writer, on this
# host, no longer runs. Another host's temporaries (a shared folder) are left alone: their pids mean nothing here.

_TEMP_RE = re.compile(r"\..*\.lightsr-([0-9a-f]{8})-(\d+)-[^.]+(\.[^.]*)?\.tmp")
_swept: set[Path] = set()


@lru_cache(maxsize=1)
def _host_tag() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFFFFFF:08x}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists (another user's process)
        return True
    return True


def remove_dead_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporaries in ``folder`` left by lightsr writers on this host that no longer run."""
    removed = []
    host = _host_tag()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.fullmatch(entry.name)
        if not m or m[1] != host or int(m[2]) == os.getpid() or _alive(int(m[2])):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def atomic_temporary(path: Path) -> Path:
    """Create (empty) and return the temporary that an atomic write of ``path`` fills and renames into place;
    the folder is created if needed, and dead writers' temporaries in it are removed (once per process).

    Raises :class:`WriteError` naming ``path`` when the folder does not take files.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = path.parent.resolve()
        if folder not in _swept:
            _swept.add(folder)
            remove_dead_temporaries(folder)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.lightsr-{_host_tag()}-{os.getpid()}-",
                                   suffix=f"{path.suffix}.tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    return Path(tmp)


class WriteCancelled(Exception):
    """An atomic write abandoned before its rename because the thread's stop event was set (:func:`cancelled_by`)."""


_cancel = threading.local()


@contextlib.contextmanager
def cancelled_by(event: threading.Event) -> Iterator[None]:
    """Within this, on this thread, an atomic write whose ``event`` is set by the time its file is complete is
    abandoned (its temporary removed, :class:`WriteCancelled` raised) instead of renamed into place: a worker
    thread's half-finished output is not committed after Ctrl-C or SIGTERM reached the main thread."""
    previous = getattr(_cancel, "event", None)
    _cancel.event = event
    try:
        yield
    finally:
        _cancel.event = previous


def commit(tmp: Path, path: Path) -> None:
    """Give the complete temporary ``tmp`` the usual file mode and rename it to ``path`` (unless this thread's
    writes are cancelled: :func:`cancelled_by`)."""
    event = getattr(_cancel, "event", None)
    if event is not None and event.is_set():
        raise WriteCancelled(str(path))
    default_permissions(tmp, path)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """``with atomic_write(dest) as tmp: <write tmp>``: on success ``tmp`` gets the usual file mode and replaces
    ``dest``; on any failure or interruption (Ctrl-C, SIGTERM) it is removed and ``dest`` is untouched. An
    ``OSError`` becomes a one-line :class:`WriteError` naming ``dest``."""
    path = Path(path)
    tmp = atomic_temporary(path)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, LightSRError):
            raise write_error(path, e) from None
        raise
