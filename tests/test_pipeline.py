"""The streaming pipeline: many files through one Upscaler with decoding and encoding on worker threads.

The reference is the one-file-at-a-time path, :meth:`Upscaler.upscale_file`, run on the same Upscaler: the
pipeline's outputs must be the same bytes. Memory, order, errors and interrupts are checked on the pipeline's
observable behaviour.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

import lightsr
from lightsr.imageio import ImageData
from lightsr.models.registry import specs
from lightsr.pipeline import Job, Pipeline, WriteOptions, _Budget, run
from lightsr.upscaler import NonFiniteOutputError, Upscaler

SCALE = 2


@pytest.fixture(scope="module")
def net() -> lightsr.SRNet:
    torch.manual_seed(0)
    return lightsr.create_model("lksmn", scale=SCALE, channels=12, num_blocks=1).eval()


@pytest.fixture(scope="module")
def up(net: lightsr.SRNet) -> Upscaler:
    return Upscaler(net)


def _mixed_folder(folder: Path) -> list[Path]:
    """PNG, JPEG (EXIF-rotated), 16-bit colour and gray, RGBA, LA, gray, palette, ICC and DPI, WebP, TIFF, BMP,
    two sizes; a damaged file among them."""
    folder.mkdir()
    rng = np.random.default_rng(0)

    def rgb(h: int, w: int) -> np.ndarray:
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], -1) * 200
        return np.clip(base + rng.random((h, w, 3)) * 55, 0, 255).astype(np.uint8)

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb(20, 28)).save(folder / "a.png", icc_profile=icc, dpi=(300, 300))
    Image.fromarray(rgb(20, 28)).save(folder / "b.jpg", quality=90, exif=exif.tobytes())
    Image.fromarray(np.dstack([rgb(18, 22), rng.integers(0, 256, (18, 22), dtype=np.uint8)])).save(folder / "c.png")
    Image.fromarray(rgb(18, 22)[:, :, 0]).save(folder / "d.png")
    Image.fromarray(np.dstack([rgb(18, 22)[:, :, :1]] * 2), "LA").save(folder / "e.png")
    from lightsr.imageio import ImageData, save_image

    save_image(folder / "f.png", ImageData(rgb(16, 20).astype(np.uint16) * 257 + 3))
    save_image(folder / "g.tif", ImageData(rgb(16, 20)[:, :, :1].astype(np.uint16) * 250))
    Image.fromarray(rgb(20, 28)).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "h.png")
    Image.fromarray(rgb(20, 28)).save(folder / "i.webp", quality=80)
    Image.fromarray(rgb(12, 40)).save(folder / "j.bmp")
    (folder / "k.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return sorted(folder.iterdir())


def test_outputs_are_byte_identical_to_one_file_at_a_time(tmp_path: Path, up: Upscaler) -> None:
    files = _mixed_folder(tmp_path / "in")
    exts = {".tif": ".tif", ".bmp": ".png"}  # and one format change: BMP in, PNG out
    jobs = [Job(f, tmp_path / "pipe" / f"{f.stem}_x2{exts.get(f.suffix, f.suffix)}") for f in files]
    jobs.append(Job(files[2], tmp_path / "pipe" / "c_over_white.jpg"))  # alpha composited into JPEG
    options = WriteOptions(quality=90, background=(255, 255, 255))
    reported = []
    results = run(up, jobs, options, report=reported.append)
    assert [r.job for r in results] == jobs and sorted(id(r) for r in reported) == sorted(id(r) for r in results)
    (bad,) = [r for r in results if not r.ok]
    assert bad.job.src.name == "k.png" and "k.png" in bad.error and "\n" not in bad.error
    (tmp_path / "one").mkdir()
    for job in jobs:
        if job.src.name == "k.png":
            continue
        ref = tmp_path / "one" / job.dst.name
        up.upscale_file(job.src, ref, quality=90, background=(255, 255, 255))
        assert job.dst.read_bytes() == ref.read_bytes(), job.dst.name
    assert len(list((tmp_path / "pipe").iterdir())) == len(jobs) - 1


def test_existing_outputs_and_inputs_are_never_overwritten(tmp_path: Path, up: Upscaler) -> None:
    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(src)
    (tmp_path / "exists.png").write_bytes(b"keep")
    r1, r2, r3 = run(up, [Job(src, tmp_path / "exists.png"), Job(src, src), Job(src, tmp_path / "new.png")])
    assert "exists (use --overwrite)" in r1.error and "is the input" in r2.error and r3.ok
    assert (tmp_path / "exists.png").read_bytes() == b"keep"
    (r,) = run(up, [Job(src, tmp_path / "exists.png")], WriteOptions(overwrite=True))
    assert r.ok and (tmp_path / "exists.png").read_bytes() != b"keep"


def test_memory_in_flight_stays_under_the_budget(tmp_path: Path, net: lightsr.SRNet) -> None:
    """40 images whose pictures (a 20×20 input and its ×2 output, 8-bit RGB) take 6,000 bytes each, under a
    13,000-byte budget: never more than two in flight at once, whatever the speeds of the stages."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(np.full((20, 20, 3), i, np.uint8)).save(folder / f"{i:02d}.png")
    small = Upscaler(net, tile=0, max_memory=13_000)
    pipe = Pipeline(small)
    peak = [0]
    acquire = pipe.budget.acquire

    def watched(n: int) -> None:
        acquire(n)
        peak[0] = max(peak[0], pipe.budget.used)
        time.sleep(0.001)

    pipe.budget.acquire = watched
    results = pipe.run([Job(f, tmp_path / "out" / f.name) for f in sorted(folder.iterdir())])
    assert all(r.ok for r in results) and peak[0] == 12_000 and pipe.budget.used == 0


