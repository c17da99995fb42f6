"""Published weights on demand, against a local mirror: download, verify, cache, refuse tampered files.

The mirror is an HTTP server on 127.0.0.1 serving the shared copies of the published checkpoints under their
original file names (``LIGHTSR_HUB_MIRROR``); the cache is a temporary ``LIGHTSR_HOME``.
"""

from __future__ import annotations

import shutil
import threading
import time
import urllib.parse
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from PIL import Image

import hostile_http
import lightsr
from conftest import require_shared
from lightsr import hub
from lightsr.errors import CheckpointError, UsageError

SHARED_COPIES = {"hasn_x4_official": "weights/HASN_x4_official.pth",
                 "elan_light_x4_friedricelab": "weights/ELAN-light_x4_FriedRiceLab.pth"}


class _Handler(SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *_args) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Iterator[tuple[Path, list[str]]]:
    """A local mirror of both published files; yields (its folder, the paths requested)."""
    root = tmp_path / "mirror"
    root.mkdir()
    for name, rel in SHARED_COPIES.items():
        entry = hub.published()[name][1]
        shutil.copy(require_shared(rel), root / Path(urllib.parse.urlparse(entry.url).path).name)
    requests: list[str] = []
    handler = partial(type("H", (_Handler,), {"requests": requests}), directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("LIGHTSR_HUB_MIRROR", f"http://127.0.0.1:{server.server_address[1]}/")
    monkeypatch.setenv("LIGHTSR_HOME", str(tmp_path / "cache"))
    try:
        yield root, requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_once_verified_and_cached(mirror) -> None:
    root, requests = mirror
    path = hub.fetch("hasn_x4_official")
    assert path.parent == hub.home() and path.read_bytes() == (root / "HASN.pth").read_bytes()
    assert len(requests) == 1
    assert hub.fetch("hasn_x4_official") == path and len(requests) == 1  # cached: no second download
    net = lightsr.load_model("hasn_x4_official")
    ref = lightsr.load_model(require_shared(SHARED_COPIES["hasn_x4_official"]), param_key="params")
    assert net.info == ref.info and len(requests) == 1
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values(), strict=True))


def test_a_tampered_file_is_refused_and_nothing_stays(mirror) -> None:
    root, _ = mirror
    data = bytearray((root / "ELAN-light_LSR_x4_unofficial.pth").read_bytes())
    data[len(data) // 2] ^= 1
    (root / "ELAN-light_LSR_x4_unofficial.pth").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"^elan_light_x4_friedricelab: the download from .* has SHA-256 .* "
                                              r"the file was deleted$"):  # not taken for a connection problem
        hub.fetch("elan_light_x4_friedricelab")
    assert not hub.home().exists() or list(hub.home().iterdir()) == []


def test_a_damaged_cache_is_fetched_again(mirror) -> None:
    _, requests = mirror
    path = hub.fetch("hasn_x4_official")
    path.write_bytes(b"damaged")
    assert hub.fetch("hasn_x4_official").read_bytes() != b"damaged" and len(requests) == 2


def test_offline_is_one_line(tmp_path, monkeypatch) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LIGHTSR_HUB_MIRROR", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("LIGHTSR_HOME", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError) as e:
        lightsr.load_model("hasn_x4_official")
    assert "cannot download" in str(e.value) and "LIGHTSR_HUB_MIRROR" in str(e.value) and "\n" not in str(e.value)
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("name", sorted(SHARED_COPIES))
def test_eval_by_name_gives_the_published_scores(mirror, name, capsys) -> None:
    """`lightsr eval --weights NAME` downloads and scores the checkpoint as its spec says (Set5)."""
    from lightsr.cli import main

    _spec, entry = hub.published()[name]
    args = ["eval", "--weights", name, "--scale", "4", "--sets", "Set5", "--no-progress",
            "--data", str(require_shared("data/benchmark"))]
    if entry.param_key:
        args += ["--param-key", entry.param_key]
    assert main(args) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "Set5" in line)
    psnr, ssim = (float(v) for v in row.split("|")[4:6])
    want = dict((s, (p, q)) for s, p, q in entry.scores)["Set5"]
    assert abs(psnr - want[0]) <= 0.001 and abs(ssim - want[1]) <= 0.0001


def test_create_model_pretrained() -> None:
    from lightsr.bundled import bundled_path

    net = lightsr.create_model("lksmn", scale=2, pretrained=True)
    ref = lightsr.load_model(bundled_path("lksmn", 2))
    assert net.info == ref.info
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values(), strict=True))
    assert lightsr.load_model("lksmn_x2").info == ref.info  # a bundled file by name
    with pytest.raises(CheckpointError, match="no bundled weights for ×3"):
        lightsr.create_model("hasn", scale=3, pretrained=True)
    with pytest.raises(UsageError, match="the weights fix the configuration; drop channels"):
        lightsr.create_model("lksmn", pretrained=True, channels=8)
    with pytest.raises(UsageError, match="is a hasn ×4 checkpoint, not lksmn ×4"):
        lightsr.create_model("lksmn", pretrained="hasn_x4_official")
    with pytest.raises(UsageError, match=r"expected True .* or a published checkpoint"):
        lightsr.create_model("lksmn", pretrained="nope")


