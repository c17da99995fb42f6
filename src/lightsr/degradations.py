"""Image degradations: the real-world training track and the deterministic ``--degrade`` of evaluation.

**Training** (:func:`degrade_real`): an HR patch becomes its LR counterpart through the second-order model of
Real-ESRGAN (Wang et al., "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic Data",
ICCVW 2021, Sec. 3): blur → random resize → Gaussian or Poisson noise → JPEG, then blur → random resize →
noise and a final resize to the LR size with a sinc filter, before or after the second JPEG. With ``order:
shuffled`` the operations of each stage (blur, resize, noise and, in the first, JPEG) run in a random order, as in
BSRGAN (Zhang et al., "Designing a Practical Degradation Model for Deep Blind
Image Super-Resolution", ICCV 2021, Sec. 3.2). Blur kernels: isotropic and anisotropic Gaussian, generalized
Gaussian and plateau-shaped (Real-ESRGAN Sec. 3.2), and the circular sinc (ideal low-pass) filter that causes
ringing and overshoot (Sec. 3.3). Every draw comes from the ``numpy.random.Generator`` passed in, so a sample is a
pure function of its seed; the operators run on one CPU thread in the data workers.

Unlike Real-ESRGAN's trainer, the HR target is not sharpened (that serves its GAN losses) and JPEG is Pillow's
libjpeg round trip, not a differentiable approximation.

**Evaluation** (:func:`parse_degrade`, :func:`apply_degrade`): ``jpeg:Q``, ``noise:SIGMA`` (Gaussian, 0–255
scale), ``blur:SIGMA`` (Gaussian), comma-joined in order of application, applied to a uint8 LR image with noise
seeded by the image's name, so that every run on every machine sees the same inputs.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from lightsr._fields import UNIT_PROB, meta, pair, probs
from lightsr.errors import UsageError

__all__ = [
    "KERNEL_TYPES",
    "DegradationConfig",
    "DegradeOp",
    "SecondStageConfig",
    "StageConfig",
    "apply_degrade",
    "degrade_downscaled",
    "degrade_real",
    "describe_degrade",
    "filter2d",
    "gaussian_noise",
    "generalized_gaussian_kernel",
    "jpeg",
    "mixed_kernel",
    "parse_degrade",
    "plateau_kernel",
    "poisson_noise",
    "resize",
    "sinc_kernel",
]

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")

# ------------------------------------------------------------------------------------------- settings

# The training config's ``data.degradation`` section (:mod:`lightsr.train.config` reads it and checks every field).
RESIZE_RANGE = meta(lambda v: 0.05 <= v[0] <= 1 <= v[1] <= 4,
                    "a pair [low, high] with 0.05 ≤ low ≤ 1 ≤ high ≤ 4 (down to low, up to high)")
KERNEL_SIZE = meta(lambda v: 7 <= v <= 41 and v % 2 == 1, "an odd kernel size in [7, 41]")


@dataclass
class StageConfig:
    """One stage of the real-world track: blur → resize → noise → JPEG. Defaults: Real-ESRGAN's first order
    (Wang et al., ICCVW 2021, Sec. 3; its ``train_realesrnet_x4plus.yml``)."""

    blur_prob: float = field(default=1.0, metadata=UNIT_PROB)
    kernel_size: int = field(default=21, metadata=KERNEL_SIZE)  # largest kernel; sizes 7, 9, … are drawn
    # iso, aniso, generalized_iso, generalized_aniso, plateau_iso, plateau_aniso
    kernel_prob: tuple[float, float, float, float, float, float] = field(
        default=(0.45, 0.25, 0.12, 0.03, 0.12, 0.03), metadata=probs(6))
    sinc_prob: float = field(default=0.1, metadata=UNIT_PROB)  # a sinc kernel instead of the mixed ones
    blur_sigma: tuple[float, float] = field(default=(0.2, 3.0), metadata=pair(0.05, 20))
    betag_range: tuple[float, float] = field(default=(0.5, 4.0), metadata=pair(0.1, 10))  # generalized Gaussian β
    betap_range: tuple[float, float] = field(default=(1.0, 2.0), metadata=pair(0.1, 10))  # plateau β
    resize_prob: tuple[float, float, float] = field(default=(0.2, 0.7, 0.1), metadata=probs(3))  # up, down, keep
    resize_range: tuple[float, float] = field(default=(0.15, 1.5), metadata=RESIZE_RANGE)
    gaussian_noise_prob: float = field(default=0.5, metadata=UNIT_PROB)  # else Poisson
    noise_range: tuple[float, float] = field(default=(1.0, 30.0), metadata=pair(0, 255))  # σ, 0–255 scale
    poisson_scale_range: tuple[float, float] = field(default=(0.05, 3.0), metadata=pair(0, 20))
    gray_noise_prob: float = field(default=0.4, metadata=UNIT_PROB)
    jpeg_range: tuple[int, int] = field(default=(30, 95), metadata=pair(1, 100, "ints"))


@dataclass
class SecondStageConfig(StageConfig):
    """The second stage; defaults: Real-ESRGAN's second order (resizes relative to the LR size)."""

    blur_prob: float = field(default=0.8, metadata=UNIT_PROB)
    blur_sigma: tuple[float, float] = field(default=(0.2, 1.5), metadata=pair(0.05, 20))
    resize_prob: tuple[float, float, float] = field(default=(0.3, 0.4, 0.3), metadata=probs(3))
    resize_range: tuple[float, float] = field(default=(0.3, 1.2), metadata=RESIZE_RANGE)
    noise_range: tuple[float, float] = field(default=(1.0, 25.0), metadata=pair(0, 255))
    poisson_scale_range: tuple[float, float] = field(default=(0.05, 2.5), metadata=pair(0, 20))


