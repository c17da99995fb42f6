"""Memory allocator tuning for command-line runs.

With glibc's default malloc a large share of eager inference time goes to the kernel (benchmarks/README.md),
because every layer allocates large temporary buffers (tens of MB), glibc serves each from a fresh ``mmap``
and returns it on ``free``, and the next layer page-faults the same amount of memory in again. Two fixes:

1. **tcmalloc** (Debian: ``apt-get install libtcmalloc-minimal4``) keeps freed memory for reuse. When it is
   installed, :func:`use_fast_allocator` re-executes the command once with ``LD_PRELOAD`` set — the way popular
   Stable Diffusion web UIs do — since an allocator can only be swapped before the process starts.
2. Without tcmalloc, glibc is told to keep large blocks in its heap (``mallopt`` ``M_MMAP_THRESHOLD`` and
   ``M_TRIM_THRESHOLD``), which removes most of the page faults as well.

Opt out with ``LIGHTSR_ALLOCATOR=system`` (neither), or ``LIGHTSR_ALLOCATOR=glibc`` (no re-exec, glibc tuning
only). Only command-line entry points call this; importing lightsr never changes the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from collections.abc import Sequence

_TCMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc.so.4",
)
_MARK = "LIGHTSR_ALLOCATOR_SET"

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def find_tcmalloc() -> str | None:
    for path in _TCMALLOC_CANDIDATES:
        if os.path.exists(path):
            return path
    for name in ("tcmalloc_minimal", "tcmalloc"):
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def active_allocator() -> str:
    """What this process runs on: 'tcmalloc', 'glibc-tuned' or 'system'."""
    if "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return "tcmalloc"
    return "glibc-tuned" if os.environ.get(_MARK) == "glibc-tuned" else "system"


def tune_glibc(threshold: int = 1 << 30) -> bool:
    """Keep freed blocks up to ``threshold`` bytes in glibc's heap; False where glibc is not the allocator."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, threshold) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2 * threshold) == 1
    except (OSError, AttributeError):
        return False
    if ok:
        os.environ[_MARK] = "glibc-tuned"
    return ok


def use_fast_allocator(argv: Sequence[str]) -> None:
    """Re-exec under tcmalloc when available (once), else tune glibc. Never returns on re-exec."""
    choice = os.environ.get("LIGHTSR_ALLOCATOR", "auto").lower()
    if choice == "system" or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    if not argv or any(a in ("-h", "--help", "--version") for a in argv):
        return  # nothing will be allocated: neither a second start nor the library search is worth its time
    if choice == "auto" and not os.environ.get(_MARK) and sys.platform == "linux":
        lib = find_tcmalloc()
        if lib:
            env = dict(os.environ)
            env["LD_PRELOAD"] = f"{lib} {env['LD_PRELOAD']}".strip() if env.get("LD_PRELOAD") else lib
            env[_MARK] = "tcmalloc"
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                os.execve(sys.executable, [sys.executable, "-m", "lightsr", *argv], env)
            except OSError:
                pass  # fall through to glibc tuning
    tune_glibc()
