"""Published weights on demand, against a local mirror: download, verify, cache, refuse tampered files.

The mirror is an HTTP server on 127.0.0.1 serving the shared copies of the published checkpoints under their
original file names (``LIGHTSR_HUB_MIRROR``); the cache is a temporary ``LIGHTSR_HOME``.
"""

from __future__ import annotations

import shutil
import threading
import urllib.parse
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

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
