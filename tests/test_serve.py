"""``lightsr serve`` through its HTTP API (gradio_client), on 127.0.0.1 at a free port.

The page must give the bytes ``lightsr upscale`` writes, report bad files and over-limit images as errors while
the server keeps serving, queue concurrent jobs, serve no file outside its own folder, and remove its files when
it stops.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

import lightsr  # noqa: E402
from lightsr.cli import main  # noqa: E402
from lightsr.serve import model_entries, start  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = lightsr.create_model(lightsr.list_models()[0], scale=2, channels=12, num_blocks=1).eval()
    return lightsr.save_model(net, tmp_path_factory.mktemp("w") / "tiny_x2.safetensors")


@pytest.fixture(scope="module")
def server(tiny):
    srv = start([str(tiny)], host="127.0.0.1", port=_free_port(), block=False, device="cpu", max_pixels=20_000)
    yield srv
    srv.close()
    assert not srv.workdir.exists()  # uploads and outputs removed with the server


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server.url, verbose=False)


def _label(tiny: Path) -> str:
    return next(e.label for e in model_entries([str(tiny)]) if e.weights == str(tiny.resolve()))


def _photo(path: Path, w: int = 40, h: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 5, y * 7, (x + y) * 3], -1) + rng.integers(0, 30, (h, w, 3))
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)
    return path


def _upscale(client, tiny: Path, path: Path, tiling: str = "off"):
    return client.predict([gradio_client.handle_file(str(path))], _label(tiny), "fp32", tiling, 256,
                          api_name="/upscale")


def test_the_page_gives_the_bytes_of_lightsr_upscale(server, client, tiny, tmp_path):
    src = _photo(tmp_path / "photo.png")
    slider, crop, files = _upscale(client, tiny, src)
    assert len(files) == 1 and Path(files[0]).name == "photo_x2.png"
    # The upload and the output live in the server's own folder (removed when it stops).
    assert list((server.workdir / "uploads").rglob("photo.png"))
    assert list((server.workdir / "outputs").rglob("photo_x2.png"))
    assert main(["upscale", str(src), "-o", str(tmp_path / "cli.png"), "--weights", str(tiny), "--tile", "0",
                 "--device", "cpu", "-q"]) == 0
    assert Path(files[0]).read_bytes() == (tmp_path / "cli.png").read_bytes()
    assert slider is not None and crop is not None


def test_bad_inputs_are_messages_and_the_server_keeps_serving(client, tiny, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(Exception, match=r"^broken\.png: "):  # the name, not the server's folders
        _upscale(client, tiny, tmp_path / "broken.png")
    big = _photo(tmp_path / "big.png", 200, 150)  # 30,000 pixels: over the server's 20,000
    with pytest.raises(Exception, match="exceeds the limit"):
        _upscale(client, tiny, big)
    _, _, files = _upscale(client, tiny, _photo(tmp_path / "fine.png"))  # still serving
    assert Path(files[0]).is_file()


def test_concurrent_requests_both_finish(client, tiny, tmp_path):
    jobs = [client.submit([gradio_client.handle_file(str(_photo(tmp_path / f"c{i}.png", seed=i)))], _label(tiny),
                          "fp32", "size", 16, api_name="/upscale") for i in range(2)]
    outs = [job.result(timeout=300) for job in jobs]
    assert [Path(o[2][0]).name for o in outs] == ["c0_x2.png", "c1_x2.png"]


def test_no_file_outside_the_servers_folder_is_served(server):
    for target in ("/etc/passwd", os.path.abspath(__file__)):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{server.url}gradio_api/file={target}", timeout=30)
        assert e.value.code in (403, 404)


def test_compare_tab_reports_psnr(client, tiny, tmp_path):
    hr = _photo(tmp_path / "hr.png", 64, 48)
    figure, scores = client.predict(gradio_client.handle_file(str(hr)), [_label(tiny)], 2, api_name="/compare")
    assert Path(figure).is_file()
    lines = scores.splitlines()
    assert lines[0].startswith("bicubic: ") and lines[0].endswith(" dB") and len(lines) == 2


def test_missing_gradio_is_one_line(monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def no_gradio(name, *a, **k):
        if name == "gradio" or name.startswith("gradio."):
            raise ImportError("No module named 'gradio'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_gradio)
    assert main(["serve", "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lightsr: error: lightsr serve needs Gradio: pip install \"lightsr[web]\"")


# ------------------------------------------------------------------- untrusted ports, uploads and mirrors


def test_a_busy_port_and_bad_options_are_one_line_before_starting(capsys, tmp_path):
    before = _workdirs()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"lightsr: error: --port {port}: already in use on 127.0.0.1; stop the program using it or "
                       f"choose another port (e.g. --port {port + 1})"]
    for args, says in ((["--host", "no-such-host.invalid"], "--host no-such-host.invalid: not an address of this "
                                                            "computer"),
                       (["--device", "cuda:7"], "cuda:7"),
                       (["--max-memory", "lots"], "--max-memory 'lots': expected a size"),
                       (["--max-upload-size", "huge"], "--max-upload-size 'huge': expected a size"),
                       (["--weights", str(tmp_path / "nope.pth")], "no such file")):
        assert main(["serve", "--port", str(_free_port()), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lightsr: error: ") and says in err[0], (args, err)
        assert _workdirs() <= before  # nothing was started


def _workdirs() -> set[Path]:
    import tempfile

    return set(Path(tempfile.gettempdir()).glob("lightsr-serve-*"))


def _post_upload(url: str, name: str, data: bytes) -> int:
    """POST one file to the server's upload route as the page does (multipart); the HTTP status."""
    boundary = "lightsrtestboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{url}gradio_api/upload", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_uploads_are_capped(server, client, tiny, tmp_path):
    """Default: an uncompressed 16-bit RGBA image of --max-pixels (20,000 here) plus 1 MiB. The server refuses
    a larger file while it streams in (nothing stored); the page's client refuses it before sending."""
    from lightsr.serve import default_upload_limit

    limit = default_upload_limit(20_000)
    assert limit == 20_000 * 8 + (1 << 20)
    assert _post_upload(server.url, "huge.png", b"\0" * (limit + 1)) == 413
    assert not list((server.workdir / "uploads").rglob("huge.png"))
    assert _post_upload(server.url, "fits.png", b"\0" * 1000) == 200
    huge = tmp_path / "huge.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (520, 800, 3), dtype=np.uint8)).save(huge, compress_level=0)
    assert huge.stat().st_size > limit
    with pytest.raises(Exception, match=r"exceeds the maximum file size"):
        _upscale(client, tiny, huge)
    _, _, files = _upscale(client, tiny, _photo(tmp_path / "small.png"))  # still serving
    assert Path(files[0]).is_file()


