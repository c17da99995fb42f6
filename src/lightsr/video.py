"""Video files through PyAV (``pip install "lightsr[video]"``): decoded frame by frame, encoded frame by frame.

:class:`VideoReader` yields a video stream's frames as RGB arrays (uint8, or uint16 for inputs of more than 8 bits)
with their timestamps; :class:`VideoWriter` encodes arrays of another size into a temporary beside the output and
renames it into place when complete. Neither holds more than the frame at hand (and the encoder's own lookahead).
What the output keeps of the input:

* every frame's timestamp, in the input's time base (variable frame rate stays variable), and the frame rate;
* audio and subtitle streams, copied packet for packet (remuxed, not re-encoded), interleaved with the video as
  it is written; with a frame range, the packets of that stretch of time, shifted with it;
* the rotation (display matrix), sample aspect ratio, colour range, matrix, primaries and transfer: RGB is
  converted back to YUV with the matrix and range it was read with, and the output is tagged as the input was;
* the container's and streams' titles and languages.

The output codec, quality and pixel format are options (:class:`VideoOptions`), checked against the container and
the codec before any frame is decoded (:func:`check_options`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lightsr import _optional
from lightsr._files import atomic_temporary, commit
from lightsr.errors import LightSRError, UsageError, WriteError, first_line
from lightsr.formats import DEFAULT_MAX_PIXELS, VIDEO_CONTAINERS, VIDEO_EXTENSIONS

# The codec a container gets without --codec: H.264 where it can hold it (every player reads it), VP9 in WebM.
DEFAULT_CODECS = {"mp4": "libx264", "mov": "libx264", "matroska": "libx264", "webm": "libvpx-vp9"}
DEFAULT_PIX_FMT = "yuv420p"
# x264's "visually lossless" level: the upscaled frames keep their detail (x264's own default, 23, is for
# delivery at small sizes).
DEFAULT_CRF = 18
# Codecs whose quality is set by a constant rate factor (the option FFmpeg calls crf) and its range.
_CRF_RANGE = {"libx264": 51, "libx264rgb": 51, "libx265": 51, "libvpx-vp9": 63, "libvpx": 63, "libsvtav1": 63,
              "libaom-av1": 63}
# Video streams that are pictures, not video (cover art in MP4/MKV): not what is upscaled.
_ATTACHED_PIC = 0x0400


class VideoError(LightSRError, ValueError):
    """A video that cannot be read (no video stream, a codec this FFmpeg cannot decode, damaged or truncated);
    the message names the file."""


class VideoWriteError(WriteError):
    """A video that cannot be written; the message names the file. Nothing partial is left behind."""


def _av() -> Any:
    av = _optional.load("av", "video", "video")
    # FFmpeg's log stays off (PyAV's default): a log callback into Python from FFmpeg's codec threads can deadlock
    # against a thread that holds the GIL while it waits for them (closing a decoder mid-stream does).
    return av


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a video file (by its extension)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoOptions:
    """How a video is encoded. ``codec``: an FFmpeg encoder (None: :data:`DEFAULT_CODECS` by container);
    ``crf``: constant quality (None: :data:`DEFAULT_CRF` for codecs that have it, unless ``bitrate`` is given);
    ``bitrate``: bits per second instead; ``pix_fmt``: FFmpeg pixel format (None: yuv420p, or the codec's first
    format if it has no yuv420p); ``start``/``stop``: the frames to keep, ``stop`` excluded (None: to the end)."""

    codec: str | None = None
    crf: int | None = None
    bitrate: int | None = None
    pix_fmt: str | None = None
    start: int = 0
    stop: int | None = None


@dataclass
class VideoInfo:
    """A video stream as its file states it. ``frames``: the count the container states, else an estimate from
    the duration (None when neither is known). ``rate``: average frame rate. ``deep``: more than 8 bits per
    sample (frames are then read as 16-bit RGB)."""

    path: Path
    width: int
    height: int
    codec: str
    frames: int | None
    exact_count: bool
    rate: Fraction | None
    time_base: Fraction
    deep: bool
    copied: list[str] = field(default_factory=list)  # "audio (aac)", "subtitle (mov_text)", …


def _video_stream(container: Any, path: Path) -> Any:
    streams = [s for s in container.streams.video if not (s.disposition.value & _ATTACHED_PIC)]
    if not streams:
        kinds = sorted({s.type for s in container.streams})
        raise VideoError(f"{path}: has no video stream ({', '.join(kinds) or 'no streams'})")
    return streams[0]


def _open_input(path: Path) -> Any:
    av = _av()
    try:
        return av.open(str(path), "r")
    except FileNotFoundError:
        raise VideoError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise VideoError(f"{path}: is a folder, not a video") from None
    except av.FFmpegError as e:
        raise VideoError(f"{path}: cannot read as video ({_reason(e)}: damaged, truncated or not a video)") \
            from None
    except OSError as e:
        raise VideoError(f"{path}: cannot read ({e.strerror or first_line(e)})") from None


def _reason(e: BaseException) -> str:
    """FFmpeg's message without the file name and the call PyAV appends."""
    return str(getattr(e, "strerror", None) or first_line(e)).strip()


