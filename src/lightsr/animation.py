"""Animated images — GIF, WebP and APNG — read frame by frame and written back with their timing.

Frames are read as a viewer shows them: whole canvases, each the result of the file's own disposal and blending
(Pillow composes them), as uint8 RGB, or RGBA when the animation has transparency. Written back, each frame is
whole too, with its duration, the loop count and the disposal of the input kept wherever it shows the same
pictures:

* APNG: every frame replaces its area (blend "source"), so any disposal shows exactly the frames written; the
  input's is kept.
* GIF: a pixel can only be made transparent by disposing of the frame before it, so a frame followed by one that
  uncovers a pixel gets "restore to background"; "restore to previous" becomes "do not dispose" (Pillow's writer
  stores each frame as its difference from the one before, which that would not show). Colours are reduced to a
  palette per frame by Pillow's quantiser; alpha becomes GIF's one transparent index (opaque from 128).
* WebP: libwebp's animation encoder chooses disposal and blending itself from the whole frames.

Pillow's writers hold every frame until the file is complete (and merge a frame identical to the one before it
into that one, adding up their durations), so the caller bounds the frames × pixels of an output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lightsr._files import atomic_write
from lightsr.errors import LightSRError, WriteError, first_line
from lightsr.formats import ANIMATED_FORMATS, DEFAULT_MAX_PIXELS
from lightsr.imageio import pixel_limit_off

# Disposal, format-neutral: what happens to a frame's area before the next frame is drawn.
NONE, BACKGROUND, PREVIOUS = "none", "background", "previous"
_GIF_DISPOSAL = {0: NONE, 1: NONE, 2: BACKGROUND, 3: PREVIOUS}
_APNG_DISPOSAL = {0: NONE, 1: BACKGROUND, 2: PREVIOUS}
_APNG_CODE = {v: k for k, v in _APNG_DISPOSAL.items()}


class AnimationReadError(LightSRError, ValueError):
    """An animated image that cannot be read; the message names the file."""


class AnimationWriteError(WriteError):
    """An animation that cannot be written; the message names the file."""


@dataclass(frozen=True)
class AnimationInfo:
    """What an animated file states. ``loop``: plays (0: forever; None: a GIF without a loop count, shown once).
    ``alpha``: some frame has transparency (frames are then read as RGBA). ``default_image``: an APNG whose first
    image is shown only by viewers without animation support (it is frame 0 here)."""

    format: str
    width: int
    height: int
    n_frames: int
    alpha: bool
    loop: int | None
    default_image: bool = False
    background: tuple[int, int, int, int] | None = None


@dataclass
class Frame:
    """One whole canvas: ``pixels`` ``H×W×3`` or ``H×W×4`` uint8, shown ``duration`` milliseconds, then its area
    disposed of as ``disposal`` says (None: the format does not say, as in WebP)."""

    pixels: np.ndarray
    duration: float = 100.0
    disposal: str | None = None


def _open(path: Path):
    """Pillow's image, its own decompression-bomb check off (the caller checks ``max_pixels`` from the size)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with pixel_limit_off():
            return Image.open(path)
    except FileNotFoundError:
        raise AnimationReadError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise AnimationReadError(f"{path}: not an image file Pillow can identify (corrupt or unsupported)") from None
    except OSError as e:
        raise AnimationReadError(f"{path}: cannot read ({e.strerror or first_line(e)})") from None


