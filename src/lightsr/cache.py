"""Where lightsr keeps what it downloads (published weights) and builds (exports for other runtimes)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The cache folder: ``$LIGHTSR_HOME`` or ``~/.cache/lightsr``."""
    env = os.environ.get("LIGHTSR_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lightsr"
