"""Animations and videos made for tests: small, generated on the spot, with known frames and timestamps."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def frames_rgba(n: int, h: int = 12, w: int = 16, colours: int = 6, seed: int = 0) -> list[np.ndarray]:
    """``n`` distinct RGBA frames of few colours (so that a GIF palette holds them exactly), each with a
    transparent row that moves down frame by frame."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (colours, 3)).astype(np.uint8)
    out = []
    for i in range(n):
        f = np.empty((h, w, 4), np.uint8)
        f[..., :3] = palette[rng.integers(0, colours, (h, w))]
        f[..., 3] = 255
        f[i % h, :, 3] = 0
        f[i % h, :, :3] = 0
        out.append(f)
    return out


def save_animation(path: Path, frames: list[np.ndarray], durations: list[int], loop: int | None = 0,
                   disposal: int | None = None) -> Path:
    """``frames`` written by Pillow in the format of ``path``'s extension (GIF, WebP (lossless) or APNG)."""
    from PIL import Image

    ims = [Image.fromarray(f, "RGBA" if f.shape[2] == 4 else "RGB") for f in frames]
    kwargs: dict = {"save_all": True, "append_images": ims[1:], "duration": durations}
    if loop is not None:
        kwargs["loop"] = loop
    if disposal is not None:
        kwargs["disposal"] = disposal
    if path.suffix == ".webp":
        kwargs["lossless"] = True
    ims[0].save(path, **kwargs)
    return path


def make_video(path: Path, n: int = 50, w: int = 32, h: int = 24, rate: int = 25, codec: str = "libx264",
               pts: list[int] | None = None, time_base: Fraction | None = None, audio: bool = True,
               subtitles: bool = False, rotation: int = 0, full_range: bool = False, seed: int = 0,
               container: str | None = None) -> Path:
    """A video of ``n`` frames of smooth moving colour (H.264 by default) at ``rate`` fps — or at ``pts`` in
    ``time_base`` (variable frame rate) — with a mono AAC sine tone as long as the video, SubRip subtitles,
    a display rotation and full-range colour on request."""
    import av

    out = av.open(str(path), "w", format=container)
    v = out.add_stream(codec, rate=rate)
    v.width, v.height = w, h
    v.pix_fmt = "yuv420p" if codec in ("libx264", "mpeg4") else v.pix_fmt
    if time_base is not None:
        v.time_base = time_base
        v.codec_context.time_base = time_base
    if full_range:
        v.codec_context.color_range = 2
    if rotation:
        v.set_display_rotation(rotation)
    a = None
    if audio:
        a = out.add_stream("aac", rate=48000)
        a.layout = "mono"
    s = None
    if subtitles:
        s = out.add_mux_stream("subrip")
        s.time_base = Fraction(1, 1000)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        base = np.stack([(xx + i) / w, yy / h, ((xx + yy + 2 * i) % (w + h)) / (w + h)], -1)
        px = np.clip((base * 0.85 + rng.random((h, w, 3)) * 0.15) * 255, 0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(px, format="rgb24").reformat(format=v.pix_fmt,
                                                                         dst_color_range=2 if full_range else 1)
        frame.pts = pts[i] if pts is not None else i
        if time_base is not None:
            frame.time_base = time_base
        for packet in v.encode(frame):
            out.mux(packet)
    for packet in v.encode():
        out.mux(packet)
    if a is not None:
        seconds = (pts[-1] * time_base if pts is not None and time_base is not None else Fraction(n, rate))
        samples = int(seconds * 48000)
        t = np.arange(samples) / 48000
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for i in range(0, samples, 1024):
            chunk = tone[i:i + 1024]
            af = av.AudioFrame.from_ndarray(chunk[None], format="fltp", layout="mono")
            af.sample_rate = 48000
            af.pts = i
            for packet in a.encode(af):
                out.mux(packet)
        for packet in a.encode():
            out.mux(packet)
    if s is not None:
        for i, t0 in enumerate((0, int(1000 * n / rate) // 2)):
            p = av.Packet(f"line {i}".encode())
            p.pts = p.dts = t0
            p.duration = 300
            p.time_base = s.time_base
            p.stream = s
            out.mux(p)
    out.close()
    return path


def decode(path: Path, fmt: str = "rgb24") -> tuple[list[np.ndarray], list[Fraction]]:
    """Every frame of the first video stream as arrays (converted with the stream's colour range), and its
    presentation time in seconds."""
    import av

    frames, times = [], []
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        for f in c.decode(v):
            frames.append(f.to_ndarray(format=fmt, src_color_range=f.color_range or None))
            times.append(Fraction(f.pts) * v.time_base)
    return frames, times


def packets(path: Path, kind: str) -> list[bytes]:
    """The payloads of every packet of the streams of one kind (``audio``, ``subtitle``), in order."""
    import av

    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type == kind]
        return [bytes(p) for p in c.demux(streams) if p.size]