def probe(path: str | Path) -> AnimationInfo | None:
    """The animation ``path`` holds, or None when it is not an animated GIF, WebP or APNG (one frame, another
    format). Reads headers; for GIF, whose frames state their own transparency, every frame's header."""
    path = Path(path)
    try:
        with _open(path) as im:
            if im.format not in ANIMATED_FORMATS.values() or not getattr(im, "is_animated", False):
                return None
            n = im.n_frames
            loop = im.info.get("loop")
            alpha = _has_alpha(im)
            if im.format == "GIF" and not alpha:
                for i in range(1, n):
                    im.seek(i)
                    if "transparency" in im.info or im.mode in ("RGBA", "PA", "LA"):
                        alpha = True
                        break
            background = im.info.get("background") if im.format == "WEBP" else None
            return AnimationInfo(im.format, im.width, im.height, n, alpha, loop if loop is not None or
                                 im.format == "GIF" else 0, bool(im.info.get("default_image", False)),
                                 tuple(background) if isinstance(background, tuple) and len(background) == 4
                                 else None)
    except LightSRError:
        raise
    except Exception as e:  # what a damaged file makes Pillow raise while reading headers
        raise AnimationReadError(f"{path}: cannot read the animation ({first_line(e, 160)})") from None


def _has_alpha(im) -> bool:
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return True
    return "transparency" in im.info or (im.mode == "P" and im.palette is not None and im.palette.mode == "RGBA")


def read_frames(path: str | Path, info: AnimationInfo | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                check_size: Callable[[int, int], None] | None = None, start: int = 0,
                stop: int | None = None) -> Iterator[Frame]:
    """Frames ``start`` to ``stop`` (exclusive) of the animation at ``path``, one at a time (only the current
    one is in memory). ``max_pixels`` and ``check_size(width, height)`` are applied to the canvas before any
    frame is decoded. Raises :class:`AnimationReadError` naming the file for a damaged frame."""
    path = Path(path)
    info = info or probe(path)
    if info is None:
        raise AnimationReadError(f"{path}: is not an animated GIF, WebP or PNG")
    w, h = info.width, info.height
    if max_pixels is not None and w * h > max_pixels:
        raise AnimationReadError(f"{path}: {w}×{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} "
                                 "(a decompression-bomb guard; raise it with --max-pixels)")
    if check_size is not None:
        check_size(w, h)
    mode = "RGBA" if info.alpha else "RGB"
    stop = info.n_frames if stop is None else min(stop, info.n_frames)
    with _open(path) as im:
        for i in range(start, stop):
            try:
                im.seek(i)
                im.load()
                pixels = np.asarray(im.convert(mode) if im.mode != mode else im).copy()
                duration = float(im.info.get("duration", 0) or 0)
                if im.format == "GIF":
                    disposal = _GIF_DISPOSAL.get(getattr(im, "disposal_method", 0), NONE)
                elif im.format == "PNG":
                    disposal = _APNG_DISPOSAL.get(im.info.get("disposal", 0), NONE)
                else:
                    disposal = None
            except Exception as e:
                if isinstance(e, LightSRError):
                    raise
                raise AnimationReadError(f"{path}: cannot decode frame {i + 1} of {info.n_frames} "
                                         f"({first_line(e, 160)})") from None
            if pixels.shape[:2] != (h, w):
                raise AnimationReadError(f"{path}: frame {i + 1} is {pixels.shape[1]}×{pixels.shape[0]}, the "
                                         f"canvas {w}×{h}")
            yield Frame(pixels, duration, disposal)


@dataclass
class _Lists:
    """The per-frame lists Pillow's writers read (by frame index, as each frame arrives)."""

    durations: list[float] = field(default_factory=list)
    disposals: list[int] = field(default_factory=list)


def _gif_frames(frames: Iterable[Frame], lists: _Lists) -> Iterator:
    """GIF frames for Pillow: each frame's disposal decided once the next one is known (a frame followed by one
    that uncovers a pixel must be restored to background), then reduced to a palette."""
    held: tuple[np.ndarray, Frame] | None = None
    for frame in frames:
        px = frame.pixels
        if held is not None:
            prev = held[0]
            uncovered = px.shape[2] == 4 and bool(((prev[:, :, 3] >= 128) & (px[:, :, 3] < 128)).any())
            yield _gif_frame(*held, uncovered, lists)
        held = (px, frame)
    if held is not None:
        yield _gif_frame(*held, False, lists)