def _decodable(stream: Any, path: Path) -> None:
    av = _av()
    name = stream.codec_context.name if stream.codec_context is not None else None
    try:
        if name is None:
            raise av.error.DecoderNotFoundError(0, "unknown codec")
        av.codec.Codec(name, "r")
    except (av.FFmpegError, ValueError):
        tag = getattr(stream.codec_context, "codec_tag", None) if stream.codec_context is not None else None
        raise VideoError(f"{path}: its video codec ({name or 'unknown'}{f', tag {tag}' if tag else ''}) cannot "
                         "be decoded by this PyAV/FFmpeg build") from None


def probe(path: str | os.PathLike) -> VideoInfo:
    """What :class:`VideoReader` will read from ``path``; :class:`VideoError` naming the file when it has no
    video stream or one this FFmpeg cannot decode."""
    path = Path(path)
    with _open_input(path) as c:
        return _info(c, _video_stream(c, path), path)


def _info(c: Any, v: Any, path: Path) -> VideoInfo:
    _decodable(v, path)
    cc = v.codec_context
    fmt = cc.format
    deep = fmt is not None and any(comp.bits > 8 for comp in fmt.components)
    rate = v.average_rate or v.guessed_rate or v.base_rate
    rate = Fraction(rate) if rate else None
    frames, exact = (v.frames, True) if v.frames else (None, False)
    if frames is None and rate:
        duration = (float(v.duration * v.time_base) if v.duration else
                    c.duration / 1_000_000 if c.duration else None)
        frames = round(duration * rate) if duration else None
    copied = [f"{s.type} ({s.codec_context.name if s.codec_context else '?'})" for s in _copyable(c)]
    return VideoInfo(path, cc.width, cc.height, cc.name, frames, exact, rate, Fraction(v.time_base), deep, copied)


def _copyable(c: Any) -> list:
    """The streams copied into the output: every audio and subtitle stream."""
    return [s for s in c.streams if s.type in ("audio", "subtitle")]


@dataclass
class Picture:
    """A decoded frame: ``pixels`` ``H×W×3`` uint8 (uint16 for deep inputs), at ``pts`` in the stream's
    ``time_base`` (None when the container has no timestamps; the writer then counts frames at the rate)."""

    pixels: np.ndarray
    pts: int | None
    index: int
    duration: int | None = None  # in the stream's time base, where the container states it


