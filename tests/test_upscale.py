"""``lightsr upscale`` and the Python API: formats kept end to end, file handling, errors.

A tiny random LKSMN (×2, whole-image runs) is the network: its output is checked against running the network
directly on the pixels Pillow decodes — an independent reference for the whole read → upscale → write path.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms, ImageOps

import lightsr
from lightsr.cli import main
from lightsr.imageio import ImageData, load_image, save_image
from lightsr.upscaler import Upscaler, fill_transparent

SCALE = 2


@pytest.fixture(scope="module")
def net() -> lightsr.SRNet:
    torch.manual_seed(0)
    return lightsr.create_model("lksmn", scale=SCALE, channels=12, num_blocks=1).eval()


@pytest.fixture(scope="module")
def weights(net: lightsr.SRNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lightsr.save_model(net, tmp_path_factory.mktemp("w") / "tiny_x2.safetensors")


def _reference(net: torch.nn.Module, rgb: np.ndarray, peak: float) -> np.ndarray:
    """The network on an H×W×3 integer array, straight through torch: float H'×W'×3 in [0, peak]."""
    x = torch.from_numpy(rgb.astype(np.float32) / peak).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = net(x)[0].clamp(0, 1)
    return y.permute(1, 2, 0).numpy() * peak


def _rgb(h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth colour image with some texture (not noise: closer to what the network is made for)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], -1)
    return np.clip((base * 0.8 + rng.random((h, w, 3)) * 0.2) * 255, 0, 255).round().astype(np.uint8)


def _upscale(src: Path, dst: Path, weights: Path, *extra: str) -> int:
    return main(["upscale", str(src), "-o", str(dst), "--weights", str(weights), "--tile", "0", "-q", *extra])


# ------------------------------------------------------------------------------------------------- formats


def test_rgb_png_matches_the_network(tmp_path: Path, net, weights: Path) -> None:
    rgb = _rgb()
    Image.fromarray(rgb).save(tmp_path / "in.png")
    assert _upscale(tmp_path / "in.png", tmp_path / "out.png", weights) == 0
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == "RGB" and im.size == (32 * SCALE, 24 * SCALE)
        out = np.asarray(im).astype(np.float64)
    assert np.abs(out - _reference(net, rgb, 255)).max() <= 0.5 + 1e-3  # rounding only


def test_grayscale_stays_grayscale(tmp_path: Path, net, weights: Path) -> None:
    gray = _rgb()[:, :, 1]
    Image.fromarray(gray, mode="L").save(tmp_path / "in.png")
    assert _upscale(tmp_path / "in.png", tmp_path / "out.png", weights) == 0
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == "L"
        out = np.asarray(im).astype(np.float64)
    ref = _reference(net, np.repeat(gray[:, :, None], 3, 2), 255) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(out - ref).max() <= 0.5 + 1e-3


def test_rgba_alpha_kept_transparent_stays_transparent_and_hidden_colour_does_not_bleed(
        tmp_path: Path, weights: Path) -> None:
    h, w = 24, 32
    rgb = _rgb(h, w)
    alpha = np.full((h, w), 255, np.uint8)
    alpha[:, 20:] = 0  # a transparent band on the right
    alpha[:, 18:20] = 128  # with a half-transparent edge
    rng = np.random.default_rng(1)
    outs = []
    for k in range(2):
        hidden = rgb.copy()
        hidden[alpha == 0] = rng.integers(0, 256, (int((alpha == 0).sum()), 3)) if k else 0  # garbage vs black
        Image.fromarray(np.dstack([hidden, alpha]), mode="RGBA").save(tmp_path / f"in{k}.png")
        assert _upscale(tmp_path / f"in{k}.png", tmp_path / f"out{k}.png", weights) == 0
        with Image.open(tmp_path / f"out{k}.png") as im:
            assert im.mode == "RGBA" and im.size == (w * SCALE, h * SCALE)
            outs.append(np.asarray(im))
    a0 = outs[0][:, :, 3].astype(np.float64)
    # Alpha: bicubic of the input alpha (independent reference: torch's bicubic on the whole plane) ...
    ref_a = F.interpolate(torch.from_numpy(alpha.astype(np.float32) / 255)[None, None], scale_factor=SCALE,
                          mode="bicubic", align_corners=False)[0, 0].clamp(0, 1).numpy() * 255
    assert np.abs(a0 - ref_a).max() <= 0.5 + 1e-3
    # ... exactly 0 where the input is transparent all around, exactly 255 where it is opaque all around.
    assert (outs[0][:, (22 * SCALE):, 3] == 0).all()
    assert (outs[0][:, : 16 * SCALE, 3] == 255).all()
    # Colour hidden under alpha = 0 has no influence anywhere: black and noise give identical outputs.
    assert np.array_equal(outs[0], outs[1])


def test_fill_transparent_only_touches_invisible_pixels() -> None:
    rgb = torch.rand(3, 9, 11)
    alpha = (torch.rand(9, 11) > 0.5).float() * torch.rand(9, 11)
    filled = fill_transparent(rgb, alpha)
    visible = alpha > 0
    assert torch.equal(filled[:, visible], rgb[:, visible])
    # A filled colour is a convex combination of visible colours: within their range, channel by channel.
    for c in range(3):
        assert filled[c, ~visible].min() >= rgb[c, visible].min() - 1e-6
        assert filled[c, ~visible].max() <= rgb[c, visible].max() + 1e-6


def _png_bit_depth(path: Path) -> int:
    data = path.read_bytes()
    assert data[12:16] == b"IHDR"
    return data[24]


@pytest.mark.parametrize("channels", [3, 1, 4])
def test_16bit_png_keeps_16_bits(tmp_path: Path, net, weights: Path, channels: int) -> None:
    h, w = 20, 28
    yy, xx = np.mgrid[0:h, 0:w]
    base = (xx * 2339 + yy * 977) % 65536  # every value distinct from 8-bit-scaled ones (multiples of 257)
    pix = np.stack([base, (base * 7) % 65536, 65535 - base], -1).astype(np.uint16)
    if channels == 1:
        pix = pix[:, :, :1]
        Image.fromarray(pix[:, :, 0]).save(tmp_path / "in.png")  # Pillow's own 16-bit (I;16) writer
    else:
        if channels == 4:
            pix = np.dstack([pix, np.full((h, w), 65535, np.uint16)])
        save_image(tmp_path / "in.png", ImageData(pix))
    assert load_image(tmp_path / "in.png").bit_depth == 16
    assert _upscale(tmp_path / "in.png", tmp_path / "out.png", weights) == 0
    assert _png_bit_depth(tmp_path / "out.png") == 16
    out = load_image(tmp_path / "out.png").pixels
    assert out.dtype == np.uint16 and out.shape == (h * SCALE, w * SCALE, channels)
    colour = out[:, :, :3].astype(np.float64)
    rgb = pix[:, :, :3] if channels >= 3 else np.repeat(pix, 3, 2)
    ref = _reference(net, rgb, 65535)
    if channels == 1:
        ref = ref @ np.array([0.299, 0.587, 0.114])[:, None]
        colour = colour[:, :, :1]
    # Full 16-bit precision: within rounding of the float result, which ×257 of 8 bits could not reach.
    assert np.abs(colour - ref).max() <= 0.5 + 0.02
    inside = out[:, :, :3][(out[:, :, :3] > 0) & (out[:, :, :3] < 65535)]  # (the random net clips a lot)
    assert inside.size > 500 and (inside % 257 != 0).mean() > 0.9
    assert len(np.unique(inside)) > 500


def test_16bit_tiff_round_trip_and_third_party_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    written = {}
    for c in (1, 3, 4):
        pix = written[c] = rng.integers(0, 65536, (13, 17, c), dtype=np.uint16)
        save_image(tmp_path / f"t{c}.tif", ImageData(pix, dpi=(300.0, 300.0)))
        back = load_image(tmp_path / f"t{c}.tif")
        assert back.bit_depth == 16 and np.array_equal(back.pixels, pix) and back.dpi == (300.0, 300.0)
    tifffile = pytest.importorskip("tifffile")
    for c in (3, 4):  # an independent TIFF reader sees the same samples
        assert np.array_equal(tifffile.imread(tmp_path / f"t{c}.tif"), written[c])
    # And files written by another writer (big-endian, deflate with predictor) are read at 16 bits.
    pix = rng.integers(0, 65536, (13, 17, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "be.tif", pix, photometric="rgb", byteorder=">")
    tifffile.imwrite(tmp_path / "z.tif", pix, photometric="rgb", compression="zlib", predictor=2)
    for name in ("be.tif", "z.tif"):
        assert np.array_equal(load_image(tmp_path / name).pixels, pix)


def test_16bit_png_codec_round_trip_all_layouts(tmp_path: Path) -> None:
    """Our Paeth-filtered 16-bit PNG writer, decoded by Pillow's own PNG decoder (two passes), is lossless."""
    rng = np.random.default_rng(2)
    for c in (1, 2, 3, 4):
        pix = rng.integers(0, 65536, (300, 7, c), dtype=np.uint16)  # > 256 rows: several filter blocks
        pix[:, :3] = pix[:1, :3]  # smooth columns exercise the predictors
        save_image(tmp_path / f"p{c}.png", ImageData(pix))
        assert np.array_equal(load_image(tmp_path / f"p{c}.png").pixels, pix)
        if c == 1:  # Pillow decodes 16-bit gray natively: an independent check of the writer
            with Image.open(tmp_path / "p1.png") as im:
                assert np.array_equal(np.asarray(im).astype(np.uint16), pix[:, :, 0])