def _gif_frame(px: np.ndarray, frame: Frame, uncovered: bool, lists: _Lists):
    """One frame as a palette image: the colours quantised by Pillow (median cut). Frames of an animation with
    alpha keep index 255 for transparent pixels and name it their ``transparency`` even when they have none:
    restoring such a frame to background then clears it (as browsers do; viewers that follow the GIF
    specification to the letter would otherwise paint the background colour). Pillow's own conversion of RGBA
    frames keeps a transparent index only where the first frame has one."""
    from PIL import Image

    lists.durations.append(frame.duration)
    lists.disposals.append(2 if uncovered or frame.disposal == BACKGROUND else 1)
    rgb = Image.fromarray(np.ascontiguousarray(px[:, :, :3]), "RGB")
    if px.shape[2] != 4:
        return rgb.quantize(256)
    im = rgb.quantize(255)
    index = np.asarray(im).copy()
    index[px[:, :, 3] < 128] = 255
    palette = (im.getpalette() or [])[: 255 * 3]
    out = Image.fromarray(index, "P")
    out.putpalette(palette + [0] * (768 - len(palette)))
    out.info["transparency"] = 255
    return out


def write_animation(path: str | Path, frames: Iterable[Frame], info: AnimationInfo, quality: int = 95) -> int:
    """Write ``frames`` (consumed one by one) as an animation in the format ``path``'s extension names (GIF,
    WebP or PNG), atomically: never a partial file. ``info`` gives the loop count and background; returns the
    number of frames given."""
    from PIL import Image

    path = Path(path)
    fmt = ANIMATED_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AnimationWriteError(f"{path}: cannot hold an animation; use .gif, .webp or .png")
    lists = _Lists()
    count = 0

    def counted(it: Iterable) -> Iterator:
        nonlocal count
        for x in it:
            count += 1
            yield x

    def images() -> Iterator[Image.Image]:
        for f in frames:
            lists.durations.append(f.duration)
            lists.disposals.append(_APNG_CODE.get(f.disposal or NONE, 0))
            yield Image.fromarray(f.pixels, "RGBA" if f.pixels.shape[2] == 4 else "RGB")

    # Pillow's GIF writer takes the frames one by one; its PNG writer goes over them twice (modes, then pixels)
    # and its WebP writer makes a list of them first: those get a list.
    stream = counted(_gif_frames(frames, lists) if fmt == "GIF" else images())
    rest: Iterable = stream if fmt == "GIF" else list(stream)
    first = next(stream, None) if fmt == "GIF" else (rest.pop(0) if rest else None)
    if first is None:
        raise AnimationWriteError(f"{path}: no frames to write; nothing written")
    kwargs: dict = {"save_all": True, "append_images": rest, "duration": lists.durations}
    if fmt == "GIF":
        # optimize=False: Pillow's palette optimisation drops a frame's transparent index when the frame does not
        # use it.
        kwargs.update(disposal=lists.disposals, optimize=False)
        if info.loop is not None:
            kwargs["loop"] = info.loop
    elif fmt == "PNG":
        kwargs.update(disposal=lists.disposals, blend=0, loop=info.loop or 0,
                      default_image=info.default_image and info.format == "PNG")
    else:
        kwargs.update(loop=info.loop or 0, quality=quality, method=4)
        if info.background is not None:
            kwargs["background"] = info.background
    try:
        with atomic_write(path) as tmp:
            first.save(tmp, format=fmt, **kwargs)
    except WriteError as e:
        raise AnimationWriteError(str(e)) from None
    except LightSRError:
        raise
    except (ValueError, TypeError, KeyError) as e:  # what Pillow's encoders refuse
        raise AnimationWriteError(f"{path}: {fmt} cannot store this animation ({first_line(e, 120)}); "
                                  "nothing written") from None
    return count
