"""Bounded HTTP(S) downloads of files whose size and SHA-256 are known in advance (:mod:`lightsr.hub`).

A server is trusted with nothing:

* **Time**: every connect and every read waits at most :data:`READ_TIMEOUT_S`; the whole download (redirects,
  status line and headers included) has a deadline — ``timeout``, else the innermost
  :func:`download_timeout` block, else ``$LIGHTSR_DOWNLOAD_TIMEOUT``, else :data:`DEFAULT_DEADLINE_S`. A
  watchdog shuts the connection's socket down when it passes, so that a server dripping one byte at a time
  (within every read timeout) still cannot hold the caller longer.
* **Size**: the body is read in blocks up to ``size`` + 1 bytes; a server that announces or sends more is cut
  off there, so an endless body cannot fill the disk.
* **Protocol**: every transport failure (refused or reset connections, TLS errors, malformed status lines,
  over-long or too many headers, broken chunked bodies, redirect loops, HTTP errors) is one line of
  :class:`~lightsr.errors.CheckpointError`.
* **Files**: the body streams into a temporary beside the destination (:func:`lightsr._files.atomic_temporary`)
  and is renamed into place only when size and SHA-256 match; the temporary is removed on any failure or
  interruption, and temporaries of killed downloads are swept by the next one.

Only ``http``, ``https`` and ``file`` URLs are opened (a redirect may lead to ``http`` and ``https`` only).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from lightsr._files import atomic_temporary, default_permissions, remove_dead_temporaries, write_error
from lightsr.errors import CheckpointError, LightSRError, UsageError

__all__ = ["DEFAULT_DEADLINE_S", "ENV", "READ_TIMEOUT_S", "deadline_seconds", "download", "download_timeout"]

# The whole download, by default: a published checkpoint of a few MB needs seconds; 300 s still lets one through
# at ~12 kB/s, and bounds how long a stalled mirror can hold a command or a web-app job.
DEFAULT_DEADLINE_S = 300.0
# One connect or one read with no byte coming.
READ_TIMEOUT_S = 30.0
ENV = "LIGHTSR_DOWNLOAD_TIMEOUT"
_BLOCK = 1 << 16

_timeout: ContextVar[float | None] = ContextVar("lightsr_download_timeout", default=None)


@contextlib.contextmanager
def download_timeout(seconds: float | None) -> Iterator[None]:
    """Within the block, downloads that are not given a ``timeout`` give up after ``seconds`` (None: the
    surrounding setting). The ``--download-timeout`` option of the commands."""
    if seconds is not None:
        _check(seconds, "download_timeout")
    token = _timeout.set(seconds if seconds is not None else _timeout.get())
    try:
        yield
    finally:
        _timeout.reset(token)


def _check(seconds: float, what: str) -> float:
    if not (isinstance(seconds, (int, float)) and 0 < seconds < float("inf")):
        raise UsageError(f"{what} {seconds!r}: expected a number of seconds > 0")
    return float(seconds)


def deadline_seconds(timeout: float | None = None) -> float:
    """The deadline a download gets: ``timeout``, the :func:`download_timeout` block's, ``$LIGHTSR_DOWNLOAD_TIMEOUT``
    or :data:`DEFAULT_DEADLINE_S`."""
    if timeout is not None:
        return _check(timeout, "timeout")
    if (scoped := _timeout.get()) is not None:
        return scoped
    text = os.environ.get(ENV, "").strip()
    if not text:
        return DEFAULT_DEADLINE_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise UsageError(f"{ENV}={text[:40]}: expected a number of seconds > 0")
    return value


# --------------------------------------------------------------------------------------------- transport


class _Watch:
    """The deadline of one download: connections are opened through :meth:`connect`, which registers a duplicate
    of each socket; when the deadline passes, a timer shuts them all down (a blocked read returns at once) and
    no new connection opens."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def connect(self, address: tuple[str, int], timeout: Any = READ_TIMEOUT_S, source_address: Any = None,
                *args: Any) -> socket.socket:
        left = self.remaining()
        if self.expired or left <= 0:
            raise TimeoutError("deadline passed")
        limit = timeout if isinstance(timeout, (int, float)) else READ_TIMEOUT_S
        sock = socket.create_connection(address, min(limit, left), source_address, *args)
        sock.settimeout(limit)
        with self._lock:
            if self.expired:
                sock.close()
                raise TimeoutError("deadline passed")
            # A duplicate, not the socket itself: TLS detaches the socket object it wraps, and shutting down any
            # descriptor of a connection ends it for all.
            self._socks.append(sock.dup())
        return sock

    def connection(self, cls: type[http.client.HTTPConnection]) -> Callable[..., http.client.HTTPConnection]:
        def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            conn = cls(host, **kwargs)
            conn._create_connection = self.connect  # type: ignore[attr-defined]  # http.client's own hook
            return conn

        return make

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.close()
            self._socks.clear()


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self._watch = watch

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self._watch.connection(http.client.HTTPConnection), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self._watch = watch

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self._watch.connection(http.client.HTTPSConnection), req,
                            context=self._context)  # type: ignore[attr-defined]