def test_palette_png_becomes_rgb_or_rgba(tmp_path: Path, net, weights: Path) -> None:
    rgb = _rgb()
    pal = Image.fromarray(rgb).quantize(colors=16)
    pal.save(tmp_path / "p.png")
    expanded = np.asarray(pal.convert("RGB"))
    assert _upscale(tmp_path / "p.png", tmp_path / "out.png", weights) == 0
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == "RGB"
        assert np.abs(np.asarray(im) - _reference(net, expanded, 255)).max() <= 0.5 + 1e-3
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    assert _upscale(tmp_path / "pt.png", tmp_path / "out_t.png", weights) == 0
    with Image.open(tmp_path / "out_t.png") as im:
        assert im.mode == "RGBA"


def test_exif_rotated_jpeg_is_upright(tmp_path: Path, net, weights: Path) -> None:
    rgb = _rgb(24, 32)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    with Image.open(tmp_path / "r.jpg") as im:
        upright = np.asarray(ImageOps.exif_transpose(im))
    assert upright.shape[:2] == (32, 24)
    assert _upscale(tmp_path / "r.jpg", tmp_path / "out.png", weights) == 0
    with Image.open(tmp_path / "out.png") as im:
        assert im.size == (24 * SCALE, 32 * SCALE)
        assert np.abs(np.asarray(im) - _reference(net, upright, 255)).max() <= 0.5 + 1e-3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_rgb(6, 10)).save(tmp_path / "o.jpg", exif=exif.tobytes())
    with Image.open(tmp_path / "o.jpg") as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(load_image(tmp_path / "o.jpg").pixels, expected)


def test_icc_profile_and_dpi_carried_over(tmp_path: Path, weights: Path) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(_rgb()).save(tmp_path / "in.png", icc_profile=icc, dpi=(300, 300))
    Image.fromarray(_rgb()).save(tmp_path / "in.jpg", icc_profile=icc, dpi=(72, 72), quality=95)
    for name in ("in.png", "in.jpg"):
        out = tmp_path / f"out_{name}"
        assert _upscale(tmp_path / name, out, weights) == 0
        with Image.open(out) as im:
            assert im.info.get("icc_profile") == icc
            # DPI scales with the image: same physical size, SCALE× the pixel density.
            expected = 300 * SCALE if name.endswith("png") else 72 * SCALE
            assert tuple(round(v) for v in im.info["dpi"]) == (expected, expected)


def _camera_exif(orientation: int, w: int, h: int) -> bytes:
    """A camera's EXIF block, written by hand (big-endian TIFF structure; Pillow 10.0 cannot write the Exif
    sub-IFD of a new block): Make, Model, Orientation, and DateTimeOriginal, PixelX/YDimension in the Exif IFD."""
    import struct

    make, model, date = b"Canon\0", b"EOS 5D\0", b"2024:05:06 07:08:09\0"
    ifd0, n0, n1 = 8, 4, 3
    sub = ifd0 + 2 + 12 * n0 + 4
    data = sub + 2 + 12 * n1 + 4
    offs = [data, data + len(make), data + len(make) + len(model)]

    def entry(tag: int, typ: int, count: int, value: int, short: bool = False) -> bytes:
        packed = struct.pack(">HH", value, 0) if short else struct.pack(">I", value)
        return struct.pack(">HHI", tag, typ, count) + packed

    body = b"MM\0*" + struct.pack(">I", ifd0)
    body += struct.pack(">H", n0) + entry(0x010F, 2, len(make), offs[0]) + entry(0x0110, 2, len(model), offs[1])
    body += entry(0x0112, 3, 1, orientation, short=True) + entry(0x8769, 4, 1, sub) + struct.pack(">I", 0)
    body += struct.pack(">H", n1) + entry(0x9003, 2, len(date), offs[2])
    body += entry(0xA002, 4, 1, w) + entry(0xA003, 4, 1, h) + struct.pack(">I", 0)
    return b"Exif\0\0" + body + make + model + date


