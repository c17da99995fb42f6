"""The edges of the data path: image files ↔ integer arrays ↔ float tensors in [0, 1].

Everything between these functions is float in [0, 1]; conversions happen here and only here.

:func:`load_image` keeps what a file holds: grayscale stays grayscale, alpha stays alpha, 16-bit stays 16-bit
(Pillow decodes 16-bit RGB/RGBA PNG and TIFF to 8 bits; here the same Pillow decoder is run a second time with
the byte order swapped, which yields the low bytes, so 16-bit images keep every bit), EXIF orientation is
applied, palettes are expanded, and the ICC profile and resolution are kept. :func:`save_image` writes
atomically (temporary file in the same folder, then rename), 16-bit PNG/TIFF with small writers of its own
(Pillow cannot write 16-bit colour images).
"""

from __future__ import annotations

import contextlib
import logging
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lightsr._files import atomic_write
from lightsr.errors import LightSRError, UsageError, WriteError, first_line
from lightsr.formats import (  # re-exported: the constants of the files this module reads and writes
    ALPHA_FORMATS,
    DEFAULT_MAX_OUTPUT_PIXELS,
    DEFAULT_MAX_PIXELS,
    FORMATS,
    HIGH_BIT_DEPTH_FORMATS,
    INPUT_EXTENSIONS,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger("lightsr")

__all__ = [
    "ALPHA_FORMATS",
    "DEFAULT_MAX_OUTPUT_PIXELS",
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "HIGH_BIT_DEPTH_FORMATS",
    "INPUT_EXTENSIONS",
    "ImageData",
    "ImageReadError",
    "ImageWriteError",
    "array_to_tensor",
    "composite",
    "exif_for",
    "format_for",
    "load_image",
    "pixel_limit_off",
    "read_image",
    "save_image",
    "tensor_to_array",
    "to_uint8",
]



class ImageReadError(LightSRError, ValueError):
    """An image that cannot be read; the message names the file."""


class ImageWriteError(WriteError):
    """An image that cannot be written; the message names the file."""


_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


@dataclass
class ImageData:
    """Decoded pixels and the metadata worth carrying to the output.

    ``pixels``: ``H×W×C`` uint8 or uint16 with ``C`` = 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA). ``dpi``: horizontal
    and vertical resolution when the file states one. ``icc_profile``: the embedded profile, kept only when its
    colour space matches ``mode`` (a CMYK profile is dropped when CMYK is converted to RGB). ``exif``: the file's
    EXIF block as read (camera, date, GPS, …); :func:`save_image` writes it to PNG, JPEG and WebP with the
    orientation reset (the pixels are already upright) and the stated pixel size updated.
    """

    pixels: np.ndarray
    icc_profile: bytes | None = None
    dpi: tuple[float, float] | None = None
    format: str | None = None
    exif: bytes | None = None

    def __post_init__(self) -> None:
        if self.pixels.ndim == 2:
            self.pixels = self.pixels[:, :, None]
        if self.pixels.ndim != 3 or self.pixels.shape[2] not in _MODES:
            raise ValueError(f"pixels must be H×W×C with C in 1..4, got shape {self.pixels.shape}")
        if self.pixels.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"pixels must be uint8 or uint16, got {self.pixels.dtype}")

    @property
    def mode(self) -> str:
        return _MODES[self.pixels.shape[2]]

    @property
    def bit_depth(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] in (2, 4)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow reports it."""
        return self.pixels.shape[1], self.pixels.shape[0]


# --------------------------------------------------------------------------------------------------- reading


@contextlib.contextmanager
def pixel_limit_off() -> Iterator[None]:
    """Pillow's own decompression-bomb check off while images are opened here: it (a warning above 89 MP, an error
    above 179 MP) would pre-empt ``--max-pixels`` in both directions; lightsr checks that limit itself, from the
    header, before decoding."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


_ORIENT = {  # EXIF orientation → operations on an H×W×C array (as PIL.ImageOps.exif_transpose)
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, 3),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _swap_rawmode(args: object) -> object:
    """The tile arguments with the 16-bit byte order reversed (``RGB;16B`` ↔ ``RGB;16L``)."""
    def swap(raw: str) -> str:
        base, _, order = raw.rpartition(";16")
        order = {"N": "L" if sys.byteorder == "little" else "B"}.get(order, order)
        return f"{base};16{'B' if order == 'L' else 'L'}"

    if isinstance(args, str):
        return swap(args)
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return (swap(args[0]), *args[1:])
    raise ValueError(f"unexpected tile arguments {args!r}")