def _opener(watch: _Watch) -> urllib.request.OpenerDirector:
    """urllib's opener with only HTTP(S) through the watch, local files, proxies from the environment and
    redirects (at most 10, loops refused); no FTP or data URLs."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), _HTTPHandler(watch),
                    _HTTPSHandler(watch), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPRedirectHandler(), urllib.request.FileHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def _one_line(text: object, limit: int = 160) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def _reason(e: BaseException) -> str:
    """What went wrong, in a few words, from any transport or protocol exception."""
    if isinstance(e, urllib.error.HTTPError):
        with contextlib.suppress(Exception):
            e.close()
        if "infinite loop" in str(e.msg):
            return f"a redirect loop (HTTP {e.code})"
        return _one_line(f"HTTP {e.code} {e.msg}")
    if isinstance(e, urllib.error.URLError):
        inner = e.reason
        return _reason(inner) if isinstance(inner, BaseException) else _one_line(inner)
    if isinstance(e, http.client.RemoteDisconnected):
        return "the server closed the connection without a response"
    if isinstance(e, http.client.BadStatusLine):
        return _one_line(f"a malformed status line {e.line!r}"[:80])
    if isinstance(e, http.client.IncompleteRead):
        return f"a broken or cut-off body: {e!r}"
    if isinstance(e, http.client.HTTPException):
        return _one_line(f"{type(e).__name__}: {e}")
    if isinstance(e, TimeoutError):
        return f"no data for {READ_TIMEOUT_S:g} s"
    if isinstance(e, OSError):
        return _one_line(e.strerror or e or type(e).__name__)
    return _one_line(f"{type(e).__name__}: {e}")


def _announced(response: Any) -> int | None:
    text = (response.headers.get("Content-Length") or "").strip()
    return int(text) if text.isascii() and text.isdigit() else None


def download(url: str, dest: str | os.PathLike, *, size: int, sha256: str, label: str, hint: str = "",
             timeout: float | None = None, elapsed: float = 0.0, progress: bool = False) -> Path:
    """Fetch ``url`` into ``dest`` if it is exactly ``size`` bytes with SHA-256 ``sha256``; else nothing is left.

    ``label`` starts every error message (the weights' name), ``hint`` ends those about the connection (what
    to do without one). ``timeout``: the deadline in seconds (see :func:`deadline_seconds`), of which ``elapsed``
    seconds are already spent (waiting for another download of the file); ``progress``: a tqdm bar on stderr.
    Raises a one-line :class:`CheckpointError`.
    """
    dest = Path(dest)
    seconds = deadline_seconds(timeout)
    remove_dead_temporaries(dest.parent)
    tmp = atomic_temporary(dest)
    watch = _Watch(max(seconds - elapsed, 1e-3))
    h = hashlib.sha256()
    got = 0
    tail = f"; {hint}" if hint else ""

    def late() -> CheckpointError:
        return CheckpointError(f"{label}: the download from {url} did not finish within {seconds:g} s ({got} of "
                               f"{size} bytes); raise --download-timeout or {ENV}{tail}")

    try:
        try:
            with _opener(watch).open(url, timeout=min(READ_TIMEOUT_S, seconds)) as response, \
                    tmp.open("wb") as out:
                announced = _announced(response)
                if announced is not None and announced != size:
                    raise CheckpointError(f"{label}: {url} announces {announced} bytes, not the {size} of the "
                                          "published file; nothing was kept")
                from tqdm import tqdm

                with tqdm(total=size, unit="B", unit_scale=True, desc=label, disable=None if progress else True,
                          file=sys.stderr, leave=False) as bar:
                    while block := response.read1(min(_BLOCK, size + 1 - got)):
                        got += len(block)
                        if got > size:
                            raise CheckpointError(f"{label}: {url} sends more than the {size} bytes of the "
                                                  "published file; the download was stopped and deleted")
                        if watch.remaining() <= 0:
                            raise TimeoutError("deadline passed")
                        _write(out, block, dest)
                        h.update(block)
                        bar.update(len(block))
                _write(out, None, dest)
        except LightSRError:
            raise
        except (OSError, ValueError, EOFError, http.client.HTTPException) as e:
            if watch.expired or watch.remaining() <= 0:
                raise late() from None
            raise CheckpointError(f"{label}: cannot download {url} ({_reason(e)}){tail}") from None
        if got != size:
            if watch.expired:  # the watchdog ended the body early
                raise late()
            raise CheckpointError(f"{label}: {url} sent {got} bytes, not the {size} of the published file; nothing "
                                  "was kept")
        if h.hexdigest() != sha256:
            raise CheckpointError(f"{label}: the download from {url} has SHA-256 {h.hexdigest()[:16]}…, not "
                                  f"{sha256[:16]}…; the file was deleted")
        try:
            default_permissions(tmp, dest)
            os.replace(tmp, dest)
        except OSError as e:
            raise write_error(dest, e) from None
    finally:
        watch.close()
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return dest


def _write(out: Any, block: bytes | None, dest: Path) -> None:
    """Append ``block`` (None: flush to disk); a full disk is a one-line WriteError naming ``dest``."""
    try:
        if block is None:
            out.flush()
            os.fsync(out.fileno())
        else:
            out.write(block)
    except OSError as e:
        raise write_error(dest, e) from None
