"""Published weights on demand: downloaded on first use into a cache, checksummed, never fetched twice.

Each architecture's spec lists the published checkpoints lightsr knows (:class:`~lightsr.models.spec.
PublishedWeights`: URL, SHA-256, licence, scores). ``load_model(NAME)``, ``--weights NAME`` and
``create_model(network, scale, pretrained=NAME)`` resolve such a name to its cached file, downloading it first
when needed — as timm's ``pretrained=True`` and BasicSR's model zoo do.

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
from typing import Any

from lightsr.bundled import bundled_names, bundled_weights, default_upscale_model
from lightsr.cache import home, usable_folder
from lightsr.checkpoints import bundled_model
from lightsr.checkpoints import load_model as _load
from lightsr.download import deadline_seconds, download
from lightsr.errors import CheckpointError, UsageError
from lightsr.models.base import SRNet
from lightsr.models.registry import create_model as _create
from lightsr.models.registry import list_models, model_spec, specs
from lightsr.models.spec import ModelSpec, PublishedWeights

_CHUNK = 1 << 20
# One lock per published name: threads of one process (the web app's jobs) download a file once.
_fetching: dict[str, threading.Lock] = {}
_fetching_guard = threading.Lock()


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


def weights_file(text: str | os.PathLike, scale: int | None = None) -> tuple[Path, str | None]:
    """The file behind what a user named as weights, and the container entry its publisher evaluates.

    A file wins; otherwise a published checkpoint's name (downloaded on first use), a bundled file's name
    (``<name>_x<scale>``) or, with ``scale``, a bundled network or variant name. Anything
    else is returned as the path it spells, for the loader to report.
    """
    text = os.fspath(text)
    if Path(text).exists():
        return Path(text), None
    table = published()
    if text in table:
        return fetch(text), table[text][1].param_key
    bundled = {f"{n}_x{s}": p for n in bundled_names() for s, p in bundled_weights(n).items()}
    if text in bundled:
        return bundled[text], None
    if text in bundled_names():
        have = bundled_weights(text)
        want = 4 if scale is None else scale
        if want not in have:
            raise CheckpointError(f"{text}: no bundled weights for ×{want} (bundled: "
                                  f"{', '.join(f'×{s}' for s in sorted(have)) or 'none'})")
        return have[want], None
    return Path(text), None


def load_model(path: str | os.PathLike, name: str | None = None, scale: int | None = None,
               param_key: str | None = None, device: str = "cpu") -> SRNet:
    """:func:`lightsr.checkpoints.load_model`, where ``path`` may also name weights instead of a file.

    A file wins; otherwise a published checkpoint's name (downloaded on first use, with the container entry
    its publisher evaluates unless ``param_key`` says otherwise) or a bundled file's name (``<name>_x<scale>``).
    """
    text = os.fspath(path)
    if not Path(text).exists() and text not in bundled_names():
        file, key = weights_file(text)
        return _load(file, name, scale, param_key if param_key is not None else key, device)
    return _load(path, name, scale, param_key, device)


def create_model(name: str, scale: int = 4, pretrained: bool | str = False, **overrides: Any) -> SRNet:
    """A network by registry name, like timm's ``create_model``.

    ``pretrained=False``: randomly initialised (``overrides`` replace the paper's defaults). ``True``: lightsr's
    bundled weights of ``name`` at ``scale``; ``name`` may also be a bundled variant of a network (its weights
    file names the network; ``create_model(variant, pretrained=True)`` is ``create_model(network,
    pretrained=variant)``). A published checkpoint's
    name (``lightsr models`` lists them): those weights, downloaded on first use.
    """
    if pretrained is False or pretrained is None:
        return _create(name, scale=scale, **overrides)
    if overrides:
        raise UsageError(f"create_model({name!r}, pretrained=…): the weights fix the configuration; drop "
                         f"{', '.join(overrides)}")
    if pretrained is True:
        if name not in list_models() and name not in bundled_names():
            model_spec(name)  # the one-line 'unknown model' error
        return bundled_model(name, scale, option="create_model")
    variants = [n for n in bundled_names() if n not in list_models()]
    if isinstance(pretrained, str) and pretrained in variants:  # create_model(network, pretrained=variant)
        model = bundled_model(pretrained, scale, option="create_model")
        if model_spec(model.arch).family != model_spec(name).family:
            raise UsageError(f"pretrained={pretrained!r} holds {model.arch} weights, not {name}")
        return model
    if not isinstance(pretrained, str) or pretrained not in published():
        have = ", ".join(sorted(published()) + variants) or "none"
        raise UsageError(f"pretrained={pretrained!r}: expected True (bundled weights), bundled variant weights or "
                         f"a published checkpoint ({have})")
    spec, entry = published()[pretrained]
    if spec.family != model_spec(name).family or entry.scale != scale:
        raise UsageError(f"pretrained={pretrained!r} is a {spec.name} ×{entry.scale} checkpoint, not {name} ×{scale}")
    return load_model(pretrained)


def resolve_model(name: str | None, weights: str | None, scale: int | None) -> SRNet:
    """The network a command asks for: ``weights`` (a checkpoint file, or published or bundled weights by name),
    else the bundled weights of ``name`` (default :func:`~lightsr.bundled.default_upscale_model`) at ``scale``
    (default 4).
    """
    if weights:
        return load_model(weights, name=name, scale=scale)
    return bundled_model(name or default_upscale_model(scale), scale)
