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