def test_a_stalled_download_holds_up_no_other_job(client, tiny, tmp_path, monkeypatch):
    """A job for published weights whose mirror stalls waits for its download; a job for another model runs
    meanwhile. Once the mirror gives up, the first job fails with one line and leaves nothing behind."""
    import hostile_http
    from lightsr.hub import published

    name = sorted(published())[0]
    entry = published()[name][1]
    with hostile_http.HostileServer() as mirror:
        # One byte a second: within every read timeout, so only the app's deadline (300 s) or the test ends it.
        mirror.default = hostile_http.drip(hostile_http.head(length=entry.size), interval=1.0)
        monkeypatch.setenv("LIGHTSR_HUB_MIRROR", mirror.url)  # read when the server downloads
        monkeypatch.setenv("LIGHTSR_HOME", str(tmp_path / "cache"))
        label = next(e.label for e in model_entries() if e.weights == name)
        photo = _photo(tmp_path / "p.png", seed=3)
        stalled = client.submit([gradio_client.handle_file(str(photo))], label, "fp32", "off", 256,
                                api_name="/upscale")
        assert mirror.stalled.wait(120), "the download never started"
        _, _, files = _upscale(client, tiny, photo)  # another model's job, while the download stalls
        assert Path(files[0]).is_file()
        assert not stalled.done()
        mirror.release.set()
        with pytest.raises(Exception) as e:
            stalled.result(timeout=120)
    msg = str(e.value)
    assert msg.startswith(f"{name}: ") and f"bytes, not the {entry.size}" in msg and "\n" not in msg, msg
    assert list((tmp_path / "cache").iterdir()) == []


def test_short_videos_and_animations_and_the_frame_limit(tiny, tmp_path):
    """Videos come out as MP4 with their frames and audio, animations in their format; the previews show a video's
    first frame; an animation or video longer than --max-frames is refused before any work."""
    pytest.importorskip("av")
    from lightsr.errors import UsageError
    from lightsr.serve import WebApp
    from media import decode, frames_rgba, make_video, packets, save_animation

    app = WebApp(model_entries([str(tiny)]), tmp_path / "work", device="cpu", max_frames=30)
    clip = make_video(tmp_path / "clip.mov", n=12)
    anim = save_animation(tmp_path / "a.gif", frames_rgba(4), [50] * 4)
    seen: list[str] = []
    outputs, (before, after), crop = app.upscale([str(clip), str(anim)], _label(tiny), "fp32", 0,
                                                 on_progress=lambda f, desc: seen.append(desc))
    assert [p.name for p in outputs] == ["clip_x2.mp4", "a_x2.gif"]
    frames, times = decode(outputs[0])
    assert len(frames) == 12 and times == decode(clip)[1] and packets(outputs[0], "audio") == packets(clip, "audio")
    with Image.open(outputs[1]) as im:
        assert im.n_frames == 4 and im.size == (32, 24)
    assert after.size == (64, 48) and before.size == after.size and crop is not None
    assert "clip.mov: frames 12/12" in seen
    longer = make_video(tmp_path / "long.mp4", n=40, audio=False)
    with pytest.raises(UsageError, match=r"long\.mp4: 40 frames; the page upscales up to 30"):
        app.upscale([str(longer)], _label(tiny), "fp32", 0)