@pytest.mark.parametrize("out_name", ["out.jpg", "out.png", "out.webp", "out16.png"])
def test_exif_is_carried_over_upright_and_resized(tmp_path: Path, weights: Path, out_name: str) -> None:
    """Camera, date and the rest survive; orientation is reset (the pixels are upright) and the stated size is
    the output's."""
    src = tmp_path / "in.jpg"
    Image.fromarray(_rgb(24, 32)).save(src, exif=_camera_exif(6, 32, 24), quality=95)
    if out_name == "out16.png":  # a 16-bit input goes through lightsr's own PNG writer
        data = load_image(src)
        src = tmp_path / "in16.png"
        save_image(src, ImageData((data.pixels.astype(np.uint16) * 257), exif=data.exif))
        with Image.open(src) as im:
            assert im.getexif()[0x010F] == "Canon"
    assert _upscale(src, tmp_path / out_name, weights) == 0
    with Image.open(tmp_path / out_name) as im:
        exif = im.getexif()
        w, h = im.size
    assert (w, h) == (24 * SCALE, 32 * SCALE)  # upright: orientation 6 turned the 32×24 pixels
    assert exif[0x010F] == "Canon" and exif[0x0110] == "EOS 5D"
    assert exif.get(0x0112, 1) == 1
    sub = exif.get_ifd(0x8769)
    assert sub[0x9003] == "2024:05:06 07:08:09" and (sub[0xA002], sub[0xA003]) == (w, h)


def test_exif_resolution_follows_the_dpi_and_large_or_foreign_blocks_do_not_stop_a_run(
        tmp_path: Path, weights: Path, caplog) -> None:
    from PIL import TiffImagePlugin

    exif = Image.Exif()
    exif[0x010F], exif[0x011A], exif[0x011B], exif[0x0128] = "Canon", 300.0, 300.0, 2
    Image.fromarray(_rgb()).save(tmp_path / "dpi.jpg", exif=exif.tobytes(), dpi=(300, 300), quality=95)
    assert _upscale(tmp_path / "dpi.jpg", tmp_path / "dpi_out.jpg", weights) == 0
    with Image.open(tmp_path / "dpi_out.jpg") as im:
        e = im.getexif()
        assert e[0x010F] == "Canon" and (float(e[0x011A]), float(e[0x011B])) == (300.0 * SCALE, 300.0 * SCALE)
        assert tuple(round(v) for v in im.info["dpi"]) == (300 * SCALE, 300 * SCALE)
    # 70 kB of EXIF cannot go into a JPEG: the image is written without it, with a warning.
    big = Image.Exif()
    big[0x010E] = "x" * 70_000
    Image.fromarray(_rgb()).save(tmp_path / "big.png", exif=big.tobytes())
    with caplog.at_level("WARNING", logger="lightsr"):
        assert _upscale(tmp_path / "big.png", tmp_path / "big.jpg", weights) == 0
    assert "does not fit in a JPEG file" in caplog.text
    with Image.open(tmp_path / "big.jpg") as im:
        assert 0x010E not in im.getexif()
    # Photoshop's layer blob in a TIFF's first directory is not EXIF: dropped, the camera make kept.
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[37724], info[0x010F] = b"\0" * 100_000, "Canon"
    Image.fromarray(_rgb()).save(tmp_path / "ps.tif", tiffinfo=info)
    assert _upscale(tmp_path / "ps.tif", tmp_path / "ps.jpg", weights) == 0
    with Image.open(tmp_path / "ps.jpg") as im:
        e = im.getexif()
        assert e[0x010F] == "Canon" and 37724 not in e and 273 not in e


def test_background_composites_alpha_for_formats_without_it(tmp_path: Path, net, weights: Path, capsys,
                                                             caplog) -> None:
    rgba = np.dstack([_rgb(), np.tile(np.linspace(0, 255, 32).round().astype(np.uint8), (24, 1))])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in.png")
    assert _upscale(tmp_path / "in.png", tmp_path / "ref.png", weights) == 0
    ref = np.asarray(Image.open(tmp_path / "ref.png")).astype(np.float64)
    assert _upscale(tmp_path / "in.png", tmp_path / "out.jpg", weights, "--background", "#ff8000",
                    "--quality", "100") == 0
    out = np.asarray(Image.open(tmp_path / "out.jpg")).astype(np.float64)
    a = ref[..., 3:] / 255
    expected = ref[..., :3] * a + np.array([255, 128, 0]) * (1 - a)  # an independent float64 composite
    assert np.abs(out - expected).mean() < 1.5  # JPEG at quality 100, 4:4:4
    assert np.abs(out[:, :2] - [255, 128, 0]).max() <= 6  # the fully transparent column is the background
    # Without --background: the alpha channel is dropped, with a warning that names the option.
    with caplog.at_level("WARNING", logger="lightsr"):
        assert main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "plain.jpg"), "--weights",
                     str(weights), "--tile", "0"]) == 0
    assert "--background" in caplog.text
    with pytest.raises(SystemExit) as e:
        main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "x.jpg"), "--weights", str(weights),
              "--background", "not-a-colour"])
    assert e.value.code == 2 and not (tmp_path / "x.jpg").exists()
    assert "--background: 'not-a-colour': expected a colour name" in capsys.readouterr().err


def test_progress_in_a_log_file_has_no_carriage_returns(tmp_path: Path, weights: Path) -> None:
    """stderr redirected to a file (not a terminal): no tqdm redraws, only plain lines."""
    import subprocess
    import sys

    for i in range(2):
        Image.fromarray(_rgb(40, 48, seed=i)).save(tmp_path / f"in{i}.png")
    with (tmp_path / "log.txt").open("w") as log:
        r = subprocess.run([sys.executable, "-m", "lightsr", "upscale", str(tmp_path / "in0.png"),
                            str(tmp_path / "in1.png"), "-o", str(tmp_path / "out"), "--weights", str(weights),
                            "--tile", "16"], stderr=log, stdout=subprocess.DEVNULL, timeout=300)
    text = (tmp_path / "log.txt").read_text()
    assert r.returncode == 0, text
    assert "\r" not in text and "2/2 images upscaled" in text