@dataclass
class DegradationConfig:
    """How LR training patches are made from HR ones (:func:`degrade_real`, :func:`degrade_downscaled`).

    ``bicubic``: MATLAB-exact bicubic, the papers' protocol. ``real``: the real-world track — Real-ESRGAN's
    second-order model (``order: fixed``) or with each stage's operations in a random order as in BSRGAN
    (``order: shuffled``); a share ``clean_prob`` of the samples keeps the bicubic LR, and a share
    ``downscaled_prob`` is the bicubic LR with the second stage's noise (on a share ``downscaled_noise_prob`` of
    them) and the final JPEG on it — an image downscaled by software and saved as JPEG, the path most web images
    take (BSRGAN, Sec. 3.2, counts bicubic downsampling among its resizes and always ends with JPEG).
    """

    type: Literal["bicubic", "real"] = "bicubic"
    order: Literal["fixed", "shuffled"] = "fixed"
    clean_prob: float = field(default=0.0, metadata=UNIT_PROB)
    downscaled_prob: float = field(default=0.0, metadata=UNIT_PROB)
    # Of the downscaled samples, the share with noise before the JPEG; the rest are a clean resize saved as JPEG.
    downscaled_noise_prob: float = field(default=1.0, metadata=UNIT_PROB)
    first: StageConfig = field(default_factory=StageConfig)
    second_prob: float = field(default=1.0, metadata=UNIT_PROB)  # Real-ESRGAN always runs the second stage
    # The second stage's JPEG is the final one (after or before the final resize + sinc): its jpeg_range.
    second: SecondStageConfig = field(default_factory=SecondStageConfig)
    final_sinc_prob: float = field(default=0.8, metadata=UNIT_PROB)
    final_kernel_size: int = field(default=21, metadata=KERNEL_SIZE)


# ------------------------------------------------------------------------------------------- kernels


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """``xᵀ Σ⁻¹ x`` on a ``size×size`` grid centred at 0, Σ = R diag(σx², σy²) Rᵀ with R the rotation by θ."""
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sigma_x ** 2, sigma_y ** 2]) @ rot.T
    inv = np.linalg.inv(cov)
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    xx, yy = np.meshgrid(r, r)
    return inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy * yy