class VideoReader:
    """The frames ``options.start`` to ``options.stop`` of the first video stream of ``path``, one at a time.

    ``max_pixels`` and ``check_size(width, height)`` are applied to the frame size before any frame is decoded.
    Frames are converted to RGB with the matrix and range the stream states; the values the writer needs to
    convert back are in :attr:`colour`, the display matrix in :attr:`display_matrix` (once a frame is read).
    """

    def __init__(self, path: str | os.PathLike, options: VideoOptions | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, check_size: Any = None) -> None:
        self.path = Path(path)
        self.options = options or VideoOptions()
        self.container = _open_input(self.path)
        try:
            self.stream = _video_stream(self.container, self.path)
            self.info = _info(self.container, self.stream, self.path)
            w, h = self.info.width, self.info.height
            if max_pixels is not None and w * h > max_pixels:
                raise VideoError(f"{self.path}: {w}×{h} = {w * h:,} pixels per frame exceeds the limit of "
                                 f"{max_pixels:,} (raise it with --max-pixels)")
            if check_size is not None:
                check_size(w, h)
        except BaseException:
            self.container.close()
            raise
        # What the writer copies, read here: the writer never touches this reader's container (another thread
        # may be closing it).
        self.metadata = {k: v for k, v in self.container.metadata.items()
                         if k.lower() in ("title", "comment", "artist", "date")}
        self.stream_metadata = {k: v for k, v in self.stream.metadata.items() if k in ("language", "title")}
        self.disposition = self.stream.disposition
        cc = self.stream.codec_context
        self.colour = {"colorspace": cc.colorspace, "color_range": cc.color_range,
                       "color_primaries": cc.color_primaries, "color_trc": cc.color_trc}
        self.sample_aspect_ratio = cc.sample_aspect_ratio
        self.display_matrix: list[int] | None = None
        self.first_pts: int | None = None  # of the first frame kept
        self.stop_pts: int | None = None  # of the first frame after the range, when the range ends early
        self.stream.thread_type = "AUTO"

    def close(self) -> None:
        """Close the file (the frames not read are not decoded)."""
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Picture]:
        av = _av()
        start, stop = self.options.start, self.options.stop
        fmt = "rgb48le" if self.info.deep else "rgb24"
        index = -1
        try:
            for frame in self.container.decode(self.stream):
                index += 1
                if index < start:
                    continue
                if stop is not None and index >= stop:
                    self.stop_pts = frame.pts
                    return
                if self.display_matrix is None:
                    self.display_matrix = _display_matrix(frame)
                if self.first_pts is None:
                    self.first_pts = frame.pts
                if frame.width != self.info.width or frame.height != self.info.height:
                    raise VideoError(f"{self.path}: frame {index + 1} is {frame.width}×{frame.height}, the "
                                     f"stream {self.info.width}×{self.info.height} (resolution changes are not "
                                     "supported)")
                pixels = frame.to_ndarray(format=fmt, src_color_range=frame.color_range or None,
                                          interpolation=_exact())
                yield Picture(pixels, frame.pts, index, frame.duration or None)
        except av.FFmpegError as e:
            raise VideoError(f"{self.path}: cannot decode frame {index + 2} ({_reason(e)})") from None
        decoded = index + 1
        if self.info.exact_count and self.info.frames and decoded < self.info.frames:
            raise VideoError(f"{self.path}: truncated or damaged: {decoded} of the {self.info.frames} frames it "
                             "states could be decoded")
        if decoded <= start:
            raise VideoError(f"{self.path}: has {decoded} frames; --frames starts at {start}")


def _exact() -> Any:
    """swscale's flags for YUV ↔ RGB without drift: bicubic chroma at full horizontal resolution, accurate
    rounding. With its defaults a 4:2:0 round trip darkens by about 1.2 levels (benchmarks/README.md)."""
    from av.video.reformatter import Interpolation

    return (Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
            | Interpolation.FULL_CHR_H_INP)


def _display_matrix(frame: Any) -> list[int] | None:
    # A lookup by type name: PyAV 18.1.0 and 18.1.1 iterate the container differently (entries, then types).
    sd = frame.side_data.get("DISPLAYMATRIX")
    if sd is not None and len(raw := bytes(sd)) == 36:
        return list(struct.unpack("<9i", raw))
    return None