def _wide_kind(im) -> str | None:
    """How to recover the 16-bit samples Pillow reduces to 8: ``"colour"`` (RGB/RGBA: decode the low bytes in
    a second pass), ``"la"`` (gray+alpha, which Pillow expands to 8-bit RGBA: re-decode the raw bytes as
    RGBA, which has the same 4 bytes per pixel) or None."""
    if im.mode not in ("RGB", "RGBA") or not im.tile:
        return None
    args = im.tile[0][3]  # a tile's args: a named field from Pillow 11, a plain tuple's last item before
    raw = args if isinstance(args, str) else (args or ("",))[0]
    if not isinstance(raw, str) or ";16" not in raw:
        return None
    base = raw.split(";")[0]
    return "colour" if base in ("RGB", "RGBA") else "la" if base == "LA" and raw.endswith("16B") else None


def _with_args(tile: tuple, args: object) -> tuple:
    """A copy of a Pillow tile with other decoder arguments (a named tuple from Pillow 11, a plain 4-tuple before)."""
    return tile._replace(args=args) if hasattr(tile, "_replace") else (*tile[:3], args)


def _decode_again(path: str | Path, tile: list, kind: str) -> np.ndarray:
    from PIL import Image

    with pixel_limit_off(), Image.open(path) as im:
        if kind == "colour":
            im.tile = [_with_args(t, _swap_rawmode(t[3])) for t in tile]
        else:
            im.tile = [_with_args(t, "RGBA" if isinstance(t[3], str) else ("RGBA", *t[3][1:])) for t in tile]
        im.load()
        return np.asarray(im)


def _icc_matches(icc: bytes | None, mode: str) -> bytes | None:
    # The colour space signature sits at bytes 16..20 of the profile header.
    if not icc or len(icc) < 20:
        return None
    space = icc[16:20]
    return icc if (space == b"RGB " and mode in ("RGB", "RGBA")) or (space == b"GRAY" and mode in ("L", "LA")) \
        else None


