"""MATLAB-exact bicubic imresize: bit-exactness on the benchmark LR images, and independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import require_shared
from lightsr.resize import imresize, modcrop

SETS = ("Set5", "Set14", "B100")
SCALES = (2, 3, 4)


# --------------------------------------------------------------------------------------------------
# Independent, deliberately naive float64 reference: scalar loops, written from MATLAB's description.
# --------------------------------------------------------------------------------------------------
def _keys(x: float) -> float:
    a = abs(x)
    if a <= 1.0:
        return 1.5 * a**3 - 2.5 * a**2 + 1.0
    if a <= 2.0:
        return -0.5 * a**3 + 2.5 * a**2 - 4.0 * a + 2.0
    return 0.0


def _mirror(j: int, n: int) -> int:
    """0-based index ``j`` reflected into ``0..n-1`` with the edge sample repeated (period 2n)."""
    m = j % (2 * n)
    return m if m < n else 2 * n - 1 - m


def _ref_resize_1d(line: list[float], out_len: int, scale: float) -> list[float]:
    n = len(line)
    stretch = scale if scale < 1.0 else 1.0  # antialiasing only when shrinking
    width = 4.0 / stretch
    taps = math.ceil(width) + 2
    out = []
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1.0 - 1.0 / scale)
        left = math.floor(u - width / 2.0)
        ws, js = [], []
        for t in range(taps):
            j = left + t  # 1-based
            ws.append(stretch * _keys(stretch * (u - j)))
            js.append(_mirror(j - 1, n))
        total = sum(ws)
        out.append(sum(w / total * line[j] for w, j in zip(ws, js, strict=True)))
    return out


def _ref_imresize(img: np.ndarray, out_hw: tuple[int, int], scales: tuple[float, float]) -> np.ndarray:
    """float64 loop reference; uint8 input is rounded (half away from zero) and clipped after each pass."""
    is_u8 = img.dtype == np.uint8
    cur = img.astype(np.float64)
    if cur.ndim == 2:
        cur = cur[..., None]
    order = (1, 0) if scales[1] < scales[0] else (0, 1)
    for axis in order:
        h, w, c = cur.shape
        if axis == 0:
            nxt = np.empty((out_hw[0], w, c))
            for col in range(w):
                for ch in range(c):
                    nxt[:, col, ch] = _ref_resize_1d(list(cur[:, col, ch]), out_hw[0], scales[0])
        else:
            nxt = np.empty((h, out_hw[1], c))
            for row in range(h):
                for ch in range(c):
                    nxt[row, :, ch] = _ref_resize_1d(list(cur[row, :, ch]), out_hw[1], scales[1])
        if is_u8:
            nxt = np.clip(np.floor(nxt + 0.5), 0, 255)  # values are >= 0 after clipping anyway
        cur = nxt
    if img.ndim == 2:
        cur = cur[..., 0]
    return cur.astype(np.uint8) if is_u8 else cur


# --------------------------------------------------------------------------------------------------
# Bit-exactness with MATLAB on every benchmark LR image.
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", SETS)
def test_matches_matlab_lr_images(name: str, scale: int) -> None:
    root = require_shared(f"data/benchmark/{name}")
    hr_paths = sorted((root / "HR").glob("*.png"))
    assert hr_paths, f"no HR images in {root}"
    total = mismatched = 0
    failures = []
    for hr_path in hr_paths:
        hr = np.array(Image.open(hr_path))
        lr_path = require_shared(f"data/benchmark/{name}/LR_bicubic/X{scale}/{hr_path.stem}x{scale}.png")
        lr = np.array(Image.open(lr_path))
        out = imresize(modcrop(hr, scale), 1 / scale)
        assert out.dtype == np.uint8
        assert out.shape == lr.shape, (hr_path.stem, out.shape, lr.shape)
        bad = int(np.count_nonzero(out != lr))
        total += lr.size
        mismatched += bad
        if bad:
            failures.append((hr_path.stem, bad))
    assert mismatched == 0, f"{mismatched}/{total} values differ from MATLAB: {failures[:10]}"


def test_grayscale_bridge_stays_2d() -> None:
    path = require_shared("data/benchmark/Set14/HR/bridge.png")
    hr = np.array(Image.open(path))
    assert hr.ndim == 2
    assert imresize(modcrop(hr, 3), 1 / 3).shape == (170, 170)


# --------------------------------------------------------------------------------------------------
# Independent loop reference (float and uint8, down and up).
# --------------------------------------------------------------------------------------------------
CASES = [
    ((0.5, 0.5), (5, 6)),
    ((1 / 3, 1 / 3), (3, 4)),
    ((0.37, 0.37), (4, 5)),
    ((2.0, 2.0), (18, 22)),
    ((1.5, 1.5), (14, 17)),
]


@pytest.mark.parametrize(("scales", "out_hw"), CASES)
def test_float_path_matches_loop_reference(scales: tuple[float, float], out_hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    img = rng.random((9, 11, 2))
    out = imresize(img, scales[0])
    assert out.shape == (*out_hw, 2)
    assert out.dtype == np.float64
    ref = _ref_imresize(img, out_hw, scales)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)


def test_explicit_size_matches_loop_reference() -> None:
    rng = np.random.default_rng(1)
    img = rng.random((9, 11))
    out = imresize(img, size=(5, 16))  # height shrinks, width grows: width pass goes second
    ref = _ref_imresize(img, (5, 16), (5 / 9, 16 / 11))
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)
    img_u8 = (img * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(imresize(img_u8, size=(5, 16)), _ref_imresize(img_u8, (5, 16), (5 / 9, 16 / 11)))


@pytest.mark.parametrize("scale", [2.0, 3.0, 0.5, 1 / 3])
def test_uint8_matches_loop_reference(scale: float) -> None:
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    out = imresize(img, scale)
    ref = _ref_imresize(img, out.shape[:2], (scale, scale))
    np.testing.assert_array_equal(out, ref)


def test_upscale_x2_hand_computed() -> None:
    # Keys a=-0.5 weights at offsets 1.75, 0.75, 0.25, 1.25 (x2 upsampling): -3/128, 29/128, 111/128, -9/128.
    col = np.array([10.0, 20.0, 40.0, 80.0, 160.0])[:, None]  # 5x1: the width pass is an identity
    out = imresize(col, 2)
    assert out.shape == (10, 2)
    np.testing.assert_allclose(out[:, 0], out[:, 1], rtol=0, atol=1e-12)
    w = np.array([-3, 29, 111, -9]) / 128
    # output row 5 (1-based): u = 2.75 -> inputs 1..4
    assert out[4, 0] == pytest.approx(w @ col[0:4, 0], abs=1e-12)
    assert out[4, 0] == pytest.approx(33.359375, abs=1e-12)
    # output row 1: u = 0.75 -> inputs -1, 0, 1, 2, mirrored to 2, 1, 1, 2
    assert out[0, 0] == pytest.approx(w @ np.array([20.0, 10.0, 10.0, 20.0]), abs=1e-12)
    assert out[0, 0] == pytest.approx(9.0625, abs=1e-12)


def test_constant_image_is_preserved() -> None:
    img = np.full((13, 7, 3), 117, dtype=np.uint8)
    for scale in (0.25, 0.3, 1.7, 4.0):
        out = imresize(img, scale)
        assert np.all(out == 117)


# --------------------------------------------------------------------------------------------------
# Sizes, dtypes, torch.
# --------------------------------------------------------------------------------------------------
def test_output_sizes() -> None:
    img = np.zeros((37, 41, 3), dtype=np.uint8)
    assert imresize(img, 0.3).shape == (12, 13, 3)  # ceil(11.1), ceil(12.3)
    assert imresize(img, 1.7).shape == (63, 70, 3)  # ceil(62.9), ceil(69.7)
    assert imresize(img, 1 / 3).shape == (13, 14, 3)
    assert imresize(img, (0.5, 2.0)).shape == (19, 82, 3)
    assert imresize(img, size=(20, 50)).shape == (20, 50, 3)
    assert imresize(img[..., 0], size=(5, 7)).shape == (5, 7)
    with pytest.raises(ValueError):
        imresize(img)
    with pytest.raises(ValueError):
        imresize(img, 0.5, size=(5, 5))


def test_float32_roundtrip_dtype() -> None:
    img = np.random.default_rng(3).random((16, 12, 3)).astype(np.float32)
    out = imresize(img, 0.5)
    assert out.dtype == np.float32
    ref = imresize(img.astype(np.float64), 0.5)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("scale", "size"), [(0.5, None), (1 / 3, None), (0.3, None), (2.0, None), (None, (20, 50))])
def test_torch_matches_numpy(scale: float | None, size: tuple[int, int] | None) -> None:
    rng = np.random.default_rng(4)
    batch = rng.random((2, 3, 37, 41)).astype(np.float32)
    out_t = imresize(torch.from_numpy(batch), scale=scale, size=size)
    assert out_t.dtype == torch.float32
    for n in range(batch.shape[0]):
        ref = imresize(batch[n].transpose(1, 2, 0).astype(np.float64), scale=scale, size=size)
        np.testing.assert_allclose(out_t[n].numpy().transpose(1, 2, 0), ref, rtol=0, atol=1e-5)
    single = imresize(torch.from_numpy(batch[0]), scale=scale, size=size)  # CHW
    torch.testing.assert_close(single, out_t[0], rtol=0, atol=1e-6)


def test_modcrop() -> None:
    img = np.zeros((37, 41, 3), dtype=np.uint8)
    assert modcrop(img, 4).shape == (36, 40, 3)
    assert modcrop(img[..., 0], 3).shape == (36, 39)
    assert modcrop(img, 1).shape == img.shape
