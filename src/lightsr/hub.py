"""Published weights on demand: downloaded on first use into a cache, checksummed, never fetched twice.

Each architecture's spec lists the published checkpoints lightsr knows (:class:`~lightsr.models.spec.
PublishedWeights`: URL, SHA-256, licence, scores). ``load_model(NAME)``, ``--weights NAME`` and
``create_model(network, scale, pretrained=NAME)`` resolve such a name (:mod:`lightsr.sources`) to its cached
file, downloading it first when needed — as timm's ``pretrained=True`` and BasicSR's model zoo do.

* Cache: ``$LIGHTSR_HOME`` (default ``~/.cache/lightsr``), ``<name><suffix>`` per entry.
* Downloads (:mod:`lightsr.download`) have a deadline (``--download-timeout``, ``$LIGHTSR_DOWNLOAD_TIMEOUT``,
  default 300 s) and stop at the entry's size + 1 byte; they stream into a temporary file in the cache folder,
  hashed on the way, renamed into place only when size and SHA-256 match. Any failure is one line and leaves
  nothing behind. A cached file is verified on every use (the files are small), so a damaged cache is detected
  and fetched again. Threads of one process fetching the same name wait for one download.
* ``$LIGHTSR_HUB_MIRROR=URL``: fetch ``URL/<file name of the original URL>`` instead (mirrors, air-gapped
  sites, tests).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from lightsr.cache import home, usable_folder
from lightsr.download import deadline_seconds, download
from lightsr.errors import CheckpointError, UsageError
from lightsr.models.registry import specs
from lightsr.models.spec import ModelSpec, PublishedWeights

_CHUNK = 1 << 20
# One lock per published name: threads of one process (the web app's jobs) download a file once.
_fetching: dict[str, threading.Lock] = {}
_fetching_guard = threading.Lock()


def published() -> dict[str, tuple[ModelSpec, PublishedWeights]]:
    """Every published checkpoint lightsr knows, by name, with the spec of its network."""
    return {w.name: (spec, w) for spec in specs() for w in spec.published}


def cached_path(entry: PublishedWeights) -> Path:
    """Where the published checkpoint ``entry`` is cached: ``$LIGHTSR_HOME/<name><suffix of its URL>``."""
    return home() / (entry.name + Path(urllib.parse.urlparse(entry.url).path).suffix)


def _url(entry: PublishedWeights) -> str:
    mirror = os.environ.get("LIGHTSR_HUB_MIRROR")
    if not mirror:
        return entry.url
    return mirror.rstrip("/") + "/" + Path(urllib.parse.urlparse(entry.url).path).name


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def fetch(name: str, progress: bool | None = None, timeout: float | None = None) -> Path:
    """The verified local file of published checkpoint ``name``, downloaded first if it is not cached.

    ``progress``: a tqdm bar on stderr (default: when stderr is a terminal). ``timeout``: seconds the whole
    download may take (default: :func:`lightsr.download.deadline_seconds`), waiting for another thread's
    download of the same file included.
    """
    table = published()
    if name not in table:
        raise UsageError(f"{name!r} is not a published checkpoint lightsr knows ({', '.join(sorted(table))})")
    entry = table[name][1]
    seconds = deadline_seconds(timeout)
    start = time.monotonic()
    with _fetching_guard:
        lock = _fetching.setdefault(name, threading.Lock())
    if not lock.acquire(timeout=seconds):
        raise CheckpointError(f"{name}: another thread's download of it did not finish within {seconds:g} s")
    try:
        path = cached_path(entry)
        if _verified(path, entry):
            return path
        folder = usable_folder()
        with contextlib.suppress(OSError):  # damaged or replaced: fetched again (the rename below reports a folder)
            path.unlink(missing_ok=True)
        return download(_url(entry), folder / path.name, size=entry.size, sha256=entry.sha256, label=entry.name,
                        hint=f"without a connection, put the file at {path} or set LIGHTSR_HUB_MIRROR",
                        timeout=seconds, elapsed=time.monotonic() - start,
                        progress=sys.stderr.isatty() if progress is None else progress)
    finally:
        lock.release()


def _verified(path: Path, entry: PublishedWeights) -> bool:
    """``path`` is a regular file of the entry's size and SHA-256 (the size first: a replaced file of another size
    is not hashed)."""
    try:
        return path.is_file() and path.stat().st_size == entry.size and file_sha256(path) == entry.sha256
    except OSError:
        return False