def load_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               check_size: Callable[[int, int], None] | None = None) -> ImageData:
    """Decode ``path`` keeping channels, bit depth, ICC profile and resolution; EXIF orientation applied.

    Raises :class:`ImageReadError` (naming the file) for a missing, corrupt, unsupported or too large image, or
    one that does not fit in memory. ``check_size(width, height)``, called with the size the file's header
    states before anything is decoded, may refuse it by raising. Of an animated or multi-page file only the
    first frame is read, with a warning.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    w = h = 0
    try:
        with pixel_limit_off(), Image.open(path) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageReadError(f"{path}: {w}×{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} "
                                     "(a decompression-bomb guard; raise it with --max-pixels)")
            if check_size is not None:
                check_size(w, h)
            fmt = im.format
            info = dict(im.info)
            wide = _wide_kind(im)
            tile = list(im.tile)  # before getexif(), which may load the image (PNG) and clear the tiles
            # EXIF first: with Pillow 10, loading a multi-page TIFF closes the file that getexif() would read.
            exif = _read_exif(im)
            orientation = im.getexif().get(0x0112, 1)
            im.load()
            pixels = _to_array(im, path)
            frames = getattr(im, "n_frames", 1)
        if frames > 1:
            kind = "pages" if fmt in ("TIFF", "MPO") else "frames"
            log.warning("%s: has %d %s; only the first is read", path, frames, kind)
        if wide == "colour":
            low = _decode_again(path, tile, wide)
            if low.shape != pixels.shape:
                raise ImageReadError(f"{path}: cannot decode the 16-bit samples")
            pixels = (pixels.astype(np.uint16) << 8) | low.astype(np.uint16)
        elif wide == "la":
            raw = _decode_again(path, tile, wide).astype(np.uint16)  # bytes L_hi, L_lo, A_hi, A_lo
            pixels = np.stack([raw[..., 0] << 8 | raw[..., 1], raw[..., 2] << 8 | raw[..., 3]], axis=-1)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{path}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file Pillow can identify (corrupt or unsupported)") from None
    except MemoryError:
        raise ImageReadError(f"{path}: {w}×{h} pixels do not fit in memory (with --max-pixels 0 nothing "
                             "guards against a decompression bomb)") from None
    except Exception as e:  # whatever Pillow's decoders raise on a damaged file means a bad file
        if isinstance(e, LightSRError):
            raise
        why = first_line(e, 160)
        raise ImageReadError(f"{path}: cannot decode image ({why})") from None
    if orientation in _ORIENT:
        pixels = _ORIENT[orientation](pixels)
    dpi = info.get("dpi")
    if dpi is not None:
        with contextlib.suppress(TypeError, ValueError):
            dpi = (round(float(dpi[0]), 2), round(float(dpi[1]), 2))  # PNG stores dots per metre
        if not (isinstance(dpi, tuple) and dpi[0] > 1 and dpi[1] > 1):  # 0/1 mean "aspect ratio only"
            dpi = None
    data = ImageData(np.ascontiguousarray(pixels), dpi=dpi, format=fmt, exif=exif)
    data.icc_profile = _icc_matches(info.get("icc_profile"), data.mode)
    return data


# Tags that describe the TIFF container itself, not the photo: a TIFF's EXIF as Pillow reads it includes them, and
# they must not be copied into another file.
_TIFF_LAYOUT_TAGS = (256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 338, 339, 322, 323, 324, 325, 34675)
# Blobs that other applications keep in IFD0 (ColorMap, XMP, IPTC, Photoshop resources, Photoshop layers): not
# EXIF, often megabytes, and stale once the pixels change.
_FOREIGN_TAGS = (320, 700, 33723, 34377, 37724)
# A JPEG APP1 segment holds at most 65,535 bytes, 8 of them its own header.
_JPEG_EXIF_MAX = 65_527


def _read_exif(im) -> bytes | None:
    """The EXIF block of an open image (None when it has none or it cannot be parsed).

    Works on a copy: a TIFF's EXIF is its own first directory, and removing the strip tags from it there would
    leave Pillow unable to decode the pixels."""
    from PIL import Image

    try:
        src = im.getexif()
        for ifd in (0x8769, 0x8825):  # Exif and GPS sub-IFDs: tobytes() writes only those that have been read
            if ifd in src:
                src.get_ifd(ifd)
        if not len(src):
            return None
        exif = Image.Exif()
        exif.load(src.tobytes())
        for tag in (*_TIFF_LAYOUT_TAGS, *_FOREIGN_TAGS) if im.format == "TIFF" else _FOREIGN_TAGS:
            exif.pop(tag, None)
        if not len(exif):
            return None
        for ifd in (0x8769, 0x8825):
            if ifd in exif:
                exif.get_ifd(ifd)
        return exif.tobytes()
    except Exception as e:  # a damaged EXIF block must not cost the image: drop it and say so
        log.warning("%s: unreadable EXIF data dropped (%s)", getattr(im, "filename", "image"),
                    first_line(e, 80))
        return None


def exif_for(data: ImageData) -> bytes | None:
    """``data.exif`` made true of ``data.pixels``: orientation 1 (upright), the pixel size of the pixels, and the
    resolution of ``data.dpi`` (removed when it states none)."""
    if not data.exif:
        return None
    from PIL import Image

    try:
        exif = Image.Exif()
        exif.load(data.exif)
        w, h = data.size
        if 0x0112 in exif:
            exif[0x0112] = 1
        for tag, value in ((0x0100, w), (0x0101, h)):
            if tag in exif:
                exif[tag] = value
        if data.dpi:
            exif[0x011A], exif[0x011B], exif[0x0128] = float(data.dpi[0]), float(data.dpi[1]), 2  # per inch
        else:
            for tag in (0x011A, 0x011B, 0x0128):
                exif.pop(tag, None)
        if 0x8825 in exif:
            exif.get_ifd(0x8825)
        sub = exif.get_ifd(0x8769) if 0x8769 in exif else {}
        for tag, value in ((0xA002, w), (0xA003, h)):
            if tag in sub:
                sub[tag] = value
        return exif.tobytes()
    except Exception as e:
        log.warning("EXIF data not carried over (%s)", first_line(e, 80))
        return None


def composite(data: ImageData, background: tuple[int, int, int]) -> ImageData:
    """Alpha composited over an opaque 8-bit RGB ``background`` colour (scaled for 16-bit data); no alpha left."""
    if not data.has_alpha:
        return data
    px = data.pixels
    peak = 65535.0 if px.dtype == np.uint16 else 255.0
    a = px[:, :, -1:].astype(np.float32) / peak
    colour = px[:, :, :-1].astype(np.float32)
    bg = np.asarray(background, np.float32) * (peak / 255.0)
    if colour.shape[2] == 1:  # gray+alpha over a colour: the result is colour unless the colour is gray
        if len(set(background)) == 1:
            bg = bg[:1]
        else:
            colour = np.repeat(colour, 3, axis=2)
    out = colour * a + bg * (1 - a)
    return replace(data, pixels=np.clip(np.round(out), 0, peak).astype(px.dtype))


def _to_array(im, path: Path) -> np.ndarray:
    """Pixels of a loaded Pillow image as uint8/uint16 L, LA, RGB or RGBA."""
    mode = im.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(im)
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode == "P":
        # Palette images with any transparency (tRNS chunk or an alpha palette) become RGBA, others RGB.
        has_alpha = "transparency" in im.info or (im.palette is not None and im.palette.mode == "RGBA")
        target = "RGBA" if has_alpha else "RGB"
        return np.asarray(im.convert(target))
    if mode in ("PA", "RGBa", "RGBX", "La", "CMYK", "YCbCr", "LAB", "HSV"):
        target = {"PA": "RGBA", "RGBa": "RGBA", "La": "LA", "RGBX": "RGB"}.get(mode, "RGB")
        return np.asarray(im.convert(target))
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    if mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageReadError(f"{path}: 32-bit integer samples outside 0..65535 are not supported")
        return arr.astype(np.uint16)
    raise ImageReadError(f"{path}: pixel mode {mode!r} is not supported (floating-point or exotic samples)")


def read_image(path: str | Path, mode: str = "RGB") -> np.ndarray:
    """Decode an image file to a uint8 ``H×W×3`` (``mode='RGB'``) or ``H×W`` (``mode='L'``) array.

    ``mode='auto'`` keeps single-channel images single-channel (``H×W``): grayscale files of any bit depth and
    palette images whose palette is gray, as evaluation needs (Set14's ``bridge`` is scored on its one channel).
    The simple reader for evaluation code: 8 bits, no alpha, EXIF orientation *not* applied (benchmark images
    are used as stored).
    """
    from PIL import Image, UnidentifiedImageError

    if mode not in ("RGB", "L", "auto"):
        raise ValueError(f"read_image: mode must be 'RGB', 'L' or 'auto', not {mode!r}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I"):  # 16-bit grayscale: Pillow's convert() would clip it at 255
                gray = to_uint8(_to_array(im, Path(path)))
                return np.repeat(gray[..., None], 3, axis=2) if mode == "RGB" else gray
            if mode == "auto":
                mode = "L" if im.mode in ("L", "1") or (im.mode == "P" and _palette_is_gray(im)) else "RGB"
            return np.asarray(im.convert(mode))
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"{path}: cannot read image ({e})") from None


def _palette_is_gray(im) -> bool:
    pal = np.asarray(im.convert("RGB"))
    return bool((pal[..., 0] == pal[..., 1]).all() and (pal[..., 1] == pal[..., 2]).all())


# --------------------------------------------------------------------------------------------------- writing


def format_for(path: str | Path) -> str:
    """The output format a file name asks for (by extension)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ImageWriteError(f"{path}: unknown output extension {suffix or '(none)'!r}; "
                              f"use one of {', '.join(sorted({s.lstrip('.') for s in FORMATS}))}")
    return FORMATS[suffix]


def save_image(path: str | Path, data: ImageData | np.ndarray, quality: int = 95) -> None:
    """Write ``data`` atomically in the format its extension names: never a partial file.

    16-bit data is written as 16-bit to PNG and TIFF and rounded to 8 bits for JPEG, WebP and BMP; alpha is
    dropped for JPEG (the caller warns). ``quality`` applies to JPEG (4:4:4, no chroma subsampling) and WebP.
    """
    if isinstance(data, np.ndarray):
        data = ImageData(data)
    path = Path(path)
    fmt = format_for(path)
    if fmt not in HIGH_BIT_DEPTH_FORMATS and data.bit_depth == 16:
        data = replace(data, pixels=to_uint8(data.pixels))
    if fmt not in ALPHA_FORMATS and data.has_alpha:
        data = replace(data, pixels=data.pixels[:, :, :-1])
    if fmt == "WEBP" and data.mode in ("L", "LA"):  # WebP has no grayscale
        data = replace(data, pixels=np.repeat(data.pixels[:, :, :1], 3, axis=2) if data.mode == "L" else
                       np.concatenate([np.repeat(data.pixels[:, :, :1], 3, axis=2), data.pixels[:, :, 1:]], 2))
    try:
        with atomic_write(path) as tmp:  # a temporary beside it, renamed into place: never a partial file
            if data.bit_depth == 16 and fmt == "PNG":
                _write_png16(tmp, data)
            elif data.bit_depth == 16:
                _write_tiff16(tmp, data)
            else:
                _save_pillow(tmp, data, fmt, quality, path)
    except WriteError as e:
        raise ImageWriteError(str(e)) from None


def _save_pillow(tmp: Path, data: ImageData, fmt: str, quality: int, dst: Path) -> None:
    from PIL import Image

    px = data.pixels
    im = Image.fromarray(px[:, :, 0] if px.shape[2] == 1 else px, mode=data.mode)
    kwargs: dict = {}
    if data.icc_profile and fmt in ("PNG", "JPEG", "TIFF", "WEBP"):
        kwargs["icc_profile"] = data.icc_profile
    # TIFF stores EXIF as its own tags and sub-directories, which Pillow's TIFF writer cannot take from a block.
    exif = exif_for(data) if fmt in ("PNG", "JPEG", "WEBP") else None
    if exif and fmt == "JPEG" and len(exif) > _JPEG_EXIF_MAX:
        log.warning("%s: the EXIF data (%d bytes) does not fit in a JPEG file; not carried over", dst, len(exif))
        exif = None
    if exif:
        kwargs["exif"] = exif
    if data.dpi and fmt in ("PNG", "JPEG", "TIFF", "BMP"):
        kwargs["dpi"] = (round(data.dpi[0]), round(data.dpi[1])) if fmt in ("JPEG", "BMP") else data.dpi
    if fmt == "JPEG":
        kwargs.update(quality=quality, subsampling=0)
    elif fmt == "WEBP":
        kwargs.update(quality=quality, method=4)
    elif fmt == "TIFF":
        kwargs.update(compression="tiff_adobe_deflate")
    try:
        im.save(tmp, format=fmt, **kwargs)
    except ValueError as e:  # what Pillow's encoders refuse (e.g. metadata too large for the format)
        raise ImageWriteError(f"{dst}: {fmt} cannot store this image ({first_line(e, 120)})") from None


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)


