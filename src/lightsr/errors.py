"""Errors that reach users: each message is one line naming the file or option and what is wrong."""


class LightSRError(Exception):
    """Base of every user-facing error; the command line prints it as one line and exits with status 2."""


class UsageError(LightSRError, ValueError):
    """A bad option or option combination."""


class DatasetError(LightSRError, ValueError):
    """A benchmark set or training-data folder that is missing or inconsistent; the message names the file or
    folder."""


class CheckpointError(LightSRError, ValueError):
    """A checkpoint that cannot be read or does not fit; the message names the file and the reason."""


class WriteError(LightSRError, OSError):
    """An output that cannot be written (full disk, read-only folder); the message names the file. Nothing partial
    is left behind."""


class CacheError(LightSRError, OSError):
    """lightsr's cache folder (``$LIGHTSR_HOME``) cannot hold files; the message names it and the fix."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``docker stop``, a scheduler) while the command line runs: handled like Ctrl-C —
    every ``except BaseException``/``finally`` cleanup runs, then lightsr exits with status 143 (128 + 15)."""


class ExportError(LightSRError, RuntimeError):
    """An export that failed or whose ONNX graph does not reproduce the PyTorch network."""


class OnnxModelError(LightSRError, ValueError):
    """An ONNX file that cannot be run as a lightsr model (unreadable, bad metadata, wrong output size); the
    message names the file."""


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first non-empty line of an exception's message (its type's name when it has none), cut at ``limit``
    characters: what a one-line error quotes of a library's multi-line message."""
    line = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return line if limit is None else line[:limit]