def _normalised(k: np.ndarray) -> np.ndarray:
    return (k / k.sum()).astype(np.float32)


def generalized_gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float,
                                beta: float = 1.0) -> np.ndarray:
    """``exp(-½ (xᵀΣ⁻¹x)^β)``, normalised to sum 1; ``β = 1`` is the Gaussian."""
    return _normalised(np.exp(-0.5 * np.power(_quadratic_form(size, sigma_x, sigma_y, theta), beta)))


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """``1 / (1 + (xᵀΣ⁻¹x)^β)``, normalised to sum 1: a flat top with heavy tails."""
    return _normalised(1.0 / (1.0 + np.power(_quadratic_form(size, sigma_x, sigma_y, theta), beta)))


def sinc_kernel(size: int, omega_c: float) -> np.ndarray:
    """The circular ideal low-pass filter with cut-off ``omega_c`` (radians per pixel): ``ωc J₁(ωc r) / (2π r)``
    (its value at ``r = 0`` is the limit ``ωc² / 4π``), normalised to sum 1."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    xx, yy = np.meshgrid(r, r)
    rad = np.hypot(xx, yy)
    j1 = torch.special.bessel_j1(torch.from_numpy(omega_c * rad)).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(rad > 0, omega_c * j1 / (2 * np.pi * rad), omega_c ** 2 / (4 * np.pi))
    return _normalised(k)


def mixed_kernel(rng: np.random.Generator, size: int, probs: tuple[float, ...], sigma: tuple[float, float],
                 betag: tuple[float, float], betap: tuple[float, float]) -> np.ndarray:
    """A blur kernel of a type drawn with ``probs`` over :data:`KERNEL_TYPES` (as Real-ESRGAN's
    ``random_mixed_kernels``)."""
    kind = KERNEL_TYPES[int(rng.choice(len(KERNEL_TYPES), p=np.asarray(probs) / sum(probs)))]
    sx = float(rng.uniform(*sigma))
    if kind.endswith("_iso") or kind == "iso":
        sy, theta = sx, 0.0
    else:
        sy, theta = float(rng.uniform(*sigma)), float(rng.uniform(-math.pi, math.pi))
    if kind in ("iso", "aniso"):
        return generalized_gaussian_kernel(size, sx, sy, theta, 1.0)
    if kind.startswith("generalized"):
        return generalized_gaussian_kernel(size, sx, sy, theta, _beta(rng, betag))
    return plateau_kernel(size, sx, sy, theta, _beta(rng, betap))


def _beta(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    """β below 1 or above 1 with equal odds, as Real-ESRGAN draws it (with its plateau range (1, 2) the lower half
    is exactly 1), kept inside the configured range."""
    lo, hi = lo_hi
    if rng.random() < 0.5:
        return float(rng.uniform(lo, min(hi, 1.0))) if lo < 1 else float(lo)
    return float(rng.uniform(max(lo, 1.0), hi)) if hi > 1 else float(hi)


# ------------------------------------------------------------------------------------------- operators
# Images are float32 tensors 1×C×H×W in [0, 1] (noise may leave it; the callers clamp where the pipeline does).


def _tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 H×W×C → float32 1×C×H×W in [0, 1] (a copy)."""
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1).unsqueeze(0).float() / 255


def _uint8(x: torch.Tensor) -> np.ndarray:
    """float 1×C×H×W → uint8 H×W×C, clamped to [0, 1] and rounded."""
    return np.ascontiguousarray((x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())


def filter2d(img: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """Correlate every channel with ``kernel`` (odd size), reflecting the borders."""
    k = torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32))
    pad = k.shape[-1] // 2
    c = img.shape[1]
    mode = "reflect" if min(img.shape[-2:]) > pad else "replicate"
    x = F.pad(img, (pad, pad, pad, pad), mode=mode)
    return F.conv2d(x, k.expand(c, 1, *k.shape), groups=c)