def test_16bit_to_jpeg_is_rounded_to_8_bits(tmp_path: Path, net, weights: Path) -> None:
    pix = (np.asarray(_rgb(), np.uint16) * 257 + 100).astype(np.uint16)
    save_image(tmp_path / "in.png", ImageData(pix))
    assert _upscale(tmp_path / "in.png", tmp_path / "out.tif", weights) == 0
    assert load_image(tmp_path / "out.tif").bit_depth == 16
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "o") + "/", "--ext", "jpg",
                 "--weights", str(weights), "-q"]) == 0
    with Image.open(tmp_path / "o" / "in_x2.jpg") as im:
        assert im.mode == "RGB" and im.size == (64, 48)


# ---------------------------------------------------------------------------------------------- Python API


def test_python_api_returns_the_kind_it_gets(net) -> None:
    up = Upscaler(net, tile=0)
    rgb = _rgb()
    ref = _reference(net, rgb, 255)
    out = up(rgb)
    assert out.dtype == np.uint8 and out.shape == (48, 64, 3) and np.abs(out - ref).max() <= 0.5 + 1e-3
    gray = up(rgb[:, :, 0])
    assert gray.shape == (48, 64) and gray.dtype == np.uint8
    wide = up(rgb.astype(np.uint16) * 257)
    assert wide.dtype == np.uint16
    im = up(Image.fromarray(rgb))
    assert isinstance(im, Image.Image) and im.mode == "RGB" and np.abs(np.asarray(im) - ref).max() <= 0.5 + 1e-3
    assert up(Image.fromarray(rgb).convert("LA")).mode == "LA"
    x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        expected = net(x[None]).clamp(0, 1)
    t = up(x)
    assert t.shape == (3, 48, 64) and torch.allclose(t, expected[0], atol=1e-6)
    tb = up(torch.stack([x, x.flip(-1)]))
    assert tb.shape == (2, 3, 48, 64) and torch.allclose(tb[0], expected[0], atol=1e-6)
    # The module-level function (lightsr.upscale) does the same in one call.
    assert np.array_equal(lightsr.upscale(rgb, model=net, tile=0), out)
    with pytest.raises(TypeError):
        up("not an image")


def test_upscaler_keeps_the_callers_network_untouched(net) -> None:
    before = {k: v.clone() for k, v in net.state_dict().items()}
    Upscaler(net, precision="bf16")(_rgb())
    assert all(torch.equal(v, before[k]) and v.dtype == torch.float32 for k, v in net.state_dict().items())


def test_bf16_runs_on_cpu_close_to_fp32(net) -> None:
    rgb = _rgb()
    a = Upscaler(net, tile=0)(rgb).astype(int)
    b = Upscaler(net, tile=0, precision="bf16")(rgb).astype(int)
    assert np.abs(a - b).mean() < 3


def test_upscale_file_writes_atomically_and_refuses_existing(tmp_path: Path, net) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    up = Upscaler(net, tile=0)
    dst = up.upscale_file(tmp_path / "a.png", tmp_path / "b.webp")
    assert dst.exists()
    with pytest.raises(lightsr.errors.LightSRError, match="exists"):
        up.upscale_file(tmp_path / "a.png", tmp_path / "b.webp")
    with pytest.raises(lightsr.errors.LightSRError, match="input"):
        up.upscale_file(tmp_path / "a.png", tmp_path / "a.png", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.webp"]  # no temporary files left


# ------------------------------------------------------------------------------------------ files, naming


def test_folders_globs_recursion_suffix_and_ext(tmp_path: Path, weights: Path, capsys) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for rel in ("a.png", "b.jpg", "sub/c.png"):
        Image.fromarray(_rgb()).save(src / rel)
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main(["upscale", str(src), "-o", str(out), "--weights", str(weights), "-q"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["a_x2.png", "b_x2.jpg"]
    assert main(["upscale", str(src), "-r", "-o", str(out), "--weights", str(weights), "--ext", "webp",
                 "--suffix=-big", "-q"]) == 0
    assert (out / "sub" / "c-big.webp").exists() and (out / "a-big.webp").exists()
    assert main(["upscale", str(src / "*.png"), "-o", str(tmp_path / "g"), "--weights", str(weights), "-q"]) == 0
    assert [p.name for p in (tmp_path / "g").iterdir()] == ["a_x2.png"]
    assert main(["upscale", str(src / "a.png"), "-o", str(tmp_path / "g"), "--weights", str(weights),
                 "--skip-existing", "-q"]) == 0
    assert main(["upscale", str(src / "a.png"), str(src / "b.jpg"), "-o", str(tmp_path / "x.png"),
                 "--weights", str(weights)]) == 2
    assert "output folder" in capsys.readouterr().err


def test_summary_line(tmp_path: Path, weights: Path, capsys) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out") + "/",
                 "--weights", str(weights)]) == 0
    err = capsys.readouterr().err
    assert "1/1 images upscaled ×2" in err and " s (lksmn, cpu, fp32)" in err
    # Bundled weights by name: the summary names them, and the network when they are a variant of it.
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--precision", "fp32"]) == 0
    assert " s (lksmn_real: lksmn, cpu, fp32)" in capsys.readouterr().err
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "c.png"), "--model", "lksmn",
                 "--scale", "2", "--precision", "fp32"]) == 0
    assert " s (lksmn, cpu, fp32)" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------- errors


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_corrupt_file_among_good_ones(tmp_path: Path, weights: Path, capsys) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.png", "c.png"):
        Image.fromarray(_rgb()).save(src / name)
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (src / "d.png").write_bytes(Path(src / "a.png").read_bytes()[:120])  # truncated
    out = tmp_path / "out"
    assert main(["upscale", str(src), "-o", str(out), "--weights", str(weights)]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 2 and any("b.png" in ln for ln in lines) and any("d.png" in ln for ln in lines)
    assert all(ln.count("\n") == 0 for ln in lines)
    assert "2/4 images upscaled" in err and "2 failed" in err
    assert _files(out) == ["a_x2.png", "c_x2.png"]  # the good ones, nothing partial, no temporary files


def test_existing_output_refused_before_any_work(tmp_path: Path, weights: Path, capsys) -> None:
    for name in ("a.png", "b.png"):
        Image.fromarray(_rgb()).save(tmp_path / name)
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_x2.png").write_bytes(b"keep me")
    code = main(["upscale", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(out),
                 "--weights", str(weights)])
    assert code == 2
    err = capsys.readouterr().err
    assert "b_x2.png: exists (use --overwrite" in err
    assert _files(out) == ["b_x2.png"] and (out / "b_x2.png").read_bytes() == b"keep me"
    assert main(["upscale", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(out),
                 "--weights", str(weights), "--overwrite", "-q"]) == 0
    assert (out / "b_x2.png").read_bytes() != b"keep me"


def test_never_overwrites_an_input(tmp_path: Path, weights: Path, capsys) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.png"), "--weights", str(weights),
                 "--overwrite"]) == 2
    assert "would overwrite an input" in capsys.readouterr().err
    assert main(["upscale", str(tmp_path), "-o", str(tmp_path), "--suffix", "", "--weights", str(weights),
                 "--overwrite"]) == 2
    assert (tmp_path / "a.png").read_bytes() == before


