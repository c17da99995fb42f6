"""MATLAB-exact bicubic ``imresize`` (with antialiasing) for numpy arrays and torch tensors.

Why hand-written: every lightweight-SR paper builds its low-resolution test images with MATLAB's
``imresize(modcrop(HR, k), 1/k, 'bicubic')`` and reports PSNR/SSIM on them. No Python library reproduces
that function exactly: PIL, OpenCV, ``torch.nn.functional.interpolate`` and scikit-image use different
kernels, no (or a different) antialiasing width, or different border handling, and the well-known
float re-implementations (e.g. BasicSR's ``imresize``) skip MATLAB's uint8 behaviour between the two
1-D passes and therefore agree with MATLAB on only ~87% of the pixels. This module re-derives MATLAB's
algorithm:

* cubic kernel with ``a = -0.5`` (Keys), support 4;
* when downscaling (``scale < 1``) the kernel is stretched by ``1/scale`` and scaled by ``scale``
  (antialiasing), so its support becomes ``4/scale``;
* output sample ``x`` (1-based) maps to input position ``u = x/scale + 0.5*(1 - 1/scale)``; the
  contributing input pixels are ``floor(u - width/2) + (0 .. ceil(width)+1)``, weights are normalised
  to sum to one, out-of-range indices are mirrored symmetrically (``1..n, n..1`` repeated) and
  columns whose weights are all zero are dropped;
* the image is resized one dimension at a time, in order of increasing scale factor (height first on
  ties), and for ``uint8`` input the intermediate result is converted back to ``uint8`` (round half
  away from zero, saturate to 0..255) after *each* pass, exactly as MATLAB keeps the class of its input.

Per axis the weights and (mirrored) indices are precomputed once as ``(out, P)`` matrices; numpy
arrays are resized with a gather + weighted sum over ``P`` (vectorised, float64), torch tensors with a
dense ``(out, in)`` contribution matrix and a matmul on the tensor's device and dtype.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import overload

import numpy as np
import torch

__all__ = ["contributions", "cubic", "imresize", "modcrop"]

_KERNEL_WIDTH = 4.0


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``), evaluated in float64."""
    absx = np.abs(np.asarray(x, dtype=np.float64))
    absx2 = absx * absx
    absx3 = absx2 * absx
    inner = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1) & (absx <= 2))
    return inner + outer


@lru_cache(maxsize=256)
def contributions(in_length: int, out_length: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's ``contributions``: ``(weights, indices)``, both ``(out_length, P)``; indices are 0-based.

    ``weights`` is float64 and each row sums to one; ``indices`` are already mirrored into
    ``0..in_length-1``. The arrays are cached and returned read-only.
    """
    if scale < 1.0:  # antialiasing: widen the kernel by 1/scale
        width = _KERNEL_WIDTH / scale

        def kernel(v: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * v)
    else:
        width = _KERNEL_WIDTH
        kernel = cubic

    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    n_taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(n_taps, dtype=np.float64)[None, :]  # 1-based
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)

    # Symmetric border: aux = [1..n, n..1], index -> aux(mod(index - 1, 2n) + 1), here 0-based.
    aux = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    idx = aux[np.mod(indices.astype(np.int64) - 1, aux.size)]

    keep = np.any(weights != 0, axis=0)
    weights = np.ascontiguousarray(weights[:, keep])
    idx = np.ascontiguousarray(idx[:, keep])
    weights.setflags(write=False)
    idx.setflags(write=False)
    return weights, idx


@lru_cache(maxsize=256)
def _dense_matrix(in_length: int, out_length: int, scale: float) -> np.ndarray:
    """``(out_length, in_length)`` float64 contribution matrix (mirrored taps accumulated)."""
    weights, idx = contributions(in_length, out_length, scale)
    mat = np.zeros((out_length, in_length), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_length)[:, None], idx.shape)
    np.add.at(mat, (rows, idx), weights)
    mat.setflags(write=False)
    return mat


def _resolve(
    in_hw: tuple[int, int], scale: float | tuple[float, float] | None, size: tuple[int, int] | None
) -> tuple[tuple[float, float], tuple[int, int]]:
    """MATLAB's argument logic: per-axis scale factors and output size."""
    if size is not None:
        out_h, out_w = (int(size[0]), int(size[1]))
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"output size must be positive, got {size}")
        if scale is not None:
            raise ValueError("give either scale or size, not both")
        return (out_h / in_hw[0], out_w / in_hw[1]), (out_h, out_w)
    if scale is None:
        raise ValueError("give either scale or size")
    scales = (float(scale), float(scale)) if np.isscalar(scale) else tuple(map(float, scale))
    if scales[0] <= 0 or scales[1] <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    out = (math.ceil(scales[0] * in_hw[0]), math.ceil(scales[1] * in_hw[1]))
    return (scales[0], scales[1]), out


