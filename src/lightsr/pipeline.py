"""Many files through one :class:`lightsr.Upscaler`: images, animations and videos in one stream.

Three stages run at once, each on its own thread, joined by bounded queues::

    reader thread            caller's thread          writer thread
    decode file k+1   →→→    network on file k   →→→  encode + write file k-1

The network (whose own threads do the heavy work) never waits for a PNG to be compressed or a frame to be
decoded: Pillow, PyAV and zlib release the GIL while they work. Files are read and written in the order given.
Memory stays bounded however many files there are: at most :data:`QUEUE_ITEMS` pictures wait in each queue, and
the pictures in flight (decoded inputs and their outputs) are held under a byte budget (the Upscaler's
``max_memory``; one picture larger than that runs alone). Videos and animations move through the queues frame by
frame; a video is never held in memory.

Per file, everything :meth:`lightsr.Upscaler.upscale_file` promises still holds: the checks before decoding
(header sizes, the output's size), atomic writes, alpha/16-bit/ICC/EXIF, and a one-line error for a bad file
that lets the others run (:class:`Result`). Images come out byte-identical to ``upscale_file``'s: the same calls
on the same pixels, except that pictures of one size waiting together go through the network as one batch
(:meth:`lightsr.Upscaler.upscale_batch`, which gives each picture its own output bit for bit). Ctrl-C and
SIGTERM stop all three stages; the file being written is removed.

The Upscaler is used through its public methods only (:class:`Upscales`): a file's three steps are its
``read_file``, ``upscale_data`` and ``write_file``, the steps of ``upscale_file``.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lightsr._files import WriteCancelled, cancelled_by
from lightsr.animation import AnimationInfo, Frame, probe, read_frames, write_animation
from lightsr.errors import LightSRError, UsageError
from lightsr.formats import ANIMATED_FORMATS, DEFAULT_MAX_PIXELS, VIDEO_CONTAINERS
from lightsr.imageio import ImageData, format_for
from lightsr.video import VideoOptions, is_video

# Pictures waiting in each queue: enough to keep every stage busy, few enough to bound memory for tiny files.
QUEUE_ITEMS = 4
# Pictures run through the network at once when they can (Upscaler.can_batch): two measured faster per picture
# than one on 2 CPU threads, four slower than two (benchmarks/README.md, "Many files").
BATCH = 2


@dataclass(frozen=True)
class Job:
    """One input file and the output it is written to."""

    src: Path
    dst: Path


@dataclass(frozen=True)
class WriteOptions:
    """What :meth:`lightsr.Upscaler.upscale_file` takes besides the two paths, and how videos are encoded."""

    overwrite: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    quality: int = 95
    background: tuple[int, int, int] | None = None
    video: VideoOptions = field(default_factory=VideoOptions)


class Upscales(Protocol):
    """What the pipeline uses of :class:`lightsr.Upscaler`."""

    scale: int
    max_output_pixels: int | None

    @property
    def max_memory(self) -> int:
        """Bytes the pictures in flight may take."""

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The size of an ``height × width`` input's output."""

    def check_output_size(self, height: int, width: int, name: str = "") -> None:
        """Refuse, naming ``name``, an input whose output would be too large."""

    def check_destination(self, src: Path, dst: Path, overwrite: bool = False) -> None:
        """Refuse writing ``dst`` (it is ``src``, or it exists and ``overwrite`` is off)."""

    def read_file(self, src: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageData:
        """Decode an image file, after the header checks."""

    def upscale_data(self, data: ImageData, name: Any = None) -> ImageData:
        """Upscale decoded pixels (``name``: the file they came from, for errors)."""

    def can_batch(self, first: ImageData, other: ImageData) -> bool:
        """Whether ``other`` may join ``first`` in one :meth:`upscale_batch`."""

    def upscale_batch(self, datas: Sequence[ImageData], names: Sequence[Any] | None = None) -> list[ImageData]:
        """``upscale_data`` of each, the same outputs, in one pass of the network."""

    def write_file(self, dst: Path, result: ImageData, source: ImageData, src: Any = "", quality: int = 95,
                   background: tuple[int, int, int] | None = None) -> Path:
        """Write an upscaled image as ``upscale_file`` does."""


@dataclass
class Result:
    """What became of a job: ``error`` is the one line to report (None when written), ``exception`` the
    :class:`lightsr.errors.LightSRError` it came from; ``frames``: pictures upscaled (1 for an image)."""

    job: Job
    error: str | None = None
    frames: int = 0
    exception: LightSRError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _Stopped(Exception):
    """The pipeline is shutting down (an interrupt, or the caller's stage failed)."""


class _JobFailed(Exception):
    """Raised inside a writer's frame stream when the job failed upstream."""

    def __init__(self, error: LightSRError) -> None:
        super().__init__(str(error))
        self.error = error


# ------------------------------------------------------------------------------------------- queues and budget


class _Budget:
    """Bytes of pictures in flight, at most ``limit`` (a single larger picture is let through alone)."""

    def __init__(self, limit: int, stop: threading.Event) -> None:
        self.limit, self.used, self.stop = max(1, limit), 0, stop
        self.cond = threading.Condition()

    def acquire(self, n: int) -> None:
        with self.cond:
            while self.used and self.used + n > self.limit:
                if self.stop.is_set():
                    raise _Stopped
                self.cond.wait(0.5)
            self.used += n

    def release(self, n: int) -> None:
        with self.cond:
            self.used -= n
            self.cond.notify_all()


class _Queue:
    """A bounded queue whose waits end when the pipeline stops."""

    def __init__(self, stop: threading.Event) -> None:
        self.q: queue.Queue = queue.Queue(QUEUE_ITEMS)
        self.stop = stop

    def put(self, item: Any) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                self.q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def get(self) -> Any:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return self.q.get(timeout=0.2)
            except queue.Empty:
                continue


# --------------------------------------------------------------------------------------------- messages


@dataclass
class _State:
    """A job as the three stages see it: ``failed`` is set by whichever stage fails it first."""

    job: Job
    index: int
    kind: str = "image"  # image, animation, video
    expected: int = 1
    failed: LightSRError | None = None
    frames: int = 0
    source: Any = None  # the ImageData of an image; the AnimationInfo or VideoReader of the others


@dataclass
class _Begin:
    state: _State
    total: int | None = None  # frames expected


@dataclass
class _Picture:
    state: _State
    data: ImageData
    meta: Any = None  # a frame's duration/disposal (Frame) or timestamp (video Picture)
    nbytes: int = 0
    whole: bool = False  # an image: the job's one message (no _Begin, no _End)


_NEXT = object()  # _gather: no item taken ahead


@dataclass
class _End:
    state: _State


@dataclass
class _Fail:
    state: _State
    error: LightSRError


# ------------------------------------------------------------------------------------------------- stages


def _output_bytes(up: Upscales, data: ImageData) -> int:
    h, w, c = data.pixels.shape
    s = up.scale
    return data.pixels.nbytes + h * s * w * s * c * data.pixels.dtype.itemsize


class Pipeline:
    """Runs jobs through ``up``; see the module's description. ``report(result)`` is called (on the caller's
    thread) as each job ends; ``progress``: a tqdm bar over pictures (files, or frames when animations or videos
    are among them); ``on_frames(written, expected)``: called (on the writer's thread) as pictures are written,
    with the count expected so far (a video's is its stated or estimated frame count until it ends)."""

    def __init__(self, up: Upscales, options: WriteOptions | None = None,
                 report: Callable[[Result], None] | None = None, progress: bool = False,
                 on_frames: Callable[[int, int], None] | None = None) -> None:
        self.up = up
        self.on_frames = on_frames
        self.written = self.expected = 0
        self.options = options or WriteOptions()
        self.report = report
        self.progress = progress
        self.stop = threading.Event()
        self.budget = _Budget(up.max_memory, self.stop)
        self.inbox = _Queue(self.stop)
        self.outbox = _Queue(self.stop)
        self.crash: BaseException | None = None  # an unexpected exception in a worker thread, re-raised here
        self.bar: Any = None

    # -- the caller's thread

    def run(self, jobs: Sequence[Job]) -> list[Result]:
        """Upscale every job; returns their results in order. Re-raises an interrupt (after the stages stop and
        the file being written is removed) and any unexpected error of a stage."""
        jobs = list(jobs)
        self.results: dict[int, Result] = {}
        self.finished: queue.Queue = queue.Queue()
        # Threads are waited for through events, never Thread.join: a join interrupted by a signal handler's
        # exception (Ctrl-C, SIGTERM) leaves CPython (before 3.13) taking the still running thread for ended.
        reading, writing = threading.Event(), threading.Event()
        threading.Thread(target=self._guard, args=(reading, self._read, jobs), name="lightsr-reader",
                         daemon=True).start()
        threading.Thread(target=self._guard, args=(writing, self._write), name="lightsr-writer", daemon=True).start()
        self._open_bar(jobs)
        try:
            item = self._next_input()
            while item is not None:
                batch, item = self._gather(item)
                if len(batch) > 1:
                    self._network_batch(batch)
                else:
                    self._network(batch[0])
                if item is _NEXT:
                    item = self._next_input()
            self.outbox.put(None)
            while not writing.wait(0.05):  # the writer finishes its last files
                self._drain()
            self._drain()
        except _Stopped:
            pass
        finally:
            self.stop.set()
            for ended in (reading, writing):
                ended.wait(30)
            self._drain()
            if self.bar is not None:
                self.bar.close()
        if self.crash is not None:
            raise self.crash
        return [self.results[i] for i in range(len(jobs))]

    def _next_input(self) -> Any:
        """The next item for the network (None after the last job), reporting finished jobs while waiting."""
        while True:
            self._drain()
            if self.stop.is_set():
                raise _Stopped
            try:
                return self.inbox.q.get(timeout=0.05)
            except queue.Empty:
                continue

    def _drain(self) -> None:
        while True:
            try:
                index, result = self.finished.get_nowait()
            except queue.Empty:
                return
            self.results[index] = result
            if self.bar is not None and not self.frames_bar:
                self.bar.update(1)
            if self.report is not None:
                self.report(result)

    def _gather(self, item: Any) -> tuple[list[Any], Any]:
        """``item`` and the pictures already waiting that can run with it (up to :data:`BATCH`), and the item that
        comes next (:data:`_NEXT`: take it from the queue). Never waits: a batch is what is ready."""
        batch = [item]
        if not isinstance(item, _Picture) or item.state.failed:
            return batch, _NEXT
        while len(batch) < BATCH:
            try:
                other = self.inbox.q.get_nowait()
            except queue.Empty:
                break
            if not (isinstance(other, _Picture) and not other.state.failed
                    and self.up.can_batch(item.data, other.data)):
                return batch, other
            batch.append(other)
        return batch, _NEXT

    def _network_batch(self, batch: list[_Picture]) -> None:
        try:
            outs = self.up.upscale_batch([p.data for p in batch], [p.state.job.src for p in batch])
        except LightSRError:  # one picture's error: run them one by one, so each gets its own result
            for p in batch:
                self._network(p)
            return
        for p, out in zip(batch, outs, strict=True):
            self.outbox.put(_Picture(p.state, out, p.meta, p.nbytes, p.whole))

    def _network(self, item: Any) -> None:
        if not isinstance(item, _Picture):
            self.outbox.put(item)
            return
        st = item.state
        if st.failed:
            self.budget.release(item.nbytes)
            return
        try:
            out = self.up.upscale_data(item.data, st.job.src)
        except LightSRError as e:
            st.failed = e
            self.budget.release(item.nbytes)
            self.outbox.put(_Fail(st, e))
            return
        self.outbox.put(_Picture(st, out, item.meta, item.nbytes, item.whole))

    # -- progress

    def _open_bar(self, jobs: list[Job]) -> None:
        """A bar over files, or over frames when videos or GIFs are among them."""
        self.expected = len(jobs)
        self.frames_bar = any(is_video(j.src) or j.src.suffix.lower() in (".gif", ".apng") for j in jobs)
        if not self.progress or (len(jobs) == 1 and not self.frames_bar):
            return
        from tqdm import tqdm

        self.bar = tqdm(total=len(jobs), desc="frames" if self.frames_bar else "images",
                        unit="frame" if self.frames_bar else "img", file=sys.stderr, disable=None,
                        dynamic_ncols=True)

    def _frames_done(self, n: int = 1, more: int = 0) -> None:
        """``n`` frames written, ``more`` frames expected beyond the count so far (the writer's thread)."""
        self.written += n
        self.expected += more
        if self.on_frames is not None and (n or more):
            self.on_frames(self.written, max(self.expected, self.written))
        if self.bar is None or not self.frames_bar:
            return
        if more:
            self.bar.total += more
            self.bar.refresh()
        if n:
            self.bar.update(n)

    # -- worker threads

    def _guard(self, ended: threading.Event, fn: Callable, *args: Any) -> None:
        _yield_to_the_network()
        try:
            with cancelled_by(self.stop):
                fn(*args)
        except (_Stopped, WriteCancelled):
            pass
        except BaseException as e:  # a bug or an unexpected library error: the caller re-raises it
            self.crash = e
            self.stop.set()
        finally:
            ended.set()

    def _read(self, jobs: list[Job]) -> None:
        for index, job in enumerate(jobs):
            st = _State(job, index)
            try:
                self.up.check_destination(job.src, job.dst, self.options.overwrite)
                if is_video(job.src):
                    self._read_video(st)
                elif not self._read_animation(st):
                    self._read_image(st)
                    continue  # one message carries the whole job
            except LightSRError as e:
                st.failed = st.failed or e
                self.inbox.put(_Fail(st, st.failed))
                continue
            self.inbox.put(_End(st))
        self.inbox.put(None)

    def _put(self, st: _State, data: ImageData, meta: Any = None, whole: bool = False) -> None:
        n = _output_bytes(self.up, data)
        self.budget.acquire(n)
        try:
            self.inbox.put(_Picture(st, data, meta, n, whole))
        except BaseException:
            self.budget.release(n)
            raise

    def _read_image(self, st: _State) -> None:
        format_for(st.job.dst)  # an output extension no writer takes fails before the input is decoded
        data = self.up.read_file(st.job.src, self.options.max_pixels)
        st.source = data
        self._put(st, data, whole=True)

    def _read_animation(self, st: _State) -> bool:
        """An animated input written to an animated format, frame by frame; False for anything else."""
        job = st.job
        if job.src.suffix.lower() not in ANIMATED_FORMATS or job.dst.suffix.lower() not in ANIMATED_FORMATS:
            return False
        info = probe(job.src)
        if info is None:
            return False
        st.kind, st.source = "animation", info
        start, stop = self.options.video.start, self.options.video.stop
        stop = info.n_frames if stop is None else min(stop, info.n_frames)
        if start >= stop:
            raise UsageError(f"{job.src}: has {info.n_frames} frames; --frames starts at {start}")
        self._check_animation_size(job, info, stop - start)
        self.inbox.put(_Begin(st, stop - start))
        for frame in read_frames(job.src, info, self.options.max_pixels,
                                 lambda w, h: self.up.check_output_size(h, w, str(job.src)), start, stop):
            if st.failed:
                return True
            self._put(st, ImageData(frame.pixels), frame)
        return True

    def _check_animation_size(self, job: Job, info: AnimationInfo, frames: int) -> None:
        limit = self.up.max_output_pixels
        oh, ow = self.up.output_size(info.height, info.width)
        if limit is not None and frames * oh * ow > limit:
            raise UsageError(f"{job.src}: {frames} frames of {ow}×{oh} = {frames * oh * ow:,} output pixels, which "
                             f"the {ANIMATED_FORMATS[job.dst.suffix.lower()]} writer holds at once, exceed the "
                             f"limit of {limit:,} (raise --max-output-pixels, choose fewer --frames or write a "
                             "video)")

    def _read_video(self, st: _State) -> None:
        from lightsr.video import VideoReader, check_size, check_streams, resolve_options

        job = st.job
        if job.dst.suffix.lower() not in VIDEO_CONTAINERS:
            raise UsageError(f"{job.dst}: a video is written to {', '.join(sorted(VIDEO_CONTAINERS))}, not "
                             f"{job.dst.suffix or 'a file without extension'}")
        opts = resolve_options(job.dst, self.options.video)
        reader = VideoReader(job.src, self.options.video, self.options.max_pixels,
                             lambda w, h: self.up.check_output_size(h, w, str(job.src)))
        try:
            oh, ow = self.up.output_size(reader.info.height, reader.info.width)
            check_size(ow, oh, opts.pix_fmt, job.dst)
            check_streams(job.src, job.dst)
            st.kind, st.source = "video", reader
            total = reader.info.frames
            if total is not None:
                total = max(0, min(total, self.options.video.stop or total) - self.options.video.start)
            self.inbox.put(_Begin(st, total))
            for picture in reader:
                if st.failed:
                    return
                self._put(st, ImageData(picture.pixels), picture)
        finally:
            reader.close()

    def _write(self) -> None:
        while (item := self.outbox.get()) is not None:
            st = item.state
            if isinstance(item, _Picture) and item.whole:
                self._write_whole(item)
            elif isinstance(item, _Picture):  # of a job that failed while it was on its way
                self.budget.release(item.nbytes)
            elif isinstance(item, _Fail):
                self._finish(st, item.error)
            elif isinstance(item, _Begin):
                st.expected = item.total if item.total is not None else 1
                self._frames_done(0, st.expected - 1)
                try:
                    (self._write_animation if st.kind == "animation" else self._write_video)(st)
                except _JobFailed as e:
                    self._finish(st, e.error)
                    continue
                except LightSRError as e:
                    st.failed = st.failed or e
                    self._skip_rest(st)
                    self._finish(st, st.failed)
                    continue
                self._finish(st, None)

    def _write_whole(self, item: _Picture) -> None:
        """An image: written, then its job ends."""
        st, o = item.state, self.options
        try:
            self.up.write_file(st.job.dst, item.data, st.source, st.job.src, o.quality, o.background)
            error = None
        except LightSRError as e:
            error = e
        finally:
            self.budget.release(item.nbytes)
        if error is None:
            st.frames = 1
            self._frames_done(1)
        self._finish(st, error)

    def _finish(self, st: _State, error: LightSRError | None) -> None:
        self._frames_done(0, st.frames - st.expected)
        self.finished.put((st.index, Result(st.job, None if error is None else str(error), st.frames, error)))

    def _pictures(self, st: _State) -> Iterator[_Picture]:
        """The job's upscaled pictures as they come, until its end; :class:`_JobFailed` if it fails upstream."""
        while True:
            item = self.outbox.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Fail):
                raise _JobFailed(item.error)
            if not isinstance(item, _Picture):
                raise _Stopped
            try:
                yield item
            finally:
                self.budget.release(item.nbytes)
                st.frames += 1
                self._frames_done(1)

    def _skip_rest(self, st: _State) -> None:
        """After a writer error, let the job's remaining pictures through (freeing their budget)."""
        try:
            for _ in self._pictures(st):
                pass
        except _JobFailed:
            pass

    def _write_animation(self, st: _State) -> None:
        def frames() -> Iterator[Frame]:
            for pic in self._pictures(st):
                meta: Frame = pic.meta
                yield Frame(pic.data.pixels, meta.duration, meta.disposal)

        write_animation(st.job.dst, frames(), st.source, quality=self.options.quality)

    def _write_video(self, st: _State) -> None:
        from lightsr.video import VideoWriter

        reader = st.source
        oh, ow = self.up.output_size(reader.info.height, reader.info.width)
        with VideoWriter(st.job.dst, reader, self.options.video, ow, oh) as writer:
            for pic in self._pictures(st):
                writer.write(pic.data.pixels, pic.meta.pts, pic.meta.duration)