def resolve_options(dst: str | os.PathLike, options: VideoOptions) -> VideoOptions:
    """``options`` with the codec, pixel format and quality filled in for ``dst``'s container; a
    :class:`UsageError` for an unknown codec or pixel format, options the codec does not take, or a container
    that cannot hold the codec."""
    av = _av()
    dst = Path(dst)
    container = VIDEO_CONTAINERS.get(dst.suffix.lower())
    if container is None:
        raise UsageError(f"-o {dst}: unknown video extension; use {', '.join(sorted(VIDEO_CONTAINERS))}")
    codec = options.codec or DEFAULT_CODECS[container]
    try:
        enc = av.codec.Codec(codec, "w")
    except (av.FFmpegError, ValueError):
        raise UsageError(f"--codec {codec}: not an encoder of this PyAV/FFmpeg build") from None
    if enc.type != "video":
        raise UsageError(f"--codec {codec}: is an {enc.type} codec, not a video codec")
    if not _container_takes(container, enc.name, dst):
        raise UsageError(f"--codec {codec}: {dst.suffix} files cannot hold {enc.name} video; choose another "
                         "codec or container")
    formats = [f.name for f in enc.video_formats or []]
    pix_fmt = options.pix_fmt or (DEFAULT_PIX_FMT if not formats or DEFAULT_PIX_FMT in formats else formats[0])
    if formats and pix_fmt not in formats:
        raise UsageError(f"--pix-fmt {pix_fmt}: {codec} takes {', '.join(formats)}")
    try:
        av.VideoFormat(pix_fmt)
    except (ValueError, av.FFmpegError):
        raise UsageError(f"--pix-fmt {pix_fmt}: not a pixel format FFmpeg knows") from None
    crf = options.crf
    if crf is not None and options.bitrate is not None:
        raise UsageError("--crf and --bitrate: choose one (constant quality or a bit rate)")
    if crf is not None and enc.name not in _CRF_RANGE:
        raise UsageError(f"--crf: {codec} has no constant-quality setting; use --bitrate "
                         f"(--crf works with {', '.join(sorted(_CRF_RANGE))})")
    if crf is not None and not 0 <= crf <= _CRF_RANGE[enc.name]:
        raise UsageError(f"--crf {crf}: {codec} takes 0 to {_CRF_RANGE[enc.name]}")
    if crf is None and options.bitrate is None and enc.name in _CRF_RANGE:
        crf = DEFAULT_CRF
    if options.bitrate is not None and options.bitrate <= 0:
        raise UsageError(f"--bitrate {options.bitrate}: must be positive")
    return VideoOptions(enc.name, crf, options.bitrate, pix_fmt, options.start, options.stop)


def _container_takes(container: str, codec: str, dst: Path) -> bool:
    av = _av()
    with av.open(os.devnull, "w", format=container) as c:
        return codec in c.supported_codecs