def _paeth_filter(rows: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """PNG Paeth filter (type 4) of byte rows given the row above the block; vectorised (encoding has no
    sequential dependence, unlike decoding)."""
    up = np.concatenate([prev[None], rows[:-1]], 0).astype(np.int16)
    cur = rows.astype(np.int16)
    left = np.zeros_like(cur)
    left[:, bpp:] = cur[:, :-bpp]
    upleft = np.zeros_like(cur)
    upleft[:, bpp:] = up[:, :-bpp]
    p = left + up - upleft
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    return ((cur - pred) & 0xFF).astype(np.uint8)


def _write_png16(path: Path, data: ImageData) -> None:
    px = data.pixels
    h, w, c = px.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    out = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))]
    if data.icc_profile:
        out.append(_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(data.icc_profile)))
    if data.dpi:
        ppm = [round(d / 0.0254) for d in data.dpi]
        out.append(_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    exif = exif_for(data)
    if exif:  # PNG's eXIf chunk holds the TIFF-structured block without JPEG's "Exif\0\0" marker
        out.append(_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    comp = zlib.compressobj(6)
    idat = []
    bpp = 2 * c
    prev = np.zeros(w * bpp, np.uint8)
    for y0 in range(0, h, 256):  # blocks of rows bound the temporary memory
        rows = np.ascontiguousarray(px[y0:y0 + 256], dtype=">u2").view(np.uint8).reshape(-1, w * bpp)
        filt = _paeth_filter(rows, prev, bpp)
        prev = rows[-1].copy()
        block = np.concatenate([np.full((filt.shape[0], 1), 4, np.uint8), filt], 1)
        idat.append(comp.compress(block.tobytes()))
    idat.append(comp.flush())
    out.append(_chunk(b"IDAT", b"".join(idat)))
    out.append(_chunk(b"IEND", b""))
    path.write_bytes(b"".join(out))


def _write_tiff16(path: Path, data: ImageData) -> None:
    """Baseline little-endian TIFF, 16 bits per sample, Adobe-deflate strips with horizontal differencing."""
    px = data.pixels
    h, w, c = px.shape
    row_bytes = w * c * 2
    rows_per_strip = max(1, min(h, (1 << 18) // row_bytes))
    strips = []
    for y0 in range(0, h, rows_per_strip):
        block = px[y0:y0 + rows_per_strip].astype(np.int32)
        diff = block.copy()
        diff[:, 1:] -= block[:, :-1]  # predictor 2: per-sample difference with the left pixel, mod 2^16
        strips.append(zlib.compress((diff & 0xFFFF).astype("<u2").tobytes(), 6))
    # Layout: header, strip data, then the IFD and its out-of-line values.
    blob = bytearray(b"II*\x00\x00\x00\x00\x00")
    offsets = []
    for s in strips:
        offsets.append(len(blob))
        blob += s
        if len(blob) % 2:
            blob += b"\x00"
    extra = bytearray()
    entries: list[tuple[int, int, int, bytes]] = []  # tag, type, count, packed value(s)

    def add(tag: int, typ: int, values: list[int] | bytes) -> None:
        if typ == 7:
            entries.append((tag, typ, len(values), bytes(values)))
            return
        fmt = {3: "<H", 4: "<I", 5: "<II"}[typ]
        packed = b"".join(struct.pack(fmt, *(v if isinstance(v, tuple) else (v,))) for v in values)
        entries.append((tag, typ, len(values), packed))

    add(256, 4, [w])
    add(257, 4, [h])
    add(258, 3, [16] * c)
    add(259, 3, [8])  # Adobe deflate
    add(262, 3, [2 if c >= 3 else 1])  # RGB or BlackIsZero
    add(273, 4, offsets)
    add(277, 3, [c])
    add(278, 4, [rows_per_strip])
    add(279, 4, [len(s) for s in strips])
    if data.dpi:
        add(282, 5, [(round(data.dpi[0] * 100), 100)])
        add(283, 5, [(round(data.dpi[1] * 100), 100)])
    add(284, 3, [1])
    if data.dpi:
        add(296, 3, [2])  # inch
    add(317, 3, [2])  # horizontal differencing
    if c in (2, 4):
        add(338, 3, [2])  # unassociated alpha
    add(339, 3, [1] * c)  # unsigned integer samples
    if data.icc_profile:
        add(34675, 7, data.icc_profile)
    entries.sort()
    ifd_offset = len(blob)
    extra_base = ifd_offset + 2 + 12 * len(entries) + 4
    ifd = bytearray(struct.pack("<H", len(entries)))
    for tag, typ, count, packed in entries:
        if len(packed) <= 4:
            ifd += struct.pack("<HHI", tag, typ, count) + packed.ljust(4, b"\x00")
        else:
            ifd += struct.pack("<HHII", tag, typ, count, extra_base + len(extra))
            extra += packed
            if len(extra) % 2:
                extra += b"\x00"
    ifd += b"\x00\x00\x00\x00"
    blob[4:8] = struct.pack("<I", ifd_offset)
    path.write_bytes(bytes(blob + ifd + extra))


# ------------------------------------------------------------------------------------------------ conversion


def check_not_empty(shape: tuple[int, ...], what: str) -> None:
    """A one-line :class:`UsageError` for an input of ``shape`` without pixels (``what``: image, array, tensor)."""
    if 0 in tuple(shape):
        raise UsageError(f"{what} input has no pixels (shape {tuple(shape)})")


def unpack(image: Any) -> tuple[ImageData | list[torch.Tensor], Callable[[Any], Any]]:
    """What upscaling takes of an image object, and how its result goes back into that kind of object.

    Integer arrays (uint8/uint16, ``H×W`` or ``H×W×C``), PIL images and :class:`ImageData` become
    :class:`ImageData` (bit depth, alpha, ICC profile and DPI kept); float arrays in [0, 1] (``H×W`` or ``H×W×C``)
    and float tensors (``C×H×W`` or ``N×C×H×W``, any device and dtype) become ``C×H×W`` float32 CPU tensors.
    ``repack(result)`` turns the upscaled :class:`ImageData` or list of tensors into the input's kind.
    """
    import torch

    if isinstance(image, ImageData):
        return image, lambda data: data
    if isinstance(image, torch.Tensor):
        if not image.is_floating_point():
            raise UsageError(f"tensor input must be float in [0, 1], got {image.dtype}")
        check_not_empty(image.shape, "tensor")
        if image.ndim not in (3, 4):
            raise UsageError(f"tensor input must be C×H×W or N×C×H×W, got shape {tuple(image.shape)}")
        batch = list(image) if image.ndim == 4 else [image]
        return batch, lambda ts: (torch.stack(ts) if image.ndim == 4 else ts[0]).to(image.device, image.dtype)
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise UsageError(f"array input must be H×W or H×W×C, got shape {image.shape}")
        check_not_empty(image.shape, "array")
        flat = image.ndim == 2
        if image.dtype.kind == "f":
            t = torch.from_numpy(np.ascontiguousarray(image[:, :, None] if flat else image))
            return [t.permute(2, 0, 1).float()], lambda ts: _squeeze(ts[0].permute(1, 2, 0).numpy(), flat)
        if image.dtype not in (np.uint8, np.uint16):
            raise UsageError(f"array input must be uint8, uint16 or float in [0, 1], got {image.dtype}")
        return ImageData(image), lambda data: _squeeze(data.pixels, flat)
    from PIL import Image

    if isinstance(image, Image.Image):
        return from_pil(image), to_pil
    raise TypeError(f"cannot upscale a {type(image).__name__}: pass a PIL image, a numpy array or a torch tensor")


def _squeeze(px: np.ndarray, flat: bool) -> np.ndarray:
    return px[:, :, 0] if flat else px


def from_pil(im: Any) -> ImageData:
    """A Pillow image (any mode :func:`load_image` reads) as :class:`ImageData`, with its ICC profile and DPI."""
    pixels = _to_array(im, Path("<PIL image>"))
    dpi = im.info.get("dpi")
    return ImageData(pixels, icc_profile=im.info.get("icc_profile"),
                     dpi=(float(dpi[0]), float(dpi[1])) if dpi else None)


def to_pil(data: ImageData) -> Any:
    """:class:`ImageData` as a Pillow image (16-bit gray as mode ``I;16``), with its ICC profile and DPI."""
    from PIL import Image

    px = data.pixels
    if data.bit_depth == 16:
        if data.mode != "L":  # Pillow has no 16-bit colour mode; only reachable from I;16 inputs (gray)
            raise UsageError("16-bit colour cannot be returned as a PIL image; pass a numpy array instead")
        im = Image.fromarray(px[:, :, 0].astype("<u2"))  # little-endian uint16: Pillow's mode I;16
    else:
        im = Image.fromarray(px[:, :, 0] if px.shape[2] == 1 else px, mode=data.mode)
    if data.icc_profile:
        im.info["icc_profile"] = data.icc_profile
    if data.dpi:
        im.info["dpi"] = data.dpi
    return im


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """uint16 → uint8 by rounding (x / 257); uint8 unchanged."""
    if pixels.dtype == np.uint8:
        return pixels
    return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def array_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``H×W×C`` (or ``H×W``) uint8/uint16 → ``C×H×W`` float32 in [0, 1] (÷255 or ÷65535)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    import torch

    peak = 65535.0 if pixels.dtype == np.uint16 else 255.0
    # astype copies: the tensor never aliases the caller's (possibly read-only) array.
    return torch.from_numpy(pixels.transpose(2, 0, 1).astype(np.float32)).div_(peak)


def tensor_to_array(t: torch.Tensor, dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """``C×H×W`` float in [0, 1] → ``H×W×C`` uint8/uint16: float32, clamped, scaled, rounded half to even.

    The one float → integer conversion of network outputs (upscaling and evaluation alike); for uint8 it is
    BasicSR's ``tensor2img``, so PSNR/SSIM are computed on the images the papers' protocol scores.
    """
    import torch

    peak = 65535.0 if np.dtype(dtype) == np.uint16 else 255.0
    q = t.detach().float().clamp(0, 1).mul_(peak).round_()
    q = q.to(torch.int32 if peak > 255 else torch.uint8).cpu().numpy()
    return q.transpose(1, 2, 0).astype(dtype, copy=False)