def test_rerun_into_its_own_folder_skips_its_outputs(tmp_path: Path, weights: Path, caplog) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path), "-o", str(tmp_path), "--weights", str(weights), "-q"]) == 0
    first = (tmp_path / "a_x2.png").read_bytes()
    # The earlier output is this batch's output, not an input: skipped, not upscaled again (a_x2_x2.png).
    assert main(["upscale", str(tmp_path), "-o", str(tmp_path), "--weights", str(weights), "-q",
                 "--skip-existing"]) == 0
    assert "1 input(s) are this batch's own outputs (e.g. " in caplog.text and "a_x2.png, from a.png" in caplog.text
    assert _files(tmp_path) == ["a.png", "a_x2.png"] and (tmp_path / "a_x2.png").read_bytes() == first


def test_outscale_resizes_the_network_output_with_matlab_bicubic(tmp_path: Path, net, weights: Path) -> None:
    from lightsr.resize import imresize

    rgb = _rgb(24, 32)
    plain = Upscaler(net, tile=0)
    at_net_scale = plain.upscale(rgb)  # 48×64 uint8
    up = Upscaler(net, tile=0, outscale=1.5)
    out = up.upscale(rgb)
    assert out.shape == (36, 48, 3) and np.array_equal(out, imresize(at_net_scale, size=(36, 48)))
    assert np.array_equal(Upscaler(net, tile=0, outscale=SCALE).upscale(rgb), at_net_scale)  # a no-op
    t = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    assert up.upscale(t).shape == (3, 36, 48)
    deep = (rgb.astype(np.uint16) * 257)[:, :, :2]  # 16-bit gray + alpha keeps its depth and channels
    assert up.upscale(deep).shape == (36, 48, 2) and up.upscale(deep).dtype == np.uint16
    # Tiled, with alpha and DPI: the final image is the resize of what the network's scale gives, channel by
    # channel (alpha included), and the DPI follows the final scale.
    rgba = np.concatenate([rgb, (np.arange(24 * 32).reshape(24, 32, 1) % 256).astype(np.uint8)], axis=2)
    tiled, tiled_plain = Upscaler(net, tile=8, outscale=1.5), Upscaler(net, tile=8)
    got = tiled.upscale_data(ImageData(rgba, dpi=(72.0, 72.0)))
    ref = tiled_plain.upscale_data(ImageData(rgba, dpi=(72.0, 72.0))).pixels
    assert np.array_equal(got.pixels, np.stack([imresize(ref[:, :, c], size=(36, 48)) for c in range(4)], 2))
    assert got.dpi == (108.0, 108.0)
    # The CLI names the output by the final scale.
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--weights", str(weights),
                 "--outscale", "1.5", "-q"]) == 0
    assert Image.open(tmp_path / "out" / "a_x1.5.png").size == (48, 36)


def test_a_glob_matching_one_image_can_name_the_output_file(tmp_path: Path, weights: Path) -> None:
    (tmp_path / "in").mkdir()
    Image.fromarray(_rgb()).save(tmp_path / "in" / "a.png")
    assert main(["upscale", str(tmp_path / "in" / "*.png"), "-o", str(tmp_path / "b.png"), "--weights",
                 str(weights), "-q"]) == 0
    assert Image.open(tmp_path / "b.png").size == (64, 48)


def test_an_input_named_twice_runs_once(tmp_path: Path, weights: Path, capsys) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path / "a.png"), str(tmp_path), str(tmp_path / "*.png"), "-o",
                 str(tmp_path / "out"), "--weights", str(weights)]) == 0
    assert "1/1 images upscaled" in capsys.readouterr().err
    assert _files(tmp_path / "out") == ["a_x2.png"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--scale", "0"], "argument --scale: 0: must be ≥ 1"),
    (["--quality", "500"], "argument --quality: 500: must be between 1 and 100"),
    (["--threads", "-1"], "argument --threads: -1: must be ≥ 1"),
    (["--max-pixels", "-5"], "argument --max-pixels: '-5': must be a pixel count"),
    (["--overwrite", "--skip-existing"], "argument --skip-existing: not allowed with argument --overwrite"),
    (["--onnx", "{a}"], "expected an .onnx file"),
    (["-o", "{a}/out.png"], "a.png is a file, not a folder"),
    (["--weights", "{a}"], "a.png: not a checkpoint (neither a safetensors nor a PyTorch file)"),
    (["--weights", "{txt}"], "notes.txt: not a checkpoint"),
])
def test_bad_options_are_refused_in_one_line_before_any_work(tmp_path: Path, extra: list[str], message: str,
                                                             capsys) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("hello")
    extra = [e.format(a=tmp_path / "a.png", txt=tmp_path / "notes.txt") for e in extra]
    args = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"), *extra]
    if not {"--onnx", "--weights"} & set(extra):
        args += ["--model", "lksmn"]
    with pytest.raises(SystemExit) if message.startswith("argument") else contextlib.nullcontext():
        assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("error:") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "notes.txt"]


def test_fp16_on_cpu_is_a_clear_error(tmp_path: Path, weights: Path, capsys) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"), "--weights", str(weights),
                 "--precision", "fp16", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fp16 needs a CUDA device" in err[0]
    assert not (tmp_path / "o.png").exists()


def test_checkpoint_for_the_wrong_scale(tmp_path: Path, weights: Path, capsys) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"), "--weights", str(weights),
                 "--scale", "4"]) == 2
    err = capsys.readouterr().err
    assert "×2 checkpoint, but scale 4 was requested" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_nan_output_is_reported_not_written(tmp_path: Path, net, capsys) -> None:
    broken = lightsr.create_model("lksmn", scale=SCALE, channels=12, num_blocks=1)
    broken.load_state_dict(net.state_dict())
    with torch.no_grad():
        broken.upsampler[0].bias[0] = float("nan")
    bad = lightsr.save_model(broken, tmp_path / "nan_x2.safetensors")
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"), "--weights", str(bad),
                 "-q"]) == 1
    err = capsys.readouterr().err
    assert "a.png" in err and "NaN/Inf" in err and "nothing written" in err
    assert not (tmp_path / "o.png").exists()