# ------------------------------------------------------------------------------- untrusted servers and caches


def test_published_entries_record_the_shared_files() -> None:
    """Each entry's size and SHA-256 are those of the published file (the shared copy)."""
    for name, rel in SHARED_COPIES.items():
        entry = hub.published()[name][1]
        path = require_shared(rel)
        assert entry.size == path.stat().st_size and entry.sha256 == hub.file_sha256(path)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def hostile(tmp_path, monkeypatch) -> Iterator[hostile_http.HostileServer]:
    """A misbehaving mirror (its answers set by the test) and an empty cache."""
    with hostile_http.HostileServer() as server:
        monkeypatch.setenv("LIGHTSR_HUB_MIRROR", server.url)
        monkeypatch.setenv("LIGHTSR_HOME", str(tmp_path / "cache"))
        monkeypatch.delenv("LIGHTSR_DOWNLOAD_TIMEOUT", raising=False)
        yield server


_HASN = "hasn_x4_official"


def _size() -> int:
    return hub.published()[_HASN][1].size


def _chunked(extra: bytes = b"") -> bytes:
    return hostile_http.head(extra="Transfer-Encoding: chunked\r\n") + extra


# name → (answer, what the one-line error says); a deadline of 2 s for all.
HOSTILE = {
    "drip within every read timeout": (lambda: hostile_http.drip(hostile_http.head(length=_size())),
                                       "did not finish within 2 s"),
    "headers dripped": (lambda: hostile_http.drip(b"HTTP/1.1 200 OK\r\nX-Slow: "), "did not finish within 2 s"),
    "endless 100 Continue": (lambda: hostile_http.endless(b"", b"HTTP/1.1 100 Continue\r\n\r\n"),
                             "did not finish within 2 s"),
    "endless body": (lambda: hostile_http.endless(hostile_http.head()), "sends more than the 3616623 bytes"),
    "endless chunked body": (lambda: hostile_http.endless(_chunked(), b"10000\r\n" + b"\0" * 65536 + b"\r\n"),
                             "sends more than the 3616623 bytes"),
    "announces too much": (lambda: hostile_http.raw(hostile_http.head(length=10**12)),
                           "announces 1000000000000 bytes, not the 3616623"),
    "short body": (lambda: hostile_http.raw(hostile_http.head(length=_size()) + b"\0" * 1000),
                   "sent 1000 bytes, not the 3616623"),
    "malformed status line": (lambda: hostile_http.raw(b"HTTP/1.1 2OO OK\r\n\r\n"), "malformed status line"),
    "not HTTP": (lambda: hostile_http.raw(b"\x00\xff garbage\n\n"), "malformed status line"),
    "no answer": (lambda: hostile_http.raw(b""), "closed the connection without a response"),
    "broken chunks": (lambda: hostile_http.raw(_chunked(b"zz\r\nabc")), "broken or cut-off body"),
    "over-long header line": (lambda: hostile_http.raw(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n"),
                              "LineTooLong"),
    "too many headers": (lambda: hostile_http.raw(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 150 + b"\r\n"),
                         "more than 100 headers"),
    "redirect loop": (lambda: hostile_http.raw(hostile_http.head("302 Found", 0, "Location: /HASN.pth\r\n")),
                      "redirect loop"),
    "redirect to a file URL": (lambda: hostile_http.raw(hostile_http.head("302 Found", 0,
                                                                          "Location: file:///etc/passwd\r\n")),
                               "HTTP 302"),
    "not found": (lambda: hostile_http.raw(hostile_http.head("404 Not Found", 0)), "HTTP 404 Not Found"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_mirror_is_one_line_within_the_deadline(hostile, case) -> None:
    answer, says = HOSTILE[case]
    hostile.default = answer()
    start = time.monotonic()
    with pytest.raises(CheckpointError) as e:
        hub.fetch(_HASN, timeout=2)
    # Generous: the server's answers last up to two minutes, so only a working deadline ends them this soon.
    assert time.monotonic() - start < 60
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{_HASN}: ") and says in msg, msg
    assert _leftovers(hub.home()) == []  # no partial file
    assert hostile.requests  # the mirror was asked


def test_the_deadline_comes_from_the_option_or_the_environment(hostile, tmp_path, monkeypatch, capsys) -> None:
    from lightsr.cli import main

    hostile.default = hostile_http.drip(hostile_http.head(length=_size()))
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    args = ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--weights", _HASN]
    assert main([*args, "--download-timeout", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lightsr: error: {_HASN}: the download from ") and \
        "did not finish within 2 s" in err[0]
    assert not (tmp_path / "out.png").exists() and _leftovers(hub.home()) == []
    monkeypatch.setenv("LIGHTSR_DOWNLOAD_TIMEOUT", "1.5")
    with pytest.raises(CheckpointError, match=r"did not finish within 1\.5 s"):
        hub.fetch(_HASN)
    monkeypatch.setenv("LIGHTSR_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(UsageError, match=r"^LIGHTSR_DOWNLOAD_TIMEOUT=soon: expected a number of seconds > 0$"):
        hub.fetch(_HASN)
    with pytest.raises(SystemExit):  # refused while parsing
        main(["upscale", "x.png", "-o", "y.png", "--download-timeout", "-1"])
    from lightsr.download import download_timeout

    monkeypatch.delenv("LIGHTSR_DOWNLOAD_TIMEOUT")
    with download_timeout(2.5), pytest.raises(CheckpointError, match=r"did not finish within 2\.5 s"):
        hub.fetch(_HASN)


def test_threads_fetching_one_name_download_it_once(mirror) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _, requests = mirror
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: hub.fetch(_HASN), range(4)))
    assert len(set(paths)) == 1 and len(requests) == 1
    assert hub.file_sha256(paths[0]) == hub.published()[_HASN][1].sha256


def test_a_killed_downloads_partial_file_is_swept_but_not_a_live_ones(hostile, tmp_path) -> None:
    """A download killed with SIGKILL leaves its temporary; the next download removes it, but not the temporary
    of a download still running in another process."""
    import os
    import signal
    import subprocess
    import sys

    data = require_shared(SHARED_COPIES["elan_light_x4_friedricelab"]).read_bytes()
    hostile.routes["/ELAN-light_LSR_x4_unofficial.pth"] = hostile_http.serve_file(data)
    # One byte a second (within every read timeout): a download that runs until the test releases the mirror.
    hostile.default = hostile_http.drip(hostile_http.head(length=_size()), interval=1.0)
    cache = hub.home()
    env = {**os.environ, "LIGHTSR_DOWNLOAD_TIMEOUT": "110", "PYTHONPATH": os.pathsep.join(sys.path)}
    code = f"from lightsr.hub import fetch; fetch({_HASN!r}, progress=False)"

    def start_and_wait() -> tuple[subprocess.Popen, set[str]]:
        before = set(_leftovers(cache))
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
        end = time.monotonic() + 120
        while time.monotonic() < end and proc.poll() is None:
            new = set(_leftovers(cache)) - before
            if new:
                return proc, new
            time.sleep(0.1)
        proc.kill()
        pytest.fail(f"the download never started: {proc.communicate()[1].decode()[-500:]}")

    dead, dead_part = start_and_wait()
    dead.send_signal(signal.SIGKILL)
    dead.wait(timeout=30)
    live, live_part = start_and_wait()
    try:
        # The next download (in another process) swept the dead one's temporary.
        assert set(_leftovers(cache)) == live_part and not dead_part & live_part
        hub.fetch("elan_light_x4_friedricelab")  # one more download in this folder, while the live one runs
        assert set(_leftovers(cache)) == live_part | {"elan_light_x4_friedricelab.pth"}
    finally:
        hostile.release.set()  # the live download fails and removes its own temporary
        _, err = live.communicate(timeout=120)
    assert b"Traceback" in err and b"CheckpointError" in err  # a Python caller gets the exception
    assert _leftovers(cache) == ["elan_light_x4_friedricelab.pth"]


def test_an_unusable_cache_folder_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    from conftest import deny_writes
    from lightsr.cli import main
    from lightsr.errors import CacheError

    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("LIGHTSR_HUB_MIRROR", "http://127.0.0.1:9/")  # never reached
    monkeypatch.setenv("LIGHTSR_HOME", str(tmp_path / "file"))
    with pytest.raises(CacheError, match=rf"^LIGHTSR_HOME={tmp_path / 'file'}: a file stands where the folder "
                                         r"must be; set LIGHTSR_HOME to a writable folder$"):
        hub.fetch(_HASN)
    monkeypatch.setenv("LIGHTSR_HOME", str(tmp_path / "file" / "below"))
    with pytest.raises(CacheError, match=r"a file stands where the folder must be \(.*file\)"):
        hub.fetch(_HASN)
    (tmp_path / "ro").mkdir()
    monkeypatch.setenv("LIGHTSR_HOME", str(tmp_path / "ro" / "cache"))
    deny_writes(monkeypatch, tmp_path / "ro")
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--weights", _HASN]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lightsr: error: LIGHTSR_HOME={tmp_path / 'ro' / 'cache'}: cannot write there (Permission "
                   "denied); set LIGHTSR_HOME to a writable folder"]


def test_profile_takes_a_published_name(mirror, capsys) -> None:
    """`lightsr profile --weights NAME` resolves published names as `upscale` and `eval` do (downloaded once)."""
    import json

    from lightsr.cli import main

    _, requests = mirror
    assert main(["profile", "--weights", "hasn_x4_official", "--json"]) == 0
    prof = json.loads(capsys.readouterr().out)
    ref = lightsr.load_model(require_shared(SHARED_COPIES["hasn_x4_official"]), param_key="params")
    assert (prof["arch"], prof["scale"], prof["params"]) == (ref.arch, 4, ref.num_trainable_params())
    assert len(requests) == 1