def test_budget_lets_one_large_picture_through_alone() -> None:
    stop = threading.Event()
    b = _Budget(100, stop)
    b.acquire(500)  # alone: larger than the budget, still allowed
    got = []
    t = threading.Thread(target=lambda: (b.acquire(10), got.append(b.used)))
    t.start()
    t.join(0.3)
    assert t.is_alive() and not got  # waits while the large one is in flight
    b.release(500)
    t.join(5)
    assert got == [10]


class _InterruptAt:
    """The Upscaler, with Ctrl-C arriving while it runs its ``n``-th picture."""

    def __init__(self, up: Upscaler, n: int, folder: Path) -> None:
        self.up, self.n, self.folder, self.calls, self.temporaries = up, n, folder, 0, []

    def __getattr__(self, name: str):
        return getattr(self.up, name)

    def upscale_data(self, data, name=None):
        self.calls += 1
        if self.calls == self.n:
            self.temporaries = [p.name for p in self.folder.iterdir() if ".lightsr-" in p.name]
            raise KeyboardInterrupt
        return self.up.upscale_data(data, name)

    def upscale_batch(self, datas, names=None):
        return [self.upscale_data(d, n) for d, n in zip(datas, names or [None] * len(datas), strict=True)]


def test_an_interrupt_stops_every_stage_and_removes_the_file_being_written(tmp_path: Path, up: Upscaler) -> None:
    from media import make_video

    pytest.importorskip("av")
    clip = make_video(tmp_path / "clip.mkv", n=60)
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(image)
    out = tmp_path / "out"
    out.mkdir()
    before = threading.active_count()
    interrupting = _InterruptAt(up, 31, out)  # the 30th frame of the video
    with pytest.raises(KeyboardInterrupt):
        run(interrupting, [Job(image, out / "a.png"), Job(clip, out / "clip.mkv"), Job(image, out / "b.png")])
    assert [n.startswith(".clip.lightsr-") for n in interrupting.temporaries] == [True]  # it was being written
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # and is gone, with its temporary
    deadline = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before