def test_pixel_limit(tmp_path: Path, weights: Path, capsys) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"), "--weights", str(weights),
                 "--max-pixels", "500", "-q"]) == 1
    assert "768 pixels exceeds the limit of 500" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"), "--weights", str(weights),
                 "--max-pixels", "0", "-q"]) == 0


def test_missing_inputs_are_reported(tmp_path: Path, weights: Path, capsys) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    code = main(["upscale", str(tmp_path / "a.png"), str(tmp_path / "nope.png"), str(tmp_path / "*.bmp"),
                 "-o", str(tmp_path / "out"), "--weights", str(weights), "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert "nope.png: no such file or folder" in err and "*.bmp: no image matches" in err
    assert _files(tmp_path / "out") == ["a_x2.png"]


def test_image_with_unusual_modes(tmp_path: Path) -> None:
    """CMYK JPEG → RGB (its CMYK profile dropped), 1-bit → L, gray+alpha → LA; a corrupt byte stream names
    the file."""
    Image.new("CMYK", (8, 6), (10, 20, 30, 0)).save(tmp_path / "c.jpg")
    assert load_image(tmp_path / "c.jpg").mode == "RGB"
    Image.new("1", (8, 6), 1).save(tmp_path / "b.png")
    assert load_image(tmp_path / "b.png").mode == "L"
    Image.new("LA", (8, 6), (10, 200)).save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png").mode == "LA"
    buf = io.BytesIO()
    Image.fromarray(_rgb()).save(buf, format="PNG")
    (tmp_path / "t.png").write_bytes(buf.getvalue()[:-30])
    with pytest.raises(lightsr.errors.LightSRError, match=r"t\.png"):
        load_image(tmp_path / "t.png")


def test_alpha_is_exact_under_tiling_and_snapped_with_the_model(net) -> None:
    h, w = 30, 44
    rgba = np.dstack([_rgb(h, w), np.zeros((h, w), np.uint8)])
    rgba[5:25, 8:30, 3] = 255
    rgba[10:20, 12:26, 3] = np.random.default_rng(0).integers(0, 256, (10, 14))
    ref_a = F.interpolate(torch.from_numpy(rgba[:, :, 3].astype(np.float32) / 255)[None, None],
                          scale_factor=SCALE, mode="bicubic", align_corners=False)[0, 0].clamp(0, 1).numpy() * 255
    tiled = Upscaler(net, tile=8)(rgba)
    assert Upscaler(net).plan(h, w).n_tiles == 1 and Upscaler(net, tile=8).plan(h, w).n_tiles > 4
    assert np.abs(tiled[:, :, 3] - ref_a).max() <= 0.5 + 1e-3  # bicubic alpha: tiles change nothing
    by_model = Upscaler(net, tile=0, alpha="model")(rgba)[:, :, 3]
    a = rgba[:, :, 3]
    with torch.no_grad():
        raw = net(torch.from_numpy(np.repeat(a[None, None].astype(np.float32) / 255, 3, 1)))[0]
    ref_m = raw.clamp(0, 1).mean(0).numpy() * 255
    # Away from the edges of the opaque/transparent areas the network's alpha is used as is ...
    inner = np.kron(np.pad(np.ones((6, 10), bool), ((12, 12), (14, 20))), np.ones((SCALE, SCALE), bool))
    assert np.abs(by_model[inner] - np.clip(ref_m, 0, 255)[inner]).max() <= 1
    # ... and snapped where the input is uniformly transparent or opaque around a pixel.
    assert (by_model[:4, :] == 0).all() and (by_model[7 * SCALE:8 * SCALE, 11 * SCALE:27 * SCALE] == 255).all()


def test_out_of_memory_retries_with_smaller_tiles(net, caplog) -> None:
    class Picky(lightsr.SRNet):
        """The tiny network, but "out of memory" for inputs over 300 pixels (as a small GPU would be)."""

        arch = "lksmn"

        def __init__(self) -> None:
            super().__init__()
            self.inner = net
            self._remember(**net.info.config)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-2] * x.shape[-1] > 300:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.inner(x)

        def fuse(self) -> lightsr.SRNet:
            return self.unfused()

    rgb = _rgb(30, 40)
    got = Upscaler(Picky(), tile=0, tile_overlap=2)(rgb)
    assert "out of memory" in caplog.text
    # Whole image (1200 px) → 20-pixel cores (17×22 windows: still too big) → 10: as if asked for 10 (blended
    # tiles of the training form, as Picky has no inference form; see test_tiling.py for streamed retries).
    assert np.array_equal(got, Upscaler(net, tile=10, tile_overlap=2, fuse=False)(rgb))


def test_outputs_get_the_usual_file_mode(tmp_path: Path, net: lightsr.SRNet) -> None:
    """Atomic writes go through private (0600) temporaries; a new file must follow the umask, and a replaced
    file keep its mode."""
    import importlib.util
    import os
    import stat

    from lightsr.export import export_onnx

    old = os.umask(0o022)
    try:
        Image.fromarray(_rgb()).save(tmp_path / "a.png")
        Upscaler(net).upscale_file(tmp_path / "a.png", tmp_path / "b.png")
        written = [tmp_path / "b.png"]
        if importlib.util.find_spec("onnx"):  # an optional extra (absent in CI's minimum-versions step)
            written.append(export_onnx(net, tmp_path / "m.onnx", check=False))
        for f in written:
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
        os.chmod(tmp_path / "b.png", 0o600)
        Upscaler(net).upscale_file(tmp_path / "a.png", tmp_path / "b.png", overwrite=True)
        assert stat.S_IMODE((tmp_path / "b.png").stat().st_mode) == 0o600
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------ guards (issue 14, item 3)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("lightsr: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _no_model(monkeypatch) -> None:
    """Loading a model fails the test: what is checked must be checked before one loads."""
    import lightsr.sources

    monkeypatch.setattr(lightsr.sources, "resolve", lambda *a, **k: pytest.fail("the model loaded before the check"))


def test_output_size_limit_is_checked_before_decoding(tmp_path: Path, net, weights: Path, capsys,
                                                      monkeypatch) -> None:
    from PIL import ImageFile

    Image.fromarray(_rgb()).save(tmp_path / "a.png")  # 32×24: ×2 → 64×48 = 3,072 pixels
    args = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"), "--weights", str(weights), "-q"]
    real_load = ImageFile.ImageFile.load
    with monkeypatch.context() as m:
        m.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded before the size check"))
        assert main([*args, "--max-output-pixels", "3071"]) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert line.endswith("a.png: 32×24 → 64×48 = 3,072 output pixels exceeds the limit of 3,071 "
                             "(raise it with --max-output-pixels; 0: no limit)")
        # --outscale 1000 would be 32000×24000 (2.3 GB as RGB): refused at the default limit (640M).
        assert main([*args, "--outscale", "1000"]) == 1
        assert "32×24 → 32000×24000 = 768,000,000 output pixels exceeds the limit of 640,000,000" in \
            _one_error_line(capsys.readouterr().err)
        # Resized down, the network's own ×2 output is the larger image, and the one held in memory.
        assert main([*args, "--outscale", "1", "--max-output-pixels", "3000"]) == 1
        assert "64×48 = 3,072 output pixels (the network's ×2 output, before --outscale)" in capsys.readouterr().err
        assert not (tmp_path / "o.png").exists()
    assert ImageFile.ImageFile.load is real_load
    assert main([*args, "--max-output-pixels", "3072"]) == 0  # the limit itself is allowed
    with pytest.raises(lightsr.errors.UsageError, match=r"^32×24 → 32000×24000 = 768,000,000 output pixels"):
        Upscaler(net, outscale=1000)(_rgb())  # the Python API: before any buffer is allocated
    with pytest.raises(lightsr.errors.UsageError, match="--max-output-pixels 0: must be ≥ 1"):
        Upscaler(net, max_output_pixels=0)


def _png_bomb(path: Path, side: int = 50_000) -> None:
    """A 9 kB PNG that claims ``side``² RGB pixels (the rows it holds are zeros)."""
    import struct
    import zlib

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * side) * 16, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_decompression_bomb_without_the_input_limit(tmp_path: Path, weights: Path, capsys, monkeypatch) -> None:
    from PIL import Image as PILImage

    _png_bomb(tmp_path / "bomb.png")
    args = ["upscale", str(tmp_path / "bomb.png"), "-o", str(tmp_path / "out"), "--weights", str(weights), "-q",
            "--max-pixels", "0"]
    # With the input limit off, the output limit still refuses it from the header.
    assert main(args) == 1
    assert "bomb.png: 50000×50000 → 100000×100000 = 10,000,000,000 output pixels exceeds the limit" in \
        _one_error_line(capsys.readouterr().err)
    # With both off, Pillow's allocation of 2.5 G pixels fails (as on a machine without 10 GB to spare).
    real_new = PILImage.core.new

    def new(mode, size, *a):
        if size[0] * size[1] > 10**8:
            raise MemoryError
        return real_new(mode, size, *a)

    monkeypatch.setattr(PILImage.core, "new", new)
    assert main([*args, "--max-output-pixels", "0"]) == 1
    assert _one_error_line(capsys.readouterr().err).endswith(
        "bomb.png: 50000×50000 pixels do not fit in memory (with --max-pixels 0 nothing guards against a "
        "decompression bomb)")
    assert _files(tmp_path / "out") == []


def test_unwritable_output_folder_is_refused_before_the_model_loads(tmp_path: Path, weights: Path, capsys,
                                                                   monkeypatch) -> None:
    from conftest import deny_writes

    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    (tmp_path / "ro").mkdir()
    with monkeypatch.context() as m:
        deny_writes(m, tmp_path / "ro")
        _no_model(m)
        for out in (tmp_path / "ro", tmp_path / "ro" / "new" / "deeper", tmp_path / "ro" / "b.png"):
            assert main(["upscale", str(tmp_path / "a.png"), "-o", str(out), "--weights", str(weights)]) == 2
            assert _one_error_line(capsys.readouterr().err) == \
                f"lightsr: error: -o {out}: cannot write in {tmp_path / 'ro'} (Permission denied)"
    assert _files(tmp_path / "ro") == []


def test_a_full_disk_while_writing_is_one_line_and_leaves_nothing(tmp_path: Path, weights: Path, capsys,
                                                                  monkeypatch) -> None:
    import errno

    import lightsr.imageio as io_mod

    for name in ("a.png", "b.png"):
        Image.fromarray(_rgb()).save(tmp_path / name)
    real = io_mod._save_pillow

    def save(tmp, data, fmt, quality, dst):
        if "a_x2" in tmp.name:  # half the file reaches the disk, then the disk is full
            tmp.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(tmp, data, fmt, quality, dst)

    monkeypatch.setattr(io_mod, "_save_pillow", save)
    assert main(["upscale", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "out"),
                 "--weights", str(weights), "-q"]) == 1
    assert _one_error_line(capsys.readouterr().err) == \
        f"lightsr: error: {tmp_path / 'out' / 'a_x2.png'}: cannot write (No space left on device); nothing written"
    assert _files(tmp_path / "out") == ["b_x2.png"]  # no partial a_x2.png, no temporary


