"""Published weights on demand: downloaded on first use into a cache, checksummed, never fetched twice.

Each architecture's spec lists the published checkpoints lightsr knows (:class:`~lightsr.models.spec.
PublishedWeights`: URL, SHA-256, licence, scores). ``load_model(NAME)``, ``--weights NAME`` and
``create_model(network, scale, pretrained=NAME)`` resolve such a name (:mod:`lightsr.sources`) to its cached
file, downloading it first when needed — as timm's ``pretrained=True`` and BasicSR's model zoo do.

* Cache: ``$LIGHTSR_HOME`` (default ``~/.cache/lightsr``), ``<name><suffix>`` per entry.
* Downloads stream into a temporary file in the cache folder, hashed on the way, and are renamed into place
  only when the SHA-256 matches; a mismatch removes the file and says so. A cached file is verified on every
  use (the files are small), so a damaged cache is detected and fetched again.
* ``$LIGHTSR_HUB_MIRROR=URL``: fetch ``URL/<file name of the original URL>`` instead (mirrors, air-gapped
  sites, tests).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from lightsr.cache import home
from lightsr.errors import CheckpointError, UsageError
from lightsr.models.registry import specs
from lightsr.models.spec import ModelSpec, PublishedWeights

_CHUNK = 1 << 20
TIMEOUT_S = 60


def published() -> dict[str, tuple[ModelSpec, PublishedWeights]]:
    """Every published checkpoint lightsr knows, by name, with the spec of its network."""
    return {w.name: (spec, w) for spec in specs() for w in spec.published}


def cached_path(entry: PublishedWeights) -> Path:
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


def fetch(name: str, progress: bool | None = None) -> Path:
    """The verified local file of published checkpoint ``name``, downloaded first if it is not cached.

    ``progress``: a tqdm bar on stderr (default: when stderr is a terminal).
    """
    table = published()
    if name not in table:
        raise UsageError(f"{name!r} is not a published checkpoint lightsr knows ({', '.join(sorted(table))})")
    entry = table[name][1]
    path = cached_path(entry)
    if path.is_file():
        if file_sha256(path) == entry.sha256:
            return path
        path.unlink(missing_ok=True)  # damaged or replaced: fetched again below
    return _download(entry, path, sys.stderr.isatty() if progress is None else progress)


def _download(entry: PublishedWeights, path: Path, progress: bool) -> Path:
    url = _url(entry)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"{path.parent}: cannot create the weights cache ({e.strerror or e}); set "
                              "LIGHTSR_HOME to a writable folder") from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, tmp.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            from tqdm import tqdm

            with tqdm(total=total, unit="B", unit_scale=True, desc=entry.name, disable=None if progress else True,
                      file=sys.stderr, leave=False) as bar:
                while block := response.read(_CHUNK):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
        if h.hexdigest() != entry.sha256:
            raise CheckpointError(f"{entry.name}: the download from {url} has SHA-256 {h.hexdigest()[:16]}…, not "
                                  f"{entry.sha256[:16]}…; the file was deleted")
        os.replace(tmp, path)
    except CheckpointError:  # a wrong checksum is not a connection problem: its own message
        raise
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        raise CheckpointError(f"{entry.name}: cannot download {url} ({reason}); without a connection, put the "
                              f"file at {path} or set LIGHTSR_HUB_MIRROR") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path