def resize(img: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``torch.nn.functional.interpolate`` to ``(h, w)`` with ``mode`` in area / bilinear / bicubic."""
    if mode == "area":
        return F.interpolate(img, size=size, mode="area")
    return F.interpolate(img, size=size, mode=mode, align_corners=False)


def _luma(img: torch.Tensor) -> torch.Tensor:
    if img.shape[1] == 1:
        return img
    w = torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype).view(1, 3, 1, 1)
    return (img * w).sum(1, keepdim=True)


def gaussian_noise(img: torch.Tensor, sigma: float, gray: bool, rng: np.random.Generator) -> torch.Tensor:
    """Add N(0, σ²) noise, ``sigma`` on the 0–255 scale; ``gray``: the same noise in every channel."""
    shape = (1, 1 if gray else img.shape[1], *img.shape[-2:])
    noise = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)) * (sigma / 255.0)
    return img + noise


def poisson_noise(img: torch.Tensor, scale: float, gray: bool, rng: np.random.Generator) -> torch.Tensor:
    """Shot noise: ``Poisson(x·v)/v − x`` times ``scale``, with ``v`` the number of distinct 8-bit levels
    rounded up to a power of two (Real-ESRGAN); ``gray``: drawn on luma and added to every channel."""
    # The levels are counted on 8-bit values (of the luma itself for gray noise, as Real-ESRGAN does).
    base = ((_luma(img.clamp(0, 1)) if gray else img.clamp(0, 1)) * 255).round() / 255
    levels = len(np.unique(base.numpy()))
    vals = 2.0 ** math.ceil(math.log2(max(levels, 2)))
    noisy = rng.poisson(base.double().numpy() * vals) / vals
    noise = torch.from_numpy(noisy.astype(np.float32)) - base
    return img + noise * scale


def jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    """A JPEG round trip at ``quality`` through Pillow (libjpeg, 4:2:0 as Pillow's default), from the image rounded
    to 8 bits."""
    from PIL import Image

    arr = _uint8(img)
    gray = arr.shape[2] == 1
    pil = Image.fromarray(arr[..., 0] if gray else arr, "L" if gray else "RGB")
    buf = io.BytesIO()
    pil.save(buf, "JPEG", quality=int(quality))
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(pil.mode))
    return _tensor(out[..., None] if gray else out)


# ------------------------------------------------------------------------------------------- the training track


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def _kernel_size(rng: np.random.Generator, max_size: int) -> int:
    return int(rng.choice(np.arange(7, max_size + 1, 2)))


def _blur(img: torch.Tensor, st: StageConfig, rng: np.random.Generator) -> torch.Tensor:
    size = _kernel_size(rng, st.kernel_size)
    if rng.random() < st.sinc_prob:
        # Smaller kernels get a higher cut-off, as in Real-ESRGAN, so that the sinc stays visible.
        omega = float(rng.uniform(math.pi / 3 if size < 13 else math.pi / 5, math.pi))
        k = sinc_kernel(size, omega)
    else:
        k = mixed_kernel(rng, size, st.kernel_prob, st.blur_sigma, st.betag_range, st.betap_range)
    return filter2d(img, k)


def _random_resize(img: torch.Tensor, st: StageConfig, rng: np.random.Generator,
                   base: tuple[int, int]) -> torch.Tensor:
    kind = int(rng.choice(3, p=np.asarray(st.resize_prob) / sum(st.resize_prob)))  # up, down, keep
    factor = (_uniform(rng, (1.0, st.resize_range[1])) if kind == 0
              else _uniform(rng, (st.resize_range[0], 1.0)) if kind == 1 else 1.0)
    mode = RESIZE_MODES[int(rng.integers(3))]
    size = (max(1, int(base[0] * factor)), max(1, int(base[1] * factor)))
    return resize(img, size, mode)


def _noise(img: torch.Tensor, st: StageConfig, rng: np.random.Generator) -> torch.Tensor:
    gray = bool(rng.random() < st.gray_noise_prob)
    if rng.random() < st.gaussian_noise_prob:
        return gaussian_noise(img, _uniform(rng, st.noise_range), gray, rng)
    return poisson_noise(img, _uniform(rng, st.poisson_scale_range), gray, rng)


def _jpeg(img: torch.Tensor, st: StageConfig, rng: np.random.Generator) -> torch.Tensor:
    return jpeg(img.clamp(0, 1), int(rng.integers(st.jpeg_range[0], st.jpeg_range[1] + 1)))


def _stage(img: torch.Tensor, st: StageConfig, rng: np.random.Generator, shuffled: bool,
           resize_base: tuple[int, int], with_jpeg: bool = True) -> torch.Tensor:
    """One stage; random resizes scale ``resize_base`` (the HR size at the first stage, the LR size later). The
    second stage has no JPEG of its own: the final one is its JPEG (Real-ESRGAN)."""
    ops = ["blur", "resize", "noise", "jpeg"] if with_jpeg else ["blur", "resize", "noise"]
    if shuffled:
        ops = [ops[i] for i in rng.permutation(len(ops))]
    for op in ops:
        if op == "blur":
            if rng.random() < st.blur_prob:
                img = _blur(img, st, rng)
        elif op == "resize":
            img = _random_resize(img, st, rng, resize_base)
        elif op == "noise":
            img = _noise(img, st, rng).clamp(0, 1)
        else:
            img = _jpeg(img, st, rng)
    return img


def degrade_real(hr: np.ndarray, scale: int, cfg: DegradationConfig, rng: np.random.Generator) -> np.ndarray:
    """uint8 HWC LR of size ``(H // scale, W // scale)`` from a uint8 HWC HR image through the configured
    real-world track; a pure function of ``(hr, scale, cfg, rng state)``."""
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    x = _tensor(hr[:h * scale, :w * scale])
    shuffled = cfg.order == "shuffled"
    # First stage resizes relative to the HR size, the second relative to the LR size (Real-ESRGAN).
    x = _stage(x, cfg.first, rng, shuffled, (h * scale, w * scale))
    if rng.random() < cfg.second_prob:
        x = _stage(x, cfg.second, rng, shuffled, (h, w), with_jpeg=False)
    mode = RESIZE_MODES[int(rng.integers(3))]
    if rng.random() < cfg.final_sinc_prob:
        kernel = sinc_kernel(_kernel_size(rng, cfg.final_kernel_size), float(rng.uniform(math.pi / 3, math.pi)))
    else:
        kernel = None
    quality = int(rng.integers(cfg.second.jpeg_range[0], cfg.second.jpeg_range[1] + 1))
    if rng.random() < 0.5:  # resize + sinc, then JPEG
        x = resize(x, (h, w), mode)
        x = filter2d(x, kernel) if kernel is not None else x
        x = jpeg(x.clamp(0, 1), quality)
    else:  # JPEG, then resize + sinc
        x = jpeg(x.clamp(0, 1), quality)
        x = resize(x, (h, w), mode)
        x = filter2d(x, kernel) if kernel is not None else x
    return _uint8(x)


def degrade_downscaled(lr: np.ndarray, cfg: DegradationConfig, rng: np.random.Generator) -> np.ndarray:
    """uint8 HWC: a bicubic-downscaled uint8 LR image with, for a share ``downscaled_noise_prob`` of the samples,
    the second stage's noise (Gaussian or Poisson, colour or gray), then a JPEG round trip at a quality from the
    second stage's range (the final JPEG's)."""
    x = _tensor(lr)
    # Drawn only below 1, so that configs written before the key sample exactly as they did.
    if cfg.downscaled_noise_prob >= 1 or rng.random() < cfg.downscaled_noise_prob:
        x = _noise(x, cfg.second, rng).clamp(0, 1)
    return _uint8(_jpeg(x, cfg.second, rng))


# ------------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class DegradeOp:
    """One operation of a ``--degrade`` spec: ``jpeg`` (quality), ``noise`` (σ on 0–255) or ``blur`` (σ)."""
    kind: str  # "jpeg" | "noise" | "blur"
    value: float

    def __str__(self) -> str:
        return f"{self.kind}:{int(self.value) if self.kind == 'jpeg' else f'{self.value:g}'}"


_LIMITS = {"jpeg": (1, 100, "a JPEG quality 1–100"), "noise": (0, 255, "a noise σ in [0, 255]"),
           "blur": (0.1, 20, "a blur σ in [0.1, 20]")}


# Operations one --degrade may chain: a benchmark's degradation is a few steps; thousands took minutes per image.
MAX_DEGRADE_OPS = 8


def _cut(text: str, limit: int = 40) -> str:
    """``text`` for a one-line message: control characters escaped, at most ``limit`` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit + 1])
    return text if len(text) <= limit else text[:limit - 1] + "…"