def check_streams(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Refuse, before any frame is decoded, an input whose audio or subtitle streams ``dst``'s container cannot
    hold (e.g. SubRip subtitles in MP4)."""
    av = _av()
    src, dst = Path(src), Path(dst)
    container = VIDEO_CONTAINERS.get(dst.suffix.lower())
    if container is None:
        return
    with _open_input(src) as c, av.open(os.devnull, "w", format=container) as out:
        for s in _copyable(c):
            name = s.codec_context.name if s.codec_context is not None else None
            if name is None or name not in out.supported_codecs:
                raise VideoError(f"{src}: its {s.type} stream #{s.index} ({name or 'unknown codec'}) cannot be "
                                 f"copied into a {dst.suffix} file; write .mkv, which holds most streams")


def check_size(width: int, height: int, pix_fmt: str, dst: str | os.PathLike) -> None:
    """Refuse an output size the pixel format cannot store (4:2:0 and 4:2:2 need even sides)."""
    av = _av()
    fmt = av.VideoFormat(pix_fmt)
    need_w = 2 if fmt.chroma_width(2) == 1 else 1  # chroma subsampled across / down
    need_h = 2 if fmt.chroma_height(2) == 1 else 1
    if width % need_w or height % need_h:
        raise UsageError(f"{dst}: {pix_fmt} stores frames with even sides, the output is {width}×{height}; choose "
                         "--pix-fmt yuv444p or an --outscale that gives even sides")


class VideoWriter:
    """Encodes frames of ``width×height`` into ``dst`` (a temporary until :meth:`close`), copying the audio and
    subtitle streams of ``reader``'s file. :meth:`write` each frame in order, then :meth:`close`; :meth:`abort`
    (or any exception inside ``with``) removes the temporary."""

    def __init__(self, dst: str | os.PathLike, reader: VideoReader, options: VideoOptions, width: int,
                 height: int) -> None:
        self.dst = Path(dst)
        self.reader = reader
        self.options = resolve_options(dst, options)
        self.width, self.height = width, height
        check_size(width, height, self.options.pix_fmt, self.dst)
        self.tmp: Path | None = None
        self.out: Any = None
        self.stream: Any = None
        self.copy_in: Any = None
        self.copies: dict[int, Any] = {}
        self.pending: Iterator | None = None
        self.next_copy: Any = None
        self.offset: Fraction = Fraction(0)  # seconds cut from the start (a frame range)
        self.frames = 0
        self.last_pts: int | None = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- opening

    def _open(self) -> None:
        av = _av()
        r = self.reader
        container = VIDEO_CONTAINERS[self.dst.suffix.lower()]
        self.tmp = atomic_temporary(self.dst)
        try:
            self.out = av.open(str(self.tmp), "w", format=container)
        except (av.FFmpegError, OSError) as e:
            self.abort()
            raise VideoWriteError(f"{self.dst}: cannot write ({_reason(e)}); nothing written") from None
        self.out.metadata.update(r.metadata)
        o = self.options
        rate = r.info.rate or Fraction(25)
        kwargs: dict[str, Any] = {}
        if o.crf is not None:
            kwargs["options"] = {"crf": str(o.crf)}
            if o.codec in ("libvpx-vp9", "libvpx"):
                kwargs["options"]["b"] = "0"  # libvpx's constant-quality mode needs the bit rate unset
        s = self.out.add_stream(o.codec, rate=rate, **kwargs)
        s.width, s.height, s.pix_fmt = self.width, self.height, o.pix_fmt
        s.time_base = r.info.time_base
        s.codec_context.time_base = r.info.time_base
        if o.bitrate is not None:
            s.bit_rate = o.bitrate
        self.is_rgb = av.VideoFormat(o.pix_fmt).is_rgb
        if not self.is_rgb:
            for key, value in r.colour.items():
                if value:
                    setattr(s.codec_context, key, value)
        if r.sample_aspect_ratio:
            s.codec_context.sample_aspect_ratio = r.sample_aspect_ratio
        if r.display_matrix is not None:
            s.set_display_matrix(r.display_matrix)
        s.thread_type = "AUTO"
        self.stream = s
        s.metadata.update(r.stream_metadata)
        s.disposition = r.disposition
        # The other streams come from a second reading of the input, interleaved as the video is written.
        self.copy_in = _open_input(r.path)
        wanted = _copyable(self.copy_in)
        for src_stream in wanted:
            out_stream = self.out.add_stream_from_template(src_stream)
            self._copy_metadata(src_stream, out_stream)
            self.copies[src_stream.index] = out_stream
        if r.first_pts is not None and r.options.start:
            self.offset = Fraction(r.first_pts) * r.info.time_base
        self.pending = self.copy_in.demux(wanted) if wanted else iter(())

    @staticmethod
    def _copy_metadata(src: Any, dst: Any) -> None:
        for key in ("language", "title"):
            if key in src.metadata:
                dst.metadata[key] = src.metadata[key]
        dst.disposition = src.disposition

    # -- writing

    def write(self, pixels: np.ndarray, pts: int | None, duration: int | None = None) -> None:
        """Encode one frame (``H×W×3`` uint8/uint16 RGB of the writer's size) at ``pts`` (the input's), lasting
        ``duration`` (the input's; it sets the last frame's length)."""
        av = _av()
        if self.out is None:
            self._open()
        r = self.reader
        if pts is None:  # no timestamps in the input: count frames at the frame rate
            step = 1 / ((r.info.rate or Fraction(25)) * r.info.time_base)
            pts = round(self.frames * step)
        shift = round(self.offset / r.info.time_base)
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb48le" if pixels.dtype == np.uint16 else "rgb24")
        if not self.is_rgb:
            frame = frame.reformat(format=self.options.pix_fmt, dst_colorspace=r.colour["colorspace"] or None,
                                   dst_color_range=r.colour["color_range"] or None, interpolation=_exact())
        else:
            frame = frame.reformat(format=self.options.pix_fmt)
        frame.pts = pts - shift
        frame.time_base = r.info.time_base
        if duration:
            frame.duration = duration
        self.last_pts = frame.pts
        try:
            for packet in self.stream.encode(frame):
                self._mux_video(packet)
        except av.FFmpegError as e:
            raise self._write_error(e) from None
        self.frames += 1

    def _mux_video(self, packet: Any) -> None:
        if packet.dts is not None and packet.time_base is not None:
            self._mux_copies_until(Fraction(packet.dts) * packet.time_base)
        self._mux(packet)

    def _mux_copies_until(self, t: Fraction | None) -> None:
        """Copy the other streams' packets up to time ``t`` (seconds of the output; None: all that are left)."""
        while True:
            if self.next_copy is None:
                self.next_copy = next(self.pending, None) if self.pending is not None else None
                if self.next_copy is None:
                    return
            p = self.next_copy
            if p.size == 0 and p.pts is None and p.dts is None:  # the demuxer's flush packets
                self.next_copy = None
                continue
            when = p.dts if p.dts is not None else p.pts
            at = Fraction(when) * p.time_base - self.offset if when is not None else None
            if at is not None and t is not None and at > t:
                return
            self.next_copy = None
            self._copy(p, at)

    def _copy(self, p: Any, at: Fraction | None) -> None:
        r = self.reader
        if at is not None and at < 0 and r.options.start:
            return  # before the frame range
        if r.stop_pts is not None and at is not None:
            end = Fraction(r.stop_pts) * r.info.time_base - self.offset
            if at >= end:
                return  # after it
        shift = round(self.offset / p.time_base)
        if p.pts is not None:
            p.pts -= shift
        if p.dts is not None:
            p.dts -= shift
        p.stream = self.copies[p.stream.index]
        self._mux(p)

    def _mux(self, packet: Any) -> None:
        av = _av()
        try:
            self.out.mux(packet)
        except (av.FFmpegError, OSError) as e:
            raise self._write_error(e) from None

    def _write_error(self, e: BaseException) -> VideoWriteError:
        return VideoWriteError(f"{self.dst}: cannot write ({_reason(e)}); nothing written")

    def close(self) -> None:
        """Flush the encoder, copy what is left of the other streams, and rename the file into place."""
        av = _av()
        if self.out is None:
            raise VideoWriteError(f"{self.dst}: no frames to write; nothing written")
        try:
            for packet in self.stream.encode(None):
                self._mux_video(packet)
            self._mux_copies_until(None)
            self.out.close()
            self.out = None
            self._close_input()
            commit(self.tmp, self.dst)
            self.tmp = None
        except (av.FFmpegError, OSError) as e:
            self.abort()
            if isinstance(e, LightSRError):
                raise
            raise self._write_error(e) from None
        except BaseException:
            self.abort()
            raise

    def _close_input(self) -> None:
        if self.copy_in is not None:
            self.copy_in.close()
            self.copy_in = None

    def abort(self) -> None:
        """Stop and remove the temporary; the output is untouched."""
        out, self.out = self.out, None
        if out is not None:
            try:
                out.close()
            except Exception:  # the temporary is removed anyway
                pass
        self._close_input()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None