# How much lower the reader and writer threads are scheduled than the network's (Linux, where each thread has its
# own niceness): they fill the cores' idle moments instead of taking a core from the network's threads, which wait
# for one another at every layer (benchmarks/README.md, "Many files").
WORKER_NICENESS = 5


def _yield_to_the_network() -> None:
    """Lower this worker thread's scheduling priority by :data:`WORKER_NICENESS` (Linux only; a no-op elsewhere)."""
    if sys.platform.startswith("linux") and hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICENESS)
        except OSError:
            pass


def run(up: Upscales, jobs: Sequence[Job], options: WriteOptions | None = None,
        report: Callable[[Result], None] | None = None, progress: bool = False,
        on_frames: Callable[[int, int], None] | None = None) -> list[Result]:
    """Upscale ``jobs`` with ``up`` through a :class:`Pipeline`; returns one :class:`Result` per job, in order."""
    return Pipeline(up, options, report, progress, on_frames).run(jobs)


def kind_of(path: str | os.PathLike) -> str:
    """``video`` (by extension), ``animation`` (an animated GIF, WebP or PNG) or ``image``."""
    p = Path(path)
    if is_video(p):
        return "video"
    if p.suffix.lower() in (".gif", ".webp", ".png", ".apng"):
        try:
            if probe(p) is not None:
                return "animation"
        except LightSRError:
            pass
    return "image"