def _order(scales: tuple[float, float]) -> tuple[int, int]:
    """Axis order: increasing scale factor, height (axis 0) first on ties (MATLAB's stable sort)."""
    return (1, 0) if scales[1] < scales[0] else (0, 1)


# Not lightsr.imageio.tensor_to_array: MATLAB rounds half away from zero (126.5 → 127), torch/numpy half to even
# (126.5 → 126), and imresize must match MATLAB bit for bit.
def _to_uint8(x: np.ndarray) -> np.ndarray:
    """MATLAB double -> uint8: round half away from zero, then saturate to 0..255 (``x`` is overwritten).

    For the values that survive the clip (``>= -0.5``) rounding half away from zero equals
    ``floor(x + 0.5)``; anything lower saturates to 0 either way.
    """
    np.add(x, 0.5, out=x)
    np.floor(x, out=x)
    np.clip(x, 0.0, 255.0, out=x)
    return x.astype(np.uint8)


def _resize_axis_np(img: np.ndarray, axis: int, weights: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Resize a HW(C) array along ``axis`` (0 or 1): ``out[i] = sum_p w[i, p] * img[idx[i, p]]`` in float64.

    The sum over the ``P`` taps runs tap by tap in order (as MATLAB's inner loop does), each tap being one
    vectorised gather-multiply-add over all output pixels, so rounding matches MATLAB's double arithmetic.
    ``img`` may be uint8 or float: each gathered tap is promoted to float64 (exactly) by the multiply, so
    the full-size float64 copy of the input is never made.
    """
    src = np.ascontiguousarray(np.moveaxis(img, axis, 0))  # (L, other[, C]), rows contiguous for gathers
    w = weights.reshape(weights.shape + (1,) * (src.ndim - 1))  # (out, P, 1[, 1])
    out = np.multiply(np.take(src, idx[:, 0], axis=0), w[:, 0], dtype=np.float64)
    buf = np.empty_like(out)
    for p in range(1, idx.shape[1]):
        np.multiply(np.take(src, idx[:, p], axis=0), w[:, p], out=buf, dtype=np.float64)
        out += buf
    return np.moveaxis(out, 0, axis)


def _imresize_np(img: np.ndarray, scales: tuple[float, float], out_hw: tuple[int, int]) -> np.ndarray:
    if img.ndim not in (2, 3):
        raise ValueError(f"expected HxW or HxWxC array, got shape {img.shape}")
    is_uint8 = img.dtype == np.uint8
    if not (is_uint8 or np.issubdtype(img.dtype, np.floating)):
        raise TypeError(f"unsupported dtype {img.dtype}; use uint8 or float")
    out_dtype = img.dtype
    cur: np.ndarray = img
    for axis in _order(scales):
        weights, idx = contributions(img.shape[axis], out_hw[axis], scales[axis])
        res = _resize_axis_np(cur, axis, weights, idx)
        cur = _to_uint8(res) if is_uint8 else res
    return np.ascontiguousarray(cur if is_uint8 else cur.astype(out_dtype, copy=False))


@lru_cache(maxsize=64)
def _torch_matrix(in_length: int, out_length: int, scale: float, device: str, dtype: torch.dtype) -> torch.Tensor:
    """The dense contribution matrix as a tensor on ``device`` in ``dtype`` (cached)."""
    mat = np.array(_dense_matrix(in_length, out_length, scale))  # writable copy for torch.from_numpy
    return torch.from_numpy(mat).to(device=device, dtype=dtype)


def _imresize_torch(t: torch.Tensor, scales: tuple[float, float], out_hw: tuple[int, int]) -> torch.Tensor:
    if t.ndim not in (3, 4):
        raise ValueError(f"expected CHW or NCHW tensor, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"torch path needs a float tensor, got {t.dtype}")
    in_hw = (int(t.shape[-2]), int(t.shape[-1]))
    out = t
    for axis in _order(scales):
        mat = _torch_matrix(in_hw[axis], out_hw[axis], scales[axis], str(t.device), t.dtype)
        if axis == 0:
            out = torch.matmul(mat, out)  # (H', H) @ (..., H, W) -> (..., H', W)
        else:
            out = torch.matmul(out, mat.T)  # (..., H, W) @ (W, W') -> (..., H, W')
    return out


@overload
def imresize(
    img: np.ndarray, scale: float | tuple[float, float] | None = None, size: tuple[int, int] | None = None
) -> np.ndarray: ...


@overload
def imresize(
    img: torch.Tensor, scale: float | tuple[float, float] | None = None, size: tuple[int, int] | None = None
) -> torch.Tensor: ...


def imresize(
    img: np.ndarray | torch.Tensor,
    scale: float | tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray | torch.Tensor:
    """MATLAB ``imresize(img, scale, 'bicubic')`` / ``imresize(img, [H W], 'bicubic')``, antialiased.

    Args:
        img: numpy ``uint8`` (bit-exact with MATLAB) or float array, ``HxW`` or ``HxWxC``; or a float
            torch tensor ``CxHxW`` / ``NxCxHxW`` (any device; computed in the tensor's dtype).
        scale: scale factor (``0.25`` downscales by 4), or a per-axis ``(sh, sw)`` pair. The output size
            is ``ceil(scale * input)`` as in MATLAB.
        size: explicit output ``(H, W)``; the per-axis scale then is ``out / in``.

    Returns:
        The resized image, same container and dtype as the input. Float outputs are not clipped.
    """
    if isinstance(img, torch.Tensor):
        scales, out_hw = _resolve((int(img.shape[-2]), int(img.shape[-1])), scale, size)
        return _imresize_torch(img, scales, out_hw)
    arr = np.asarray(img)
    scales, out_hw = _resolve((arr.shape[0], arr.shape[1]), scale, size)
    return _imresize_np(arr, scales, out_hw)


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop an ``HxW`` or ``HxWxC`` array to ``H - H % scale`` by ``W - W % scale`` (top-left kept)."""
    if img.ndim not in (2, 3):
        raise ValueError(f"expected HxW or HxWxC array, got shape {img.shape}")
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale, ...]


def resize_channels(px: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``H×W×C`` uint8/uint16/float32 pixels to ``size`` (height, width) with :func:`imresize` (uint8 exactly as
    MATLAB does it, uint16 rounded half up, float clipped to [0, 1]).

    One channel at a time (the channels are independent): the float64 working buffers are one channel's.
    """
    out = np.empty((*size, px.shape[2]), dtype=px.dtype)
    for ch in range(px.shape[2]):
        if px.dtype == np.uint8:
            out[:, :, ch] = imresize(px[:, :, ch], size=size)
        elif px.dtype == np.uint16:
            y = imresize(px[:, :, ch].astype(np.float64), size=size)
            out[:, :, ch] = np.clip(np.floor(y + 0.5), 0, 65535)
        else:
            out[:, :, ch] = np.clip(imresize(px[:, :, ch], size=size), 0, 1)
    return out