def test_an_unexpected_error_in_a_stage_reaches_the_caller(tmp_path: Path, up: Upscaler,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import lightsr.upscaler

    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(src)

    def broken(*args, **kwargs):
        raise RuntimeError("encoder bug")

    monkeypatch.setattr(lightsr.upscaler, "save_image", broken)
    with pytest.raises(RuntimeError, match="encoder bug"):
        run(up, [Job(src, tmp_path / f"{i}.png") for i in range(5)])


def test_small_images_run_on_one_thread_and_the_count_comes_back(net: lightsr.SRNet,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Below SMALL_IMAGE pixels the network runs on one PyTorch thread (a team of two gains nothing there and
    stalls beside other work); larger images on the threads set; the setting is restored either way."""
    from lightsr.upscaler import SMALL_IMAGE

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        up = Upscaler(net, tile=0)
        seen: list[int] = []
        forward = up.runtime.forward

        def counting(x):
            seen.append(torch.get_num_threads())
            return forward(x)

        monkeypatch.setattr(up.runtime, "forward", counting)
        side = int(SMALL_IMAGE**0.5)
        for h, w in ((4, 4), (side - 1, side), (side, side)):
            up.upscale(np.zeros((h, w, 3), np.uint8))
            assert torch.get_num_threads() == 2
        assert seen == [1, 1, 2]
    finally:
        torch.set_num_threads(before)


def test_command_line_asks_openmp_for_sleeping_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightsr.threads import passive_waits

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    passive_waits()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice stays
    passive_waits()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


# ------------------------------------------------------------------------------------------------- batches

BATCHED_ARCHS = [s.name for s in specs()]


@pytest.mark.parametrize("arch", BATCHED_ARCHS)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 40), w=st.integers(1, 40), gray=st.booleans(), deep=st.booleans(),
       seed=st.integers(0, 2**16))
def test_a_batch_gives_each_picture_exactly_its_own_output(arch: str, h: int, w: int, gray: bool, deep: bool,
                                                           seed: int) -> None:
    """Reference: upscale_data on each picture alone; a batch must not change one bit (channels, depth, DPI)."""
    up = _batch_upscaler(arch)
    rng = np.random.default_rng(seed)
    dtype, top = (np.uint16, 65535) if deep else (np.uint8, 255)
    datas = [ImageData(rng.integers(0, top + 1, (h, w, 1 if gray else 3)).astype(dtype), dpi=(72.0, 96.0))
             for _ in range(2)]
    assert up.can_batch(*datas)
    outs = up.upscale_batch(datas)
    for d, out in zip(datas, outs, strict=True):
        alone = up.upscale_data(d)
        assert out.pixels.dtype == alone.pixels.dtype and out.dpi == alone.dpi
        np.testing.assert_array_equal(out.pixels, alone.pixels)


_BATCH_UPSCALERS: dict[str, Upscaler] = {}


def _batch_upscaler(arch: str) -> Upscaler:
    if arch not in _BATCH_UPSCALERS:
        torch.manual_seed(0)
        _BATCH_UPSCALERS[arch] = Upscaler(lightsr.create_model(arch, scale=SCALE, channels=12, num_blocks=1).eval())
    return _BATCH_UPSCALERS[arch]


def test_a_batch_at_two_threads_matches_one_picture_at_a_time(up: Upscaler) -> None:
    """Pictures above SMALL_IMAGE run on the Upscaler's threads; the batch still gives each its own bits."""
    rng = np.random.default_rng(3)
    datas = [ImageData(rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)) for _ in range(2)]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        outs = up.upscale_batch(datas)
        for d, out in zip(datas, outs, strict=True):
            np.testing.assert_array_equal(out.pixels, up.upscale_data(d).pixels)
    finally:
        torch.set_num_threads(before)


def test_what_cannot_share_a_pass_is_not_batched(up: Upscaler, net: lightsr.SRNet) -> None:
    rng = np.random.default_rng(4)

    def img(h: int, w: int, c: int, dtype: type = np.uint8) -> ImageData:
        return ImageData(rng.integers(0, 256, (h, w, c)).astype(dtype))

    assert up.can_batch(img(8, 9, 3), img(8, 9, 3))
    assert not up.can_batch(img(8, 9, 3), img(9, 8, 3))  # another size
    assert not up.can_batch(img(8, 9, 3), img(8, 9, 1))  # gray beside colour
    assert not up.can_batch(img(8, 9, 4), img(8, 9, 4))  # alpha runs twice through its own path
    assert not up.can_batch(img(8, 9, 3), img(8, 9, 3, np.uint16))
    tiled = Upscaler(net, tile=8)
    assert not tiled.can_batch(img(8, 9, 3), img(8, 9, 3))  # two of them would not be one tile


def test_the_pipeline_batches_same_size_pictures_and_keeps_their_order(tmp_path: Path, up: Upscaler,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(5)
    for i in range(7):
        shape = (12, 14, 3) if i != 3 else (14, 12, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(src / f"{i}.png")
    sizes: list[int] = []
    real = up.upscale_batch

    def spy(datas, names=None):
        sizes.append(len(datas))
        return real(datas, names)

    monkeypatch.setattr(up, "upscale_batch", spy)
    files = sorted(src.glob("*.png"))
    jobs = [Job(f, tmp_path / "out" / f.name) for f in files]
    (tmp_path / "out").mkdir()
    pipeline = Pipeline(up)
    real_one = up.upscale_data

    def reader_ahead(data, name=None):  # batches are what is ready: let the reader fill the queue first
        deadline = time.monotonic() + 10
        while pipeline.inbox.q.qsize() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        return real_one(data, name)

    monkeypatch.setattr(up, "upscale_data", reader_ahead)
    results = pipeline.run(jobs)
    monkeypatch.setattr(up, "upscale_data", real_one)
    assert [r.job for r in results] == jobs and all(r.ok for r in results)
    assert sizes and max(sizes) == 2
    for f in files:
        ref = tmp_path / "ref" / f.name
        ref.parent.mkdir(exist_ok=True)
        up.upscale_file(f, ref)
        assert (tmp_path / "out" / f.name).read_bytes() == ref.read_bytes()


def test_an_error_in_a_batch_fails_only_its_own_picture(tmp_path: Path, up: Upscaler,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(6)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(src / f"{i}.png")
    real_data = up.upscale_data

    def nan_for_one(data, name=None):
        if name is not None and Path(name).name == "2.png":
            raise NonFiniteOutputError(f"{name}: the network produced NaN/Inf; nothing written")
        return real_data(data, name)

    def batch_fails(datas, names=None):
        if any(Path(n).name == "2.png" for n in names or []):
            raise NonFiniteOutputError("the network produced NaN/Inf")
        return [real_data(d, n) for d, n in zip(datas, names, strict=True)]

    monkeypatch.setattr(up, "upscale_data", nan_for_one)
    monkeypatch.setattr(up, "upscale_batch", batch_fails)
    (tmp_path / "out").mkdir()
    jobs = [Job(f, tmp_path / "out" / f.name) for f in sorted(src.glob("*.png"))]
    results = Pipeline(up).run(jobs)
    assert [r.ok for r in results] == [True, True, False, True]
    assert "2.png" in results[2].error and "\n" not in results[2].error
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "3.png"]


def test_a_size_whose_batch_is_not_exact_runs_one_picture_at_a_time(net: lightsr.SRNet,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend whose batched kernels sum in another order (simulated: a batch's outputs move by 1e-7): the
    first batch of the size is compared with single pictures and gives theirs, later ones are not batched."""
    up = Upscaler(net)
    real = up._forward_fn
    batch_sizes: list[int] = []

    def forward_fn(what: str, streamed: bool = False):
        fn = real(what, streamed)

        def run(t: torch.Tensor, seams: tuple) -> torch.Tensor:
            batch_sizes.append(t.shape[0])
            y = fn(t, seams)
            return y + 1e-7 if t.shape[0] > 1 else y

        return run

    monkeypatch.setattr(up, "_forward_fn", forward_fn)
    rng = np.random.default_rng(7)
    datas = [ImageData(rng.integers(0, 65536, (9, 11, 3)).astype(np.uint16)) for _ in range(4)]
    reference = [Upscaler(net).upscale_data(d).pixels for d in datas]
    first, second = up.upscale_batch(datas[:2]), up.upscale_batch(datas[2:])
    for out, ref in zip(first + second, reference, strict=True):
        np.testing.assert_array_equal(out.pixels, ref)
    assert batch_sizes == [2, 1, 1, 1, 1]  # one batch, checked against both pictures; then one at a time
    other = [ImageData(rng.integers(0, 256, (12, 11, 3), dtype=np.uint8)) for _ in range(2)]
    up.upscale_batch(other)
    assert batch_sizes[5:] == [2, 1, 1]  # another size is checked on its own
