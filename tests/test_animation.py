"""Animated GIF, WebP and APNG: frames read as a viewer shows them, upscaled one by one, written back with their
durations, loop count and disposal.

The reference for every frame is the network on that frame alone (``Upscaler.upscale`` of the array Pillow
decodes); the timing is checked against what the generator wrote.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightsr
from lightsr.animation import NONE, AnimationInfo, AnimationReadError, Frame, probe, read_frames, write_animation
from lightsr.pipeline import Job, WriteOptions, run
from lightsr.upscaler import Upscaler
from lightsr.video import VideoOptions
from media import frames_rgba, save_animation

SCALE = 2


@pytest.fixture(scope="module")
def net() -> lightsr.SRNet:
    torch.manual_seed(0)
    return lightsr.create_model("lksmn", scale=SCALE, channels=12, num_blocks=1).eval()


@pytest.fixture(scope="module")
def up(net: lightsr.SRNet) -> Upscaler:
    return Upscaler(net, tile=0)


def _viewer_frames(path: Path) -> tuple[list[np.ndarray], list[float], object]:
    """What Pillow shows of each frame (RGBA, colour under alpha = 0 zeroed), durations and loop."""
    frames, durations = [], []
    with Image.open(path) as im:
        loop = im.info.get("loop")
        for i in range(im.n_frames):
            im.seek(i)
            f = np.asarray(im.convert("RGBA")).copy()
            f[f[..., 3] == 0] = 0
            frames.append(f)
            durations.append(im.info["duration"])
    return frames, durations, loop


def test_gif_of_20_frames_round_trips_with_count_durations_and_loop(tmp_path: Path, up: Upscaler) -> None:
    durations = [30 + 10 * (i % 7) for i in range(20)]
    src = save_animation(tmp_path / "anim.gif", frames_rgba(20), durations, loop=3, disposal=2)
    dst = tmp_path / "anim_x2.gif"
    (result,) = run(up, [Job(src, dst)])
    assert result.ok and result.frames == 20
    frames, got_durations, loop = _viewer_frames(dst)
    assert len(frames) == 20 and got_durations == durations and loop == 3
    assert frames[0].shape == (12 * SCALE, 16 * SCALE, 4)
    # Each frame: the network's output for that frame alone, within the GIF palette's quantisation, with the
    # transparent pixels where alpha (bicubic, binarised at 128) says.
    for shown, original in zip(frames, _viewer_frames(src)[0], strict=True):
        ref = up.upscale(original)
        opaque = ref[..., 3] >= 128
        assert np.array_equal(shown[..., 3] == 255, opaque)
        assert np.abs(shown[opaque][:, :3].astype(int) - ref[opaque][:, :3]).mean() < 8


def test_apng_frames_equal_the_network_on_each_frame_alone(tmp_path: Path, up: Upscaler) -> None:
    frames = [f[..., :3].copy() for f in frames_rgba(6, seed=1)]
    src = save_animation(tmp_path / "anim.png", frames, [40, 50, 60, 70, 80, 90], loop=0)
    dst = tmp_path / "anim_x2.png"
    assert run(up, [Job(src, dst)])[0].ok
    info = probe(dst)
    assert info is not None and info.n_frames == 6 and info.loop == 0 and not info.alpha
    out = list(read_frames(dst))
    assert [f.duration for f in out] == [40, 50, 60, 70, 80, 90]
    for got, original in zip(out, frames, strict=True):
        assert np.array_equal(got.pixels, up.upscale(original))


def test_webp_keeps_count_durations_loop_and_alpha(tmp_path: Path, up: Upscaler) -> None:
    src = save_animation(tmp_path / "anim.webp", frames_rgba(5, seed=2), [50, 60, 70, 80, 90], loop=2)
    dst = tmp_path / "anim_x2.webp"
    assert run(up, [Job(src, dst)])[0].ok
    info = probe(dst)
    assert info is not None and (info.n_frames, info.loop, info.alpha) == (5, 2, True)
    assert [f.duration for f in read_frames(dst)] == [50, 60, 70, 80, 90]


def test_gif_disposal_kept_and_uncovered_pixels_show_background(tmp_path: Path) -> None:
    """Frames are written whole: "do not dispose" is kept unless the next frame uncovers a pixel, which needs
    "restore to background"; transparency may start after the first frame. A viewer (Pillow) shows exactly the
    frames given."""
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 0], a[..., 3] = 200, 255
    b = a.copy()
    b[0, 0] = 0  # uncovers a pixel
    c = b.copy()
    c[3, 3, :3] = (0, 90, 0)  # only changes a colour
    info = AnimationInfo("GIF", 4, 4, 3, True, 0)
    frames = [Frame(f, 100, NONE) for f in (a, b, c)]
    assert write_animation(tmp_path / "out.gif", iter(frames), info) == 3
    with Image.open(tmp_path / "out.gif") as im:
        disposals = []
        for i in range(3):
            im.seek(i)
            disposals.append(im.disposal_method)
    assert disposals[:2] == [2, 1]
    shown, durations, loop = _viewer_frames(tmp_path / "out.gif")
    assert durations == [100, 100, 100] and loop == 0
    for got, want in zip(shown, (a, b, c), strict=True):
        want = want.copy()
        want[want[..., 3] == 0] = 0
        assert np.array_equal(got, want)


def test_frame_range_and_the_bound_on_frames_held(tmp_path: Path, net: lightsr.SRNet, up: Upscaler) -> None:
    src = save_animation(tmp_path / "anim.gif", frames_rgba(8), [50] * 8, loop=0)
    dst = tmp_path / "part.gif"
    (r,) = run(up, [Job(src, dst)], WriteOptions(video=VideoOptions(start=2, stop=5)))
    assert r.ok and r.frames == 3 and probe(dst).n_frames == 3
    # GIF, WebP and APNG writers hold every frame: frames × output pixels are bounded by max_output_pixels.
    small = Upscaler(net, tile=0, max_output_pixels=7 * (12 * SCALE) * (16 * SCALE))
    (r,) = run(small, [Job(src, tmp_path / "big.gif")])
    assert not r.ok and "8 frames of 32×24" in r.error and "\n" not in r.error
    assert not (tmp_path / "big.gif").exists() and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_damaged_animation_is_one_line_and_leaves_nothing(tmp_path: Path, up: Upscaler) -> None:
    src = save_animation(tmp_path / "anim.gif", frames_rgba(10), [50] * 10, loop=0)
    data = src.read_bytes()
    cut = tmp_path / "cut.gif"
    cut.write_bytes(data[: len(data) * 2 // 3])
    good = save_animation(tmp_path / "ok.gif", frames_rgba(3, seed=5), [50] * 3, loop=0)
    results = run(up, [Job(cut, tmp_path / "cut_x2.gif"), Job(good, tmp_path / "ok_x2.gif")])
    assert not results[0].ok and str(cut) in results[0].error and "\n" not in results[0].error
    assert results[1].ok and (tmp_path / "ok_x2.gif").exists()
    assert not (tmp_path / "cut_x2.gif").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.gif", "cut.gif", "ok.gif", "ok_x2.gif"]
    with pytest.raises(AnimationReadError, match="no such file"):
        probe(tmp_path / "missing.gif")