def parse_degrade(spec: str, option: str = "--degrade") -> list[DegradeOp]:
    """``"noise:10,jpeg:60"`` → ops, in order (at most :data:`MAX_DEGRADE_OPS`); a malformed spec is a one-line
    :class:`UsageError`."""
    parts = spec.split(",", MAX_DEGRADE_OPS)
    if len(parts) > MAX_DEGRADE_OPS:
        raise UsageError(f"{option} {_cut(spec)}: at most {MAX_DEGRADE_OPS} operations, got {spec.count(',') + 1}")
    ops = []
    for part in parts:
        kind, sep, text = part.strip().partition(":")
        if kind not in _LIMITS or not sep:
            raise UsageError(f"{option} {_cut(spec)}: expected a comma-joined list of jpeg:Q, noise:SIGMA, "
                             f"blur:SIGMA, got '{_cut(part.strip())}'")
        lo, hi, desc = _LIMITS[kind]
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (lo <= value <= hi) or (kind == "jpeg" and not value.is_integer()):
            raise UsageError(f"{option} {_cut(spec)}: {kind} needs {desc}, got '{_cut(text)}'")
        ops.append(DegradeOp(kind, value))
    return ops


def describe_degrade(ops: list[DegradeOp]) -> str:
    """The canonical spec of ``ops`` (``noise:10,jpeg:60``), as :func:`parse_degrade` reads it."""
    return ",".join(map(str, ops))


def _seed(key: str, ops: list[DegradeOp], i: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{key}|{describe_degrade(ops)}|{i}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def apply_degrade(img: np.ndarray, ops: list[DegradeOp], key: str) -> np.ndarray:
    """uint8 image (HxW or HxWxC) after ``ops``, each result rounded to 8 bits; noise is seeded by ``key`` (the
    image's name), the spec and the op's position only."""
    if not ops:
        return img
    if img.ndim == 3 and img.shape[2] not in (1, 3):
        raise UsageError(f"--degrade applies to gray or RGB images, not {img.shape[2]} channels")
    gray2d = img.ndim == 2
    arr = img[..., None] if gray2d else img
    x = _tensor(arr)
    for i, op in enumerate(ops):
        if op.kind == "jpeg":
            x = jpeg(x, int(op.value))
        elif op.kind == "noise":
            x = gaussian_noise(x, op.value, False, _seed(key, ops, i))
        else:
            size = 2 * math.ceil(3 * op.value) + 1
            x = filter2d(x, generalized_gaussian_kernel(size, op.value, op.value, 0.0, 1.0))
        x = (x.clamp(0, 1) * 255).round() / 255
    out = _uint8(x)
    return np.ascontiguousarray(out[..., 0] if gray2d else out)
