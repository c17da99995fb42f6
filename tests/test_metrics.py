"""PSNR/SSIM protocol: hand-computed values and scikit-image as an independent SSIM reference."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from lightsr.imageio import tensor_to_array
from lightsr.metrics import calculate_psnr, calculate_ssim, rgb_to_y, ssim_map


def _pair(shape: tuple[int, ...], seed: int = 0, noise: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, size=shape).astype(np.int64)
    # smooth-ish structure so SSIM is not trivially ~0
    hr = (hr + np.roll(hr, 1, axis=0) + np.roll(hr, 1, axis=1) + np.roll(hr, 2, axis=0)) // 4
    sr = np.clip(hr + rng.integers(-noise, noise + 1, size=shape), 0, 255)
    return sr.astype(np.uint8), hr.astype(np.uint8)


def _y_by_hand(img: np.ndarray) -> np.ndarray:
    r, g, b = (img[..., i].astype(np.float64) / 255.0 for i in range(3))
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def _skimage_ssim(a: np.ndarray, b: np.ndarray, full: bool = False) -> Any:
    return structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        full=full,
    )


def test_rgb_to_y() -> None:
    assert rgb_to_y(np.zeros((1, 1, 3), np.uint8))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.full((1, 1, 3), 255, np.uint8))[0, 0] == pytest.approx(235.0)
    img, _ = _pair((9, 7, 3))
    y = rgb_to_y(img)
    assert y.dtype == np.float64
    assert y.shape == (9, 7)
    np.testing.assert_allclose(y, _y_by_hand(img), rtol=0, atol=1e-12)


@pytest.mark.parametrize("crop", [0, 4])
def test_psnr_matches_formula(crop: int) -> None:
    sr, hr = _pair((40, 36, 3), seed=1)
    c = slice(crop, -crop) if crop else slice(None)
    mse_rgb = np.mean((sr[c, c].astype(np.float64) - hr[c, c].astype(np.float64)) ** 2)
    assert calculate_psnr(sr, hr, crop, test_y=False) == pytest.approx(10 * np.log10(255.0**2 / mse_rgb))
    mse_y = np.mean((_y_by_hand(sr[c, c]) - _y_by_hand(hr[c, c])) ** 2)
    assert calculate_psnr(sr, hr, crop, test_y=True) == pytest.approx(10 * np.log10(255.0**2 / mse_y))


def test_identical_images() -> None:
    _, hr = _pair((32, 30, 3), seed=2)
    assert calculate_psnr(hr, hr, 4) == math.inf
    assert calculate_psnr(hr, hr, 0, test_y=False) == math.inf
    assert calculate_ssim(hr, hr, 4) == pytest.approx(1.0, abs=1e-12)
    assert calculate_ssim(hr, hr, 0, test_y=False) == pytest.approx(1.0, abs=1e-12)


def test_constant_offset_psnr_by_hand() -> None:
    rng = np.random.default_rng(3)
    hr = rng.integers(0, 246, size=(24, 20, 3), dtype=np.uint8)
    sr = hr + np.uint8(10)
    # RGB: every error is 10 -> MSE 100.
    assert calculate_psnr(sr, hr, 2, test_y=False) == pytest.approx(10 * math.log10(255**2 / 100))
    assert calculate_psnr(sr, hr, 2, test_y=False) == pytest.approx(28.1308036087, abs=1e-9)
    # Y: error 10 * (65.481 + 128.553 + 24.966) / 255 = 10 * 219 / 255 everywhere.
    assert calculate_psnr(sr, hr, 2) == pytest.approx(20 * math.log10(255 / (2190 / 255)))
    assert calculate_psnr(sr, hr, 2) == pytest.approx(29.4527249206, abs=1e-9)


@pytest.mark.parametrize("crop", [0, 3])
def test_ssim_matches_skimage_on_y(crop: int) -> None:
    sr, hr = _pair((64, 56, 3), seed=4, noise=20)
    c = slice(crop, -crop) if crop else slice(None)
    ya, yb = rgb_to_y(sr[c, c]), rgb_to_y(hr[c, c])
    ours = calculate_ssim(sr, hr, crop)
    # skimage filters with padding but averages only the interior at least 5 px from the border, where
    # the 11x11 Gaussian (truncate 3.5 * sigma 1.5 -> radius 5) never touches the padding: that is
    # exactly the 'valid' region of the MATLAB reference. Check both the mean and the map itself.
    mssim, full_map = _skimage_ssim(ya, yb, full=True)
    interior = full_map[5:-5, 5:-5]
    assert ours == pytest.approx(float(interior.mean()), abs=1e-10)
    assert ours == pytest.approx(float(mssim), abs=1e-10)
    np.testing.assert_allclose(ssim_map(ya, yb), interior, rtol=0, atol=1e-10)
    assert 0.2 < ours < 0.99  # a meaningful, non-degenerate value


def test_ssim_rgb_averages_channels() -> None:
    sr, hr = _pair((48, 40, 3), seed=5, noise=25)
    per_channel = [
        _skimage_ssim(sr[4:-4, 4:-4, ch].astype(np.float64), hr[4:-4, 4:-4, ch].astype(np.float64)) for ch in range(3)
    ]
    assert calculate_ssim(sr, hr, 4, test_y=False) == pytest.approx(float(np.mean(per_channel)), abs=1e-10)


def test_gray_mode_raw_vs_rgb() -> None:
    sr, hr = _pair((40, 44), seed=6, noise=15)
    raw_psnr = calculate_psnr(sr, hr, 2, gray_mode="raw")
    rgb_psnr = calculate_psnr(sr, hr, 2, gray_mode="rgb")
    # rgb mode maps g -> 16 + 219 g / 255, scaling every error by 219/255.
    assert rgb_psnr - raw_psnr == pytest.approx(-20 * math.log10(219 / 255), abs=1e-9)
    assert rgb_psnr == calculate_psnr(sr, hr, 2)  # rgb is the default
    a, b = sr[2:-2, 2:-2].astype(np.float64), hr[2:-2, 2:-2].astype(np.float64)
    assert calculate_ssim(sr, hr, 2, gray_mode="raw") == pytest.approx(float(_skimage_ssim(a, b)), abs=1e-10)
    ya, yb = 16 + 219 * a / 255, 16 + 219 * b / 255
    assert calculate_ssim(sr, hr, 2, gray_mode="rgb") == pytest.approx(float(_skimage_ssim(ya, yb)), abs=1e-10)
    assert calculate_ssim(sr, hr, 2, gray_mode="rgb") != pytest.approx(calculate_ssim(sr, hr, 2, gray_mode="raw"))
    # HxW and HxWx1 are the same thing; gray replicated to RGB equals gray_mode="rgb".
    assert calculate_psnr(sr[..., None], hr[..., None], 2) == rgb_psnr
    rgb3 = calculate_psnr(np.repeat(sr[..., None], 3, 2), np.repeat(hr[..., None], 3, 2), 2)
    assert rgb3 == pytest.approx(rgb_psnr, abs=1e-12)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        calculate_psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8), 0)
    with pytest.raises(ValueError):
        calculate_psnr(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), 0, gray_mode="bgr")  # type: ignore[arg-type]


def test_sr_outputs_round_to_uint8_as_basicsr() -> None:
    # The float -> uint8 step before PSNR/SSIM (lightsr.imageio.tensor_to_array): clamp, ×255, round half to even.
    vals = torch.tensor([-0.1, 0.0, 1 / 255, 0.5, 0.999, 1.2])
    t = vals.view(1, 1, 6).repeat(3, 2, 1)  # CHW
    out = tensor_to_array(t)
    assert out.dtype == np.uint8
    assert out.shape == (2, 6, 3)
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 1, 128, 255, 255])  # 127.5 rounds half to even
    assert tensor_to_array(t[:1]).shape == (2, 6, 1)
    rng = np.random.default_rng(7)
    x = rng.random((3, 5, 4)).astype(np.float32)
    np.testing.assert_array_equal(
        tensor_to_array(torch.from_numpy(x)), np.round(x * 255).astype(np.uint8).transpose(1, 2, 0)
    )
