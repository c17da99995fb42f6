"""argparse value types shared by the subcommands: a bad value is refused while parsing, before any work."""

from __future__ import annotations

import argparse
from collections.abc import Callable

# What --weights accepts wherever it loads through lightsr.hub (upscale, export; eval adds LABEL=).
WEIGHTS_HELP = ("a checkpoint file (.safetensors, .pth or .pt, any supported layout), a published checkpoint's name "
                "(downloaded on first use, e.g. hasn_x4_official) or a bundled file's name (e.g. lksmn_x4); "
                "`lightsr models` lists the names")


# --precision int8 everywhere it is offered (upscale, eval, profile).
INT8_HELP = ("int8 (OpenVINO: the network quantized by NNCF, built and checked on first use; faster on CPUs, "
             "within 0.05 dB on the benchmarks; needs pip install 'lightsr[int8]')")


def add_calibration(p: argparse.ArgumentParser) -> None:
    """``--calibration DIR``: the images an int8 graph is calibrated on."""
    p.add_argument("--calibration", metavar="DIR",
                   help="with --precision int8: a folder of images like those to upscale (up to 64 are used) to "
                        "calibrate the int8 graph on (default: scikit-image's public-domain/CC0 photos)")


def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An integer in ``[lo, hi]`` (no upper bound when ``hi`` is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected an integer") from None
        if value < lo or (hi is not None and value > hi):
            bounds = f"between {lo} and {hi}" if hi is not None else f"≥ {lo}"
            raise argparse.ArgumentTypeError(f"{value}: must be {bounds}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


positive = int_range(1)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number")
    return value


def pixel_count(text: str) -> int | None:
    """A number of pixels with an optional k/M/G multiplier (``40M``, ``1e8``); ``0`` → None (no limit)."""
    t = text.strip().lower()
    mult = {"k": 10**3, "m": 10**6, "g": 10**9}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a pixel count such as 40M, 1e8 or 0 (no limit)") from None
    if not (value == 0 or 1 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a pixel count ≥ 1, or 0 for no limit")
    return None if value == 0 else int(value)


def tile_size(text: str) -> int | None:
    """``auto`` → None (sized from the memory budget), else an integer (0: no tiling; the range is the
    :class:`lightsr.Upscaler`'s to check, so the message is the same from Python)."""
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected auto, 0 (no tiling) or a size in pixels") from None


def size_wh(text: str) -> tuple[int, int]:
    """``WxH`` (e.g. ``320x180``) → ``(height, width)``, both ≥ 1."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH (e.g. 320x180), got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def crop_box(text: str) -> tuple[int, int, int, int]:
    """``X,Y,W,H`` → ``(x, y, w, h)``; whether it lies inside the image is checked once the image is read."""
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y,W,H in HR pixels, got {text!r}") from None
    return x, y, w, h


def frame_range(text: str) -> tuple[int, int | None]:
    """``A:B`` → ``(A, B)``: frames A (counting from 0) to B, B excluded; ``A:`` to the end, ``:B`` from the start."""
    first, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError
        a = int(first) if first.strip() else 0
        b = int(stop) if stop.strip() else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected A:B, frame numbers from 0 (B excluded; A: to the "
                                         "end, :B from the start)") from None
    if a < 0 or (b is not None and b <= a):
        raise argparse.ArgumentTypeError(f"{text!r}: needs 0 ≤ A < B")
    return a, b


def bit_rate(text: str) -> int:
    """Bits per second with an optional k/M multiplier (``800k``, ``5M``, ``2500000``)."""
    t = text.strip().lower()
    mult = {"k": 10**3, "m": 10**6}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected bits per second such as 800k or 5M") from None
    if not 1000 <= value < 10**11:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 1k to 100G bits per second")
    return int(value)


def color(text: str) -> tuple[int, int, int]:
    """A colour as Pillow's ``ImageColor`` reads it (``white``, ``#ff8800``, ``rgb(255,136,0)``) → 8-bit RGB."""
    from PIL import ImageColor  # only when the option is given

    try:
        rgb = ImageColor.getrgb(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a colour name, #rrggbb or rgb(r,g,b)") from None
    return tuple(rgb[:3])  # type: ignore[return-value]


def add_download_timeout(p: argparse.ArgumentParser) -> None:
    """``--download-timeout``, for commands that may download published weights (``lightsr.cli`` applies it)."""
    from lightsr.download import DEFAULT_DEADLINE_S, ENV

    p.add_argument("--download-timeout", type=positive_float, metavar="SECONDS",
                   help=f"give up a download of published weights after this long (default: ${ENV} or "
                        f"{DEFAULT_DEADLINE_S:g})")