@pytest.mark.parametrize("suffix", ["/../../x", "_x{scale}/..", "..", "a\\b", "_{scale:/>3}"])
def test_suffix_cannot_leave_the_output_folder(tmp_path: Path, weights: Path, suffix: str, capsys,
                                               monkeypatch) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    if "{scale:" not in suffix:  # a separator only the substituted scale brings is found once the model is known
        _no_model(monkeypatch)
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--weights", str(weights),
                 f"--suffix={suffix}"]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"lightsr: error: --suffix {suffix!r}: may not contain path separators or '..' (outputs stay in the -o "
        "folder)")
    assert _files(tmp_path) == ["a.png"]


def test_gif_input_needs_ext_and_animation_is_reported(tmp_path: Path, net, weights: Path, capsys, caplog,
                                                       monkeypatch) -> None:
    """A still GIF needs --ext (GIF is written for animations only); an animation written to a format without
    animation keeps its first frame, with a warning (animations themselves: test_animation.py)."""
    Image.fromarray(_rgb()).quantize(64).save(tmp_path / "still.gif")
    frames = [Image.fromarray(_rgb(seed=k)).quantize(64) for k in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    with monkeypatch.context() as m:
        _no_model(m)
        assert main(["upscale", str(tmp_path / "still.gif"), "-o", str(tmp_path / "out"), "--weights",
                     str(weights)]) == 2
        assert _one_error_line(capsys.readouterr().err) == (
            f"lightsr: error: {tmp_path / 'still.gif'}: cannot write GIF files for a still image; choose an output "
            "format with --ext (bmp, jpe, jpeg, jpg, png, tif, tiff, webp)")
    assert main(["upscale", str(tmp_path / "anim.gif"), "-o", str(tmp_path / "out"), "--weights", str(weights),
                 "--ext", "jpg", "--tile", "0", "-q"]) == 0
    assert "anim.gif: has 3 frames; only the first is read" in caplog.text
    with Image.open(tmp_path / "anim.gif") as im:
        first = np.asarray(im.convert("RGB"))
    assert main(["upscale", str(tmp_path / "anim.gif"), "-o", str(tmp_path / "first.png"), "--weights",
                 str(weights), "--tile", "0", "-q", "--frames", "0:1"]) == 0
    with Image.open(tmp_path / "first.png") as im:
        assert getattr(im, "n_frames", 1) == 1 and np.array_equal(np.asarray(im), Upscaler(net, tile=0)(first))
    # A multi-page TIFF: pages.
    Image.fromarray(_rgb()).save(tmp_path / "pages.tif", save_all=True, append_images=[Image.fromarray(_rgb(seed=1))])
    caplog.clear()
    assert load_image(tmp_path / "pages.tif").size == (32, 24)
    assert "pages.tif: has 2 pages; only the first is read" in caplog.text


def test_16bit_gray_pil_image_and_empty_inputs(net) -> None:
    up = Upscaler(net, tile=0)
    gray = (_rgb()[:, :, 1].astype(np.uint16) * 257 + np.arange(32, dtype=np.uint16)).astype(np.uint16)
    im = Image.fromarray(gray)
    assert im.mode == "I;16"
    out = up(im)
    assert out.mode == "I;16" and out.size == (64, 48)
    ref = _reference(net, np.repeat(gray[:, :, None], 3, 2), 65535) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(np.asarray(out).astype(np.float64) - ref).max() <= 0.5 + 0.05  # float32 at 16 bits
    for empty, shape in ((np.zeros((0, 5, 3), np.uint8), "array input has no pixels (shape (0, 5, 3))"),
                         (np.zeros((4, 0), np.float32), "array input has no pixels (shape (4, 0))"),
                         (torch.zeros(3, 0, 4), "tensor input has no pixels (shape (3, 0, 4))"),
                         (torch.zeros(0, 3, 4, 4), "tensor input has no pixels (shape (0, 3, 4, 4))"),
                         (Image.new("RGB", (0, 4)), "image input has no pixels (shape (4, 0, 3))")):
        with pytest.raises(lightsr.errors.UsageError) as info:
            up(empty)
        assert str(info.value) == shape


def test_sigterm_stops_cleanly_with_status_143(tmp_path: Path, weights: Path, capsys, monkeypatch) -> None:
    import signal

    import lightsr.imageio as io_mod

    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    before = signal.getsignal(signal.SIGTERM)

    def save(tmp, data, fmt, quality, dst):  # half-written when the signal comes (as from timeout or docker stop)
        tmp.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
        os.kill(os.getpid(), signal.SIGTERM)
        # This runs on the pipeline's writer thread: the main thread takes the signal and stops the pipeline
        # while the file is still being written (the stop event this thread's writes are cancelled by).
        assert lightsr._files._cancel.event.wait(10)

    monkeypatch.setattr(io_mod, "_save_pillow", save)
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--weights", str(weights),
                 "-q"]) == 143
    err = capsys.readouterr().err
    assert err == "lightsr: terminated (SIGTERM)\n"
    assert _files(tmp_path / "out") == []  # neither the output nor its temporary
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is main()'s only while it runs


