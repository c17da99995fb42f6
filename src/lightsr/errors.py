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
