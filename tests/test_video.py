"""Video through PyAV: frames decoded, upscaled one by one and encoded; timestamps, audio, subtitles, rotation
and colour range kept; bad inputs and failed writes leave nothing behind.

Videos are generated here (``media.make_video``). The reference for each output frame is the network on that
decoded input frame alone (``Upscaler.upscale``), compared exactly through a lossless RGB codec (FFV1).
"""

from __future__ import annotations

import resource
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightsr
from lightsr.errors import UsageError
from lightsr.pipeline import Job, WriteOptions, run
from lightsr.upscaler import Upscaler
from lightsr.video import VideoError, VideoOptions, VideoReader, VideoWriter, probe, resolve_options
from media import decode, make_video, packets

av = pytest.importorskip("av")

SCALE = 4
LOSSLESS = VideoOptions(codec="ffv1", pix_fmt="bgr0")


@pytest.fixture(scope="module")
def net() -> lightsr.SRNet:
    torch.manual_seed(0)
    return lightsr.create_model("lksmn", scale=SCALE, channels=12, num_blocks=1).eval()


@pytest.fixture(scope="module")
def up(net: lightsr.SRNet) -> Upscaler:
    return Upscaler(net, tile=0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seconds at 25 fps, 32×24, H.264 with an AAC tone, in MP4."""
    return make_video(tmp_path_factory.mktemp("v") / "clip.mp4", n=50)


def _no_temporaries(folder: Path) -> bool:
    return not any(".lightsr-" in p.name for p in folder.iterdir())


def test_two_second_video_keeps_frames_timestamps_and_audio(tmp_path: Path, up: Upscaler, clip: Path) -> None:
    dst = tmp_path / "clip_x4.mp4"
    (r,) = run(up, [Job(clip, dst)])
    assert r.ok and r.frames == 50
    frames, times = decode(dst)
    in_times = decode(clip)[1]
    assert len(frames) == 50 and times == in_times  # exactly, as fractions of a second
    assert frames[0].shape == (24 * SCALE, 32 * SCALE, 3)
    assert packets(dst, "audio") == packets(clip, "audio") and len(packets(clip, "audio")) > 50
    info = probe(dst)
    assert (info.codec, info.rate) == ("h264", Fraction(25))
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    # H.264 (crf 18) of the untrained network's noisy output: near it (the exact check is lossless, below).
    psnr = [10 * np.log10(255**2 / np.mean((f.astype(float) - up.upscale(g.pixels)) ** 2)) for f, g in
            zip(frames[::10], _input_frames(clip)[::10], strict=True)]
    assert min(psnr) > 18


def _input_frames(path: Path, **kwargs) -> list:
    """The input's frames as lightsr decodes them (the reader is checked against FFmpeg below)."""
    with VideoReader(path, VideoOptions(**kwargs)) as r:
        return list(r)


def test_each_frame_is_the_network_on_that_frame_alone(tmp_path: Path, up: Upscaler, clip: Path) -> None:
    dst = tmp_path / "clip_x4.mkv"
    (r,) = run(up, [Job(clip, dst)], WriteOptions(video=LOSSLESS))
    assert r.ok
    frames, times = decode(dst)  # bgr0 → rgb24: a reordering, no conversion
    originals = _input_frames(clip)
    # Matroska holds no negative time: the AAC priming before 0 moves every stream later by 1024/48000 s (as
    # ffmpeg's remuxing does); frames keep their spacing.
    in_times = decode(clip)[1]
    assert len(frames) == len(originals) == 50 and times == [t + times[0] for t in in_times]
    assert times[0] == Fraction(21, 1000)
    for got, original in zip(frames, originals, strict=True):
        assert np.array_equal(got, up.upscale(original.pixels))
    assert packets(dst, "audio") == packets(clip, "audio")


def test_variable_frame_rate_rotation_and_full_range_are_kept(tmp_path: Path, up: Upscaler) -> None:
    pts = [0, 40, 80, 200, 240, 250, 400, 430, 520, 700]  # milliseconds: no constant rate
    src = make_video(tmp_path / "vfr.mp4", n=len(pts), pts=pts, time_base=Fraction(1, 1000), rotation=90,
                     full_range=True)
    dst = tmp_path / "vfr_x4.mp4"
    assert run(up, [Job(src, dst)])[0].ok
    assert decode(dst)[1] == decode(src)[1] == [Fraction(p, 1000) for p in pts]
    with av.open(str(dst)) as c:
        first = next(c.decode(video=0))
        assert first.rotation == 90 and first.color_range == 2  # JPEG (full) range
    with av.open(str(src)) as c:
        assert next(c.decode(video=0)).rotation == 90


def test_frame_range_cuts_video_and_audio_alike(tmp_path: Path, up: Upscaler, clip: Path) -> None:
    dst = tmp_path / "part.mkv"
    (r,) = run(up, [Job(clip, dst)], WriteOptions(video=VideoOptions(codec="ffv1", pix_fmt="bgr0", start=10,
                                                                      stop=30)))
    assert r.ok and r.frames == 20
    frames, times = decode(dst)
    in_times = decode(clip)[1]
    assert times == [t - in_times[10] + times[0] for t in in_times[10:30]] and times[0] < Fraction(1, 10)
    originals = _input_frames(clip, start=10, stop=30)
    assert all(np.array_equal(f, up.upscale(g.pixels)) for f, g in zip(frames[::7], originals[::7], strict=True))
    with av.open(str(dst)) as c:
        a = c.streams.audio[0]
        audio_times = [float(p.pts * a.time_base) for p in c.demux(a) if p.size]
    assert audio_times and -0.05 < min(audio_times) and max(audio_times) < 0.8  # 0.4 s to 1.2 s of the input
    assert 0.7 < max(audio_times)


def test_subtitles_copied_into_mkv_and_refused_for_mp4_before_any_frame(tmp_path: Path, up: Upscaler) -> None:
    src = make_video(tmp_path / "subs.mkv", n=10, subtitles=True)
    ok, refused = tmp_path / "subs_x4.mkv", tmp_path / "subs_x4.mp4"
    r1, r2 = run(up, [Job(src, ok), Job(src, refused)])
    assert r1.ok and packets(ok, "subtitle") == packets(src, "subtitle") == [b"line 0", b"line 1"]
    assert not r2.ok and r2.frames == 0 and "subtitle stream" in r2.error and "\n" not in r2.error
    assert not refused.exists() and _no_temporaries(tmp_path)


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        a = out.add_stream("aac", rate=48000)
        a.layout = "mono"
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 48000, 0
        for p in [*a.encode(f), *a.encode()]:
            out.mux(p)
    return path


def test_bad_videos_are_one_line_each_and_the_others_still_run(tmp_path: Path, up: Upscaler, clip: Path) -> None:
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"  # MP4 keeps its index at the end: cut, it has none
    cut.write_bytes(data[: len(data) // 2])
    fast = make_video(tmp_path / "fast.mkv", n=50, seed=3)  # Matroska: frames are found without an index
    short = tmp_path / "short.mkv"
    short.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    sound = _audio_only(tmp_path / "sound.mp4")
    odd = make_video(tmp_path / "odd.avi", n=3, codec="mpeg4", audio=False, container="avi")
    unknown = tmp_path / "unknown.avi"  # a codec tag no decoder claims
    unknown.write_bytes(odd.read_bytes().replace(b"FMP4", b"QQZ9"))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    bad = [cut, sound, unknown, empty]
    jobs = [Job(p, tmp_path / "out" / f"{p.stem}_x4.mp4") for p in (*bad, clip)]
    results = run(up, jobs, WriteOptions(video=VideoOptions(crf=30)))
    for r in results[:-1]:
        assert not r.ok and str(r.job.src) in r.error and "\n" not in r.error, r.error
    assert "no video stream" in results[1].error and "cannot be decoded" in results[2].error
    assert results[-1].ok and results[-1].frames == 50
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip_x4.mp4"]
    # A stream cut in the middle decodes up to the cut; what the file states then says it is incomplete where
    # it states a frame count (MP4) — Matroska states none, and its output has the frames that were there.
    (r,) = run(up, [Job(short, tmp_path / "short_x4.mkv")], WriteOptions(video=LOSSLESS))
    assert r.ok and 0 < r.frames < 50


def test_unwritable_output_and_disk_full_mid_video_leave_nothing(tmp_path: Path, up: Upscaler, clip: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import deny_writes

    locked = tmp_path / "locked"
    locked.mkdir()
    with monkeypatch.context() as m:
        deny_writes(m, locked)
        r1, r2 = run(up, [Job(clip, locked / "a.mp4"), Job(clip, tmp_path / "b.mp4")])
    assert not r1.ok and "cannot write" in r1.error and str(locked / "a.mp4") in r1.error
    assert r2.ok and not any(locked.iterdir())
    # Disk full: the kernel refuses writes past a file size (RLIMIT_FSIZE; Python ignores SIGXFSZ), here
    # after 100 kB of a lossless video of ~1 MB.
    full = tmp_path / "full"
    full.mkdir()
    image = tmp_path / "small.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        r3, r4 = run(up, [Job(clip, full / "big.mkv"), Job(image, full / "small.png")],
                     WriteOptions(video=LOSSLESS))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert not r3.ok and "cannot write" in r3.error and "\n" not in r3.error and 0 < r3.frames < 50, r3
    assert r4.ok
    assert sorted(p.name for p in full.iterdir()) == ["small.png"]


def test_options_are_checked_before_any_frame(tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    assert resolve_options(out, VideoOptions()) == VideoOptions("libx264", 18, None, "yuv420p")
    assert resolve_options(tmp_path / "o.webm", VideoOptions()).codec == "libvpx-vp9"
    for opts, words in ((VideoOptions(codec="nope"), "--codec nope"), (VideoOptions(codec="aac"), "audio codec"),
                        (VideoOptions(codec="libvpx-vp9", crf=99), "--crf 99"),
                        (VideoOptions(pix_fmt="rgb24"), "--pix-fmt rgb24"),
                        (VideoOptions(crf=20, bitrate=10**6), "choose one"),
                        (VideoOptions(codec="mpeg4", crf=20), "no constant-quality")):
        with pytest.raises(UsageError, match=words):
            resolve_options(out, opts)
    with pytest.raises(UsageError, match="webm files cannot hold libx264"):
        resolve_options(tmp_path / "o.webm", VideoOptions(codec="libx264"))


def test_reader_converts_with_the_streams_range_and_without_drift(tmp_path: Path) -> None:
    """Full-range and limited-range encodings of the same pictures read back as the same RGB (within the
    codec's loss): the range the stream states is used. Through 4:2:0 and back, pictures keep their level (with
    swscale's default flags they darken by about a level)."""
    a = make_video(tmp_path / "full.mkv", n=3, codec="ffv1", audio=False, full_range=True)
    b = make_video(tmp_path / "tv.mkv", n=3, codec="ffv1", audio=False)
    with VideoReader(a) as ra, VideoReader(b) as rb:
        for fa, fb in zip(ra, rb, strict=True):
            assert np.abs(fa.pixels.astype(int) - fb.pixels).max() <= 4
    rgb = np.clip(np.stack(np.mgrid[0:48, 0:64], -1).sum(-1)[..., None] * [2, 1, 3] % 256, 0, 255).astype(np.uint8)
    write = tmp_path / "round.mkv"
    with VideoReader(b) as r, VideoWriter(write, r, VideoOptions(codec="ffv1"), 64, 48) as w:
        for p in r:
            w.write(rgb, p.pts, p.duration)
    back = np.stack([p.pixels for p in _input_frames(write)]).astype(float)
    assert abs((back - rgb).mean()) < 0.2
    with pytest.raises(VideoError, match="no such file"):
        VideoReader(tmp_path / "missing.mp4")


# ------------------------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def weights(net: lightsr.SRNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lightsr.save_model(net, tmp_path_factory.mktemp("w") / "tiny_x4.safetensors")


def test_command_line_batch_of_videos_images_and_bad_files(tmp_path: Path, weights: Path, clip: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    from lightsr.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(clip.read_bytes())
    (folder / "cut.mp4").write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    _audio_only(folder / "sound.m4v")
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(folder / "still.png")
    code = main(["upscale", str(folder), "-o", str(tmp_path / "out"), "--weights", str(weights), "--tile", "0",
                 "--crf", "28"])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("lightsr: error:")]
    assert code == 1 and len(errors) == 2, err
    assert any("cut.mp4" in ln for ln in errors) and any("sound.m4v: has no video stream" in ln for ln in errors)
    assert "2/4 files (51 frames) upscaled ×4" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip_x4.mp4", "still_x4.png"]
    # Options no encoder takes are refused before the model loads, in one line.
    assert main(["upscale", str(clip), "-o", str(tmp_path / "x.webm"), "--weights", str(weights),
                 "--codec", "libx264"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "lightsr: error: --codec libx264: .webm files cannot hold libx264 video; choose another codec or container"]


def test_sigterm_mid_video_leaves_nothing(tmp_path: Path, weights: Path) -> None:
    """The real command in a child process, terminated while it writes a video: status 143, one line, neither
    the video nor its temporary."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src = make_video(tmp_path / "long.mkv", n=400, w=64, h=48, codec="ffv1", audio=False)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(lightsr.__file__).parents[1])}
    child = subprocess.Popen([sys.executable, "-m", "lightsr", "upscale", str(src), "-o", str(out / "long_x4.mkv"),
                              "--weights", str(weights), "--tile", "0", "--codec", "ffv1", "-q"],
                             stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    temporaries: list[Path] = []
    while time.monotonic() < deadline and child.poll() is None:
        temporaries = [p for p in out.iterdir() if ".lightsr-" in p.name and p.stat().st_size > 0]
        if temporaries:
            break
        time.sleep(0.01)
    assert temporaries, "the video was never being written"
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143 and err == "lightsr: terminated (SIGTERM)\n"
    assert list(out.iterdir()) == []