def test_temporaries_of_killed_writers_are_removed(tmp_path: Path, weights: Path) -> None:
    import signal
    import subprocess
    import sys

    from lightsr._files import atomic_temporary

    out = tmp_path / "out"
    # A writer killed (SIGKILL) between creating its temporary and renaming it: what it leaves behind.
    code = ("import os, signal, sys; from pathlib import Path; from lightsr._files import atomic_temporary; "
            "print(atomic_temporary(Path(sys.argv[1])).name, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    r = subprocess.run([sys.executable, "-c", code, str(out / "a_x2.png")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == -signal.SIGKILL
    dead = out / r.stdout.strip()
    assert dead.is_file() and dead.name.startswith(".a_x2.lightsr-") and dead.name.endswith(".png.tmp")
    # A writer still running (another process) and one on another host sharing the folder are left alone.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = dead.with_name(dead.name.replace(f"-{r.stdout.split('-')[2]}-", f"-{sleeper.pid}-"))
        live.write_bytes(b"")
        other_host = dead.with_name(dead.name.replace(dead.name.split("-")[1], "00000000"))
        other_host.write_bytes(b"")
        Image.fromarray(_rgb()).save(tmp_path / "a.png")
        assert _upscale(tmp_path / "a.png", out, weights) == 0
        assert _files(out) == sorted(["a_x2.png", live.name, other_host.name])
        mine = atomic_temporary(out / "b.png")  # this process's own temporaries are never touched
        assert mine.exists()
        mine.unlink()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_globs_and_folders_never_follow_a_symlink_loop(tmp_path: Path) -> None:
    """Two links to their own folder make a recursive walk that follows links endless (2^depth paths); ``**`` and
    ``-r`` list each real file once. Run in a child process with a generous deadline, so that a regression fails
    instead of hanging the suite."""
    import subprocess
    import sys

    src = tmp_path / "src"
    (src / "sub" / ".hidden").mkdir(parents=True)
    for rel in ("a.png", "sub/c.png", "sub/.d.png", "sub/.hidden/e.png"):
        Image.fromarray(_rgb()).save(src / rel)
    for name in ("loop1", "loop2"):
        (src / "sub" / name).symlink_to("..", target_is_directory=True)
    code = ("import os, sys; from lightsr.commands.upscale import _collect\n"
            "found, errors = _collect(sys.argv[2:], True)\n"
            "print(sorted(os.path.relpath(f, sys.argv[1]) for f, _ in found), errors)")
    for pattern, want in ((f"{src}/**/*.png", "['a.png', 'sub/c.png']"),
                          (f"{src}/**", "['a.png', 'sub/c.png']"),
                          (f"{src}/s*/**/*.png", "['sub/c.png']"),
                          (f"{src}/**/.*.png", "['sub/.d.png']"),
                          (f"{src}/", "['a.png', 'sub/.hidden/e.png', 'sub/c.png']")):  # hidden files only
        run = subprocess.run([sys.executable, "-c", code, str(src), pattern], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == f"{want} []", (pattern, run.stdout)
