"""PSNR / SSIM exactly as the super-resolution literature reports them.

The protocol (MATLAB reference scripts, reproduced by BasicSR):

* images are ``uint8`` (SR outputs are rounded to ``uint8`` first, see :func:`lightsr.imageio.tensor_to_array`);
* ``crop_border`` pixels (usually the scale factor) are removed on each side;
* with ``test_y=True`` the metrics are computed on the luma channel of ITU-R BT.601 "studio swing"
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` (RGB in ``[0, 1]``, ``Y`` in ``[16, 235]``, float64,
  not rounded);
* PSNR uses a peak of 255 and the MSE over all pixels (and channels when ``test_y=False``);
* SSIM uses an 11×11 Gaussian window with σ = 1.5, ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``, keeps only
  the *valid* part of the filtered maps (no padding) and averages the SSIM map; with ``test_y=False`` the
  per-channel SSIMs are averaged.

Grayscale images (``HxW`` or ``HxWx1``; Set14's ``bridge`` is one) have two conventions, chosen with
``gray_mode``: ``"rgb"`` (default) treats them as RGB with the gray value replicated and applies the Y
formula (``Y = 16 + 219 g / 255``), ``"raw"`` uses the gray value itself as Y, as classic MATLAB scripts
that skip ``rgb2ycbcr`` on single-channel images did.

Everything is plain numpy in float64; no OpenCV/SciPy is needed.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

__all__ = ["calculate_psnr", "calculate_ssim", "gaussian_window_1d", "rgb_to_y"]

GrayMode = Literal["rgb", "raw"]

_Y_COEFFS = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Luma ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for an RGB image with values in ``[0, 255]``.

    ``img`` is ``HxWx3`` (any numeric dtype, RGB order, 0..255 scale). Returns ``HxW`` float64 in
    ``[16, 235]``, unrounded.
    """
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects an HxWx3 image, got shape {arr.shape}")
    return (arr / 255.0) @ _Y_COEFFS + 16.0


def _as_hwc(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim == 2:
        return arr[..., None]
    if arr.ndim == 3:
        return arr
    raise ValueError(f"expected an HxW or HxWxC image, got shape {arr.shape}")


def _prepare(img: np.ndarray, crop_border: int, test_y: bool, gray_mode: GrayMode) -> np.ndarray:
    """Crop, optionally convert to Y, return float64 ``HxWxC`` (``C = 1`` for Y)."""
    if gray_mode not in ("rgb", "raw"):
        raise ValueError(f"gray_mode must be 'rgb' or 'raw', got {gray_mode!r}")
    arr = _as_hwc(img)
    if crop_border > 0:
        arr = arr[crop_border:-crop_border, crop_border:-crop_border, :]
    arr = arr.astype(np.float64)
    if not test_y:
        return arr
    channels = arr.shape[2]
    if channels == 3:
        return rgb_to_y(arr)[..., None]
    if channels == 1:
        if gray_mode == "raw":
            return arr
        return rgb_to_y(np.repeat(arr, 3, axis=2))[..., None]
    raise ValueError(f"test_y needs a 1- or 3-channel image, got {channels} channels")


def _check_pair(sr: np.ndarray, hr: np.ndarray) -> None:
    if np.shape(sr) != np.shape(hr):
        raise ValueError(f"image shapes differ: {np.shape(sr)} vs {np.shape(hr)}")


def calculate_psnr(
    sr: np.ndarray,
    hr: np.ndarray,
    crop_border: int,
    test_y: bool = True,
    gray_mode: GrayMode = "rgb",
) -> float:
    """PSNR (dB, peak 255) between two ``uint8`` images (``HxWxC`` RGB or ``HxW`` gray).

    Returns ``inf`` when the (cropped, converted) images are identical.
    """
    _check_pair(sr, hr)
    a = _prepare(sr, crop_border, test_y, gray_mode)
    b = _prepare(hr, crop_border, test_y, gray_mode)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def gaussian_window_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian (as ``cv2.getGaussianKernel`` / MATLAB ``fspecial`` per axis)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D float64 map with ``outer(kernel, kernel)``."""
    k = kernel.size
    h, w = img.shape
    if h < k or w < k:
        raise ValueError(f"image {img.shape} smaller than the {k}x{k} SSIM window")
    rows = np.zeros((h - k + 1, w), dtype=np.float64)
    for i in range(k):  # loop over the 11 taps only; each step is a whole-image operation
        rows += kernel[i] * img[i : i + h - k + 1, :]
    out = np.zeros((h - k + 1, w - k + 1), dtype=np.float64)
    for j in range(k):
        out += kernel[j] * rows[:, j : j + w - k + 1]
    return out


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM map (valid region) of two 2-D float64 images with values on a 0..255 scale."""
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    win = gaussian_window_1d(11, 1.5)
    mu1 = _filter_valid(a, win)
    mu2 = _filter_valid(b, win)
    mu1_sq = mu1 * mu1
    mu2_sq = mu2 * mu2
    mu1_mu2 = mu1 * mu2
    sigma1_sq = _filter_valid(a * a, win) - mu1_sq
    sigma2_sq = _filter_valid(b * b, win) - mu2_sq
    sigma12 = _filter_valid(a * b, win) - mu1_mu2
    num = (2.0 * mu1_mu2 + c1) * (2.0 * sigma12 + c2)
    den = (mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2)
    return num / den


def calculate_ssim(
    sr: np.ndarray,
    hr: np.ndarray,
    crop_border: int,
    test_y: bool = True,
    gray_mode: GrayMode = "rgb",
) -> float:
    """SSIM between two ``uint8`` images (``HxWxC`` RGB or ``HxW`` gray), averaged over channels."""
    _check_pair(sr, hr)
    a = _prepare(sr, crop_border, test_y, gray_mode)
    b = _prepare(hr, crop_border, test_y, gray_mode)
    values = [float(ssim_map(a[..., c], b[..., c]).mean()) for c in range(a.shape[2])]
    return float(np.mean(values))

