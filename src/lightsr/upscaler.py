"""Upscaling images: the Python API (:class:`Upscaler`, :func:`upscale`) and the ``lightsr upscale`` command.

The data path: decode (:mod:`lightsr.imageio`: channels, 16 bits, orientation, ICC, DPI kept) → float in [0, 1]
→ colour planes through the network tile by tile (:mod:`lightsr.tiling`), alpha separately → integers of the
input's bit depth → atomic write. Grayscale runs through the network as replicated RGB and comes back as luma;
transparent pixels get their colour from their visible neighbours first, so the network never sees (and bleeds)
the arbitrary colour stored under alpha = 0.
"""

from __future__ import annotations

import argparse
import copy
import glob
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lightsr import _argtypes
from lightsr._files import check_creatable
from lightsr.bundled import DEFAULT_MODEL, bundled_model, resolve_model
from lightsr.errors import LightSRError, UsageError
from lightsr.imageio import (
    ALPHA_FORMATS,
    DEFAULT_MAX_PIXELS,
    FORMATS,
    INPUT_EXTENSIONS,
    ImageData,
    array_to_tensor,
    format_for,
    load_image,
    save_image,
    tensor_to_array,
)
from lightsr.models.base import SRNet
from lightsr.tiling import (
    SeamHooks,
    TilePlan,
    arch_tiling,
    auto_tile,
    default_memory_budget,
    parse_memory,
    plan_tiles,
    run_tiled,
)

log = logging.getLogger("lightsr")

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# ITU-R BT.601 luma, as Pillow converts RGB to L: grayscale inputs come back through the same formula.
LUMA = (0.299, 0.587, 0.114)


class NonFiniteOutputError(LightSRError, RuntimeError):
    """The network produced NaN or Inf (typically fp16 overflow); nothing is written."""


class OutputExistsError(LightSRError, FileExistsError):
    """An output file exists and overwriting was not allowed, or the output would replace an input."""


# ------------------------------------------------------------------------------------------- model, device


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None → CUDA when available, else CPU; anything else must name an available device."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available in this PyTorch build/machine; use --device cpu")
    return dev


def resolve_precision(precision: str, device: torch.device, supported: tuple[str, ...] = tuple(PRECISIONS)
                      ) -> torch.dtype:
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision fp16 needs a CUDA device (CPU kernels for fp16 are missing or very slow); "
                         "use --precision bf16 or fp32 on CPU")
    if precision not in supported:
        raise UsageError(f"--precision {precision}: this network supports {', '.join(supported)}")
    return PRECISIONS[precision]


# -------------------------------------------------------------------------------------------- pixel helpers


def fill_transparent(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Colour of fully transparent pixels replaced by the alpha-weighted colour of the nearest visible ones.

    Push-pull: an alpha-weighted pyramid (sums of ``rgb·α`` and ``α`` over 2×2 blocks) is built down to one
    pixel, then each level fills its empty pixels from the coarser one. Visible pixels are untouched; the
    network then sees colour continuing smoothly under transparent areas instead of (often black) garbage
    that would bleed into the edges of visible ones.
    """
    empty = alpha <= 0
    if not bool(empty.any()) or bool(empty.all()):
        return rgb
    w = alpha.clamp(0, 1)[None, None]
    c = rgb[None] * w
    levels = [(c, w)]
    while max(c.shape[-2:]) > 1:
        c = F.avg_pool2d(c, 2, ceil_mode=True)
        w = F.avg_pool2d(w, 2, ceil_mode=True)
        levels.append((c, w))
    colour = levels[-1][0] / levels[-1][1].clamp_min(1e-12)
    for c, w in reversed(levels[:-1]):
        up = colour.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., : c.shape[-2], : c.shape[-1]]
        colour = torch.where(w > 0, c / w.clamp_min(1e-12), up)
    return torch.where(empty[None], colour[0], rgb)


def _to_luma(block: torch.Tensor) -> torch.Tensor:
    # Clamped first: the result equals converting the (valid) RGB output image to L.
    r, g, b = block.clamp(0, 1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b)[None]


# ------------------------------------------------------------------------------------------------ Upscaler

@dataclass
class _Net:
    """A runnable network: a PyTorch SRNet or an ONNX session, with what tiling needs to know."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    scale: int
    arch: str | None
    module: torch.nn.Module | None = None  # the PyTorch network (its inference form unless fuse=False)


class Upscaler:
    """Keeps a network loaded and upscales images, arrays, tensors and files with it.

    ``model``: a registry name (its bundled weights at ``scale``), a checkpoint path (``.pth``,
    ``.safetensors``), an exported ``.onnx`` file, or an :class:`SRNet`. ``tile``: None picks the tile size from
    ``max_memory`` (the whole image when it fits), 0 never tiles, N uses cores of N input pixels.
    ``tile_overlap``: context on each side of a tile (default: per architecture, see
    :data:`lightsr.tiling.ARCH_TILING`). ``alpha``: ``"bicubic"`` or ``"model"`` (the network on the alpha
    plane replicated to RGB). ``max_memory``: bytes or a string such as ``"2GB"`` that sets the automatic tile
    size: on CPU one tile's working set plus the image buffers, on a GPU one tile (default:
    :func:`lightsr.tiling.default_memory_budget`). ``device``: ``auto`` (CUDA when available), ``cpu``,
    ``cuda[:N]``; ``precision``: ``fp32``, ``bf16`` or ``fp16`` (CUDA only). ``progress``: tqdm bar over tiles.
    ``fuse``: run the network's inference form (:meth:`SRNet.fuse`, same outputs, faster; default).
    ``outscale``: the final size as a multiple of the input (e.g. 2 with a ×4 network), reached by resizing
    the network's output with MATLAB's antialiased bicubic (:func:`lightsr.resize.imresize`), as
    Real-ESRGAN's ``--outscale`` does with its own resize; None keeps the network's scale.
    """

    def __init__(self, model: str | os.PathLike | SRNet = DEFAULT_MODEL, scale: int | None = None,
                 tile: int | None = None, tile_overlap: int | None = None, device: str | torch.device = "auto",
                 precision: str = "fp32", max_memory: int | str | None = None, alpha: str = "bicubic",
                 threads: int | None = None, progress: bool = False, fuse: bool = True,
                 outscale: float | None = None) -> None:
        if alpha not in ("bicubic", "model"):
            raise UsageError(f"--alpha {alpha!r}: choose bicubic or model")
        if tile is not None and tile < 0:
            raise UsageError(f"--tile {tile}: must be 0 (no tiling) or a positive size")
        if outscale is not None and not (0 < outscale < float("inf")):
            raise UsageError(f"--outscale {outscale}: must be a positive number")
        if tile_overlap is not None and tile_overlap < 0:
            raise UsageError(f"--tile-overlap {tile_overlap}: must be ≥ 0")
        if threads is not None:
            if threads < 1:
                raise UsageError(f"--threads {threads}: must be ≥ 1")
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.precision = precision
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.alpha = alpha
        self.progress = progress
        self.fuse = fuse
        self.outscale = outscale
        self._max_memory = parse_memory(max_memory) if max_memory is not None else None
        self.dtype = torch.float32
        self.net = self._load(model, scale, threads)
        self.scale = self.net.scale

    # -- loading

    def _load(self, model: Any, scale: int | None, threads: int | None) -> _Net:
        if isinstance(model, SRNet):
            if scale is not None and scale != model.scale:
                raise UsageError(f"scale {scale} requested, but the network is ×{model.scale}")
            return self._wrap_torch(model, copy_first=True)
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError(f"model must be a name, a path or an SRNet, not {type(model).__name__}")
        text = str(model)
        path = Path(text)
        if path.suffix.lower() == ".onnx":
            from lightsr.export import OnnxModel

            if self.precision != "fp32":
                raise UsageError(f"--precision {self.precision}: ONNX models run in the precision they were "
                                 "exported in (fp32)")
            onnx = OnnxModel(path, device=self.device, threads=threads)
            if scale is not None and scale != onnx.scale:
                raise UsageError(f"{path}: is a ×{onnx.scale} model, but scale {scale} was requested")
            return _Net(onnx, onnx.scale, onnx.arch)
        from lightsr.checkpoints import load_model
        from lightsr.models.registry import list_models

        if path.is_file() or path.suffix.lower() in (".pth", ".pt", ".safetensors", ".ckpt", ".bin"):
            return self._wrap_torch(load_model(path, scale=scale), copy_first=False)
        if text in list_models():
            return self._wrap_torch(bundled_model(text, scale), copy_first=False)
        raise UsageError(f"model {text!r}: neither a file nor a known network ({', '.join(list_models())})")

    def _wrap_torch(self, module: SRNet, copy_first: bool) -> _Net:
        dtype = resolve_precision(self.precision, self.device, tuple(module.info.precisions))
        p = next(module.parameters(), None)
        if copy_first and p is not None and (p.device != self.device or p.dtype != dtype or module.training):
            module = copy.deepcopy(module)  # never change the caller's network behind their back
        module = module.to(self.device).eval()
        if self.fuse:
            # The inference form: the same function (≤ 1e-4), faster; folded in float32, then cast.
            try:
                module = module.fuse()
            except KeyError:  # an SRNet subclass lightsr has no inference form for: run it as it is
                log.info("%s has no inference form; running it unfused", type(module).__name__)
        module = module.to(dtype)
        self.dtype = dtype
        return _Net(module, module.scale, module.arch, module)

    @property
    def arch(self) -> str | None:
        return self.net.arch

    @property
    def output_scale(self) -> float:
        """Output size over input size: ``outscale`` when set, else the network's scale."""
        return self.scale if self.outscale is None else self.outscale

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The size of the result for an ``height × width`` input (``outscale`` × the input, rounded to the
        nearest pixel, at least 1)."""
        if self.outscale is None:
            return height * self.scale, width * self.scale
        return max(1, round(height * self.outscale)), max(1, round(width * self.outscale))

    # -- planning

    @property
    def max_memory(self) -> int:
        return self._max_memory if self._max_memory is not None else default_memory_budget(self.device)

    def _overlap(self) -> int:
        return arch_tiling(self.arch).overlap if self.tile_overlap is None else self.tile_overlap

    def plan(self, height: int, width: int, channels: int = 3, bytes_per_sample: int = 1) -> TilePlan:
        """The tile plan for an image of this size: exactly what :meth:`upscale` would run."""
        spec = arch_tiling(self.arch)
        overlap = self._overlap()
        # Wrap mode needs seam hooks inside the network: only possible for a PyTorch ELAN.
        wrap = spec.wrap and self.net.module is not None
        tile = self.tile
        if tile is None:
            elem = torch.tensor([], dtype=self.dtype).element_size()
            s = self.scale
            # Image buffers outside the network: float input (+ padded / filled copies), the integer output
            # and the copy the encoder makes, then the float strip of one tile row (estimated in a second step).
            # On a GPU those live in host memory and the budget is the device's alone.
            on_host = self.device.type == "cpu"
            fixed = (16 * channels * height * width + 2 * s * s * height * width * channels * bytes_per_sample
                     if on_host else 0)
            if on_host and self.outscale is not None:  # the final image and one channel's float64 resize buffers
                fh, fw = self.output_size(height, width)
                fixed += fh * fw * channels * bytes_per_sample + 8 * (fh * width * s + fh * fw)
            tile = auto_tile(height, width, spec, self.max_memory - fixed, elem, overlap)
            if tile and on_host:
                strip = 2 * 4 * channels * (tile + overlap) * s * width * s
                tile = auto_tile(height, width, spec, self.max_memory - fixed - strip, elem, overlap)
        return plan_tiles(height, width, tile, overlap, spec.align, wrap=wrap)

    # -- running

    def _forward_fn(self, net: _Net, hooks: SeamHooks | None, what: str) -> Callable:
        # onnxruntime takes host arrays (and picks its own device from the session's providers).
        dtype, device = (self.dtype, self.device) if net.module is not None else (torch.float32, "cpu")

        def fn(t: torch.Tensor, seams: tuple[int | None, int | None]) -> torch.Tensor:
            if hooks is not None:
                hooks.seams = seams
            y = net.forward(t.to(device, dtype))
            if not bool(torch.isfinite(y).all()):
                raise NonFiniteOutputError(
                    f"the network produced NaN/Inf in the {what} ({self.precision} on {self.device.type})"
                    + ("; fp16 overflows in this network — use --precision bf16 or fp32"
                       if self.precision == "fp16" else ""))
            return y

        return fn

    def _run(self, x: torch.Tensor, plan: TilePlan, fn: Callable, sink: Callable, bar_label: str) -> None:
        bar = None
        if self.progress and plan.n_tiles > 1:
            from tqdm import tqdm

            bar = tqdm(total=plan.n_tiles, desc=bar_label, unit="tile", leave=False, file=sys.stderr)
        try:
            with torch.inference_mode():
                run_tiled(fn, x, self.scale, plan, sink=sink, progress=bar.update if bar else None)
        finally:
            if bar is not None:
                bar.close()

    def _run_colour(self, rgb: torch.Tensor, sink: Callable, plan: TilePlan, what: str = "image") -> TilePlan:
        """Colour planes through the network; on out-of-memory, retry with tiles half as large.

        Returns the plan that ran (the sink overwrites rows, so a retry simply starts again from the top).
        """
        while True:
            hooks = SeamHooks(self.net.module) if plan.wrap else None
            try:
                if hooks is not None:
                    with hooks:
                        self._run(rgb, plan, self._forward_fn(self.net, hooks, what), sink, "tiles")
                else:
                    self._run(rgb, plan, self._forward_fn(self.net, None, what), sink, "tiles")
                return plan
            except (torch.OutOfMemoryError, RuntimeError) as e:
                if isinstance(e, LightSRError) or not _is_oom(e):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                core = max(max(r.stop - r.start for r in plan.rows), max(c.stop - c.start for c in plan.cols))
                if core // 2 < max(8, plan.align):
                    raise LightSRError(f"out of memory on {self.device} even with {core}-pixel tiles; "
                                       "use --device cpu or a smaller --max-memory") from None
                log.warning("out of memory with %d-pixel tiles on %s; retrying with %d", core, self.device,
                            core // 2)
                plan = plan_tiles(plan.height, plan.width, core // 2, self._overlap(), plan.align, wrap=plan.wrap)

    def _run_alpha(self, alpha: torch.Tensor, sink: Callable, plan: TilePlan) -> None:
        s = self.scale
        h, w = alpha.shape
        if self.alpha == "model":
            colour_fn = self._forward_fn(self.net, None, "alpha channel")
            hooks = SeamHooks(self.net.module) if plan.wrap else None

            def fn(t: torch.Tensor, seams: tuple) -> torch.Tensor:
                if hooks is not None:
                    hooks.seams = seams
                return colour_fn(t.expand(-1, 3, -1, -1), seams).float().clamp(0, 1).mean(1, keepdim=True)

            if hooks is not None:
                with hooks:
                    self._run(alpha[None], plan, fn, sink, "alpha tiles")
            else:
                self._run(alpha[None], plan, fn, sink, "alpha tiles")
            return

        def bicubic(t: torch.Tensor, _seams: tuple) -> torch.Tensor:
            return F.interpolate(t, scale_factor=s, mode="bicubic", align_corners=False)

        # Bicubic reads 2 pixels either side: 4 pixels of context make tiles exact.
        self._run(alpha[None], plan_tiles(h, w, 512, 4), bicubic, sink, "alpha tiles")

    def upscale_tensor(self, x: torch.Tensor, sink: Callable[[int, torch.Tensor, int], None] | None = None,
                       plan: TilePlan | None = None) -> torch.Tensor | None:
        """``C×H×W`` float in [0, 1] (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA, on CPU) → ``C×H'×W'`` at
        :meth:`output_size`.

        With ``sink(row0, block, channel0)`` the output is streamed in row blocks at the network's scale (no
        ``outscale`` resize) instead of returned.
        """
        c, h, w = x.shape
        if c not in (1, 2, 3, 4):
            raise UsageError(f"expected 1 to 4 channels (L, LA, RGB, RGBA), got {c}")
        x = x.detach().to("cpu", torch.float32)
        s = self.scale
        out = None
        if sink is None:
            out = torch.empty(c, h * s, w * s)

            def sink(y0: int, block: torch.Tensor, ch0: int) -> None:
                out[ch0:ch0 + block.shape[0], y0:y0 + block.shape[1]] = block.clamp(0, 1)

        colour_c = 3 if c >= 3 else 1
        colour = x[:3] if colour_c == 3 else x[:1].expand(3, -1, -1)
        alpha = x[c - 1] if c in (2, 4) else None
        if alpha is not None:
            colour = fill_transparent(colour, alpha)
        plan = plan or self.plan(h, w, c)
        if colour_c == 3:
            plan = self._run_colour(colour, lambda y0, b: sink(y0, b, 0), plan)
        else:
            plan = self._run_colour(colour, lambda y0, b: sink(y0, _to_luma(b), 0), plan)
        if alpha is not None:
            # Where the input is fully transparent (or fully opaque) around a pixel, the output is exactly so:
            # no faint halo from filter ringing or from the network's response to a flat plane.
            a = alpha[None, None]
            hi_a = F.max_pool2d(a, 5, 1, 2)[0, 0]
            lo_a = -F.max_pool2d(-a, 5, 1, 2)[0, 0]

            def alpha_sink(y0: int, block: torch.Tensor) -> None:
                rows = torch.arange(y0, y0 + block.shape[1]) // s
                cols = torch.arange(block.shape[2]) // s
                hi_b = hi_a[rows][:, cols]
                lo_b = lo_a[rows][:, cols]
                b = block[0].clamp(0, 1)
                b = torch.where(hi_b <= 0, 0.0, torch.where(lo_b >= 1, 1.0, b))
                sink(y0, b[None], c - 1)

            self._run_alpha(alpha, alpha_sink, plan)
        if out is not None and self.output_size(h, w) != tuple(out.shape[1:]):
            resized = _resize_pixels(out.permute(1, 2, 0).numpy(), self.output_size(h, w))
            out = torch.from_numpy(resized).permute(2, 0, 1)
        return out

    def upscale_data(self, data: ImageData) -> ImageData:
        """Upscale decoded pixels, keeping channels and bit depth; DPI is multiplied by the scale."""
        px = data.pixels
        h, w, c = px.shape
        s = self.scale
        out = np.empty((h * s, w * s, c), dtype=px.dtype)

        def sink(y0: int, block: torch.Tensor, ch0: int) -> None:
            out[y0:y0 + block.shape[1], :, ch0:ch0 + block.shape[0]] = tensor_to_array(block, px.dtype)

        x = array_to_tensor(px)
        self.upscale_tensor(x, sink, self.plan(h, w, c, px.dtype.itemsize))
        if self.output_size(h, w) != (h * s, w * s):
            out = _resize_pixels(out, self.output_size(h, w))
        f = self.output_scale
        dpi = (data.dpi[0] * f, data.dpi[1] * f) if data.dpi else None
        return ImageData(out, icc_profile=data.icc_profile, dpi=dpi, format=data.format)

    def upscale(self, image: Any) -> Any:
        """Upscale a PIL image, a numpy array (uint8/uint16, ``H×W`` or ``H×W×C``; float in [0, 1] also
        accepted) or a torch tensor (float in [0, 1], ``C×H×W`` or ``N×C×H×W``); returns the same kind."""
        return _dispatch(self, image)

    __call__ = upscale

    def upscale_file(self, src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False,
                     max_pixels: int | None = DEFAULT_MAX_PIXELS, quality: int = 95) -> Path:
        """Read ``src``, upscale, write ``dst`` atomically (format by its extension); returns ``dst``.

        Refuses to replace ``src`` itself, and an existing ``dst`` unless ``overwrite``.
        """
        src, dst = Path(src), Path(dst)
        fmt = format_for(dst)
        if dst.exists() and dst.resolve() == src.resolve():
            raise OutputExistsError(f"{dst}: is the input; refusing to overwrite it")
        if dst.exists() and not overwrite:
            raise OutputExistsError(f"{dst}: exists (use --overwrite)")
        data = load_image(src, max_pixels=max_pixels)
        result = self.upscale_data(data)
        if data.has_alpha and fmt not in ALPHA_FORMATS:
            log.warning("%s: %s has no alpha channel; the alpha channel of %s is dropped", dst, fmt, src.name)
        if data.bit_depth == 16 and fmt not in ("PNG", "TIFF"):
            log.info("%s: %s stores 8 bits per channel; 16-bit input rounded", dst, fmt)
        save_image(dst, result, quality=quality)
        return dst


def _resize_pixels(px: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``H×W×C`` uint8/uint16/float32 pixels to ``size`` with MATLAB's bicubic (uint8 exactly as MATLAB does it).

    One channel at a time (the channels are independent): the float64 working buffers are one channel's.
    """
    from lightsr.resize import imresize

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


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return True
    msg = str(e).lower()
    return "out of memory" in msg or "can't allocate memory" in msg or "not enough memory" in msg


def _pil_to_data(im: Any) -> ImageData:
    from lightsr.imageio import _to_array

    pixels = _to_array(im, Path("<PIL image>"))
    dpi = im.info.get("dpi")
    return ImageData(pixels, icc_profile=im.info.get("icc_profile"),
                     dpi=(float(dpi[0]), float(dpi[1])) if dpi else None)


def _data_to_pil(data: ImageData) -> Any:
    from PIL import Image

    px = data.pixels
    if data.bit_depth == 16:
        if data.mode != "L":  # Pillow has no 16-bit colour mode; only reachable from I;16 inputs (gray)
            raise UsageError("16-bit colour cannot be returned as a PIL image; pass a numpy array instead")
        im = Image.fromarray(px[:, :, 0].astype("<u2"), mode="I;16")
    else:
        im = Image.fromarray(px[:, :, 0] if px.shape[2] == 1 else px, mode=data.mode)
    if data.icc_profile:
        im.info["icc_profile"] = data.icc_profile
    if data.dpi:
        im.info["dpi"] = data.dpi
    return im


def _dispatch(up: Upscaler, image: Any) -> Any:
    if isinstance(image, ImageData):
        return up.upscale_data(image)
    if isinstance(image, torch.Tensor):
        if not image.is_floating_point():
            raise UsageError(f"tensor input must be float in [0, 1], got {image.dtype}")
        if image.ndim == 3:
            return up.upscale_tensor(image).to(image.device, image.dtype)
        if image.ndim == 4:
            return torch.stack([up.upscale_tensor(t) for t in image]).to(image.device, image.dtype)
        raise UsageError(f"tensor input must be C×H×W or N×C×H×W, got shape {tuple(image.shape)}")
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise UsageError(f"array input must be H×W or H×W×C, got shape {image.shape}")
        if image.dtype.kind == "f":
            t = torch.from_numpy(np.ascontiguousarray(image if image.ndim == 3 else image[:, :, None]))
            y = up.upscale_tensor(t.permute(2, 0, 1).float()).permute(1, 2, 0).numpy()
            return y[:, :, 0] if image.ndim == 2 else y
        if image.dtype not in (np.uint8, np.uint16):
            raise UsageError(f"array input must be uint8, uint16 or float in [0, 1], got {image.dtype}")
        out = up.upscale_data(ImageData(image)).pixels
        return out[:, :, 0] if image.ndim == 2 else out
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        data = _pil_to_data(image)
        return _data_to_pil(up.upscale_data(data))
    raise TypeError(f"cannot upscale a {type(image).__name__}: pass a PIL image, a numpy array or a torch tensor")


def upscale(image: Any, model: str | os.PathLike | SRNet = DEFAULT_MODEL, scale: int | None = None,
            tile: int | None = None, **kwargs: Any) -> Any:
    """Upscale one image (PIL, numpy or torch; see :meth:`Upscaler.upscale`) and return the same kind.

    Loads the model on every call: keep an :class:`Upscaler` for repeated use. ``kwargs`` go to
    :class:`Upscaler` (``tile_overlap``, ``device``, ``precision``, ``max_memory``, ``alpha``).
    """
    return Upscaler(model, scale=scale, tile=tile, **kwargs).upscale(image)


# ------------------------------------------------------------------------------------------------------ CLI


def _parse_pixels(text: str) -> int | None:
    t = text.strip().lower()
    mult = {"k": 10**3, "m": 10**6, "g": 10**9}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a pixel count such as 40M, 1e8 or 0 (no limit)") from None
    if not (value == 0 or 1 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a pixel count ≥ 1, or 0 for no limit")
    return None if value == 0 else int(value)


def _parse_tile(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected auto, 0 (no tiling) or a size in pixels") from None


def add_arguments(u: argparse.ArgumentParser) -> None:
    u.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    u.add_argument("-o", "--output", required=True, help="output file (one input file) or folder")
    src = u.add_argument_group("model")
    src.add_argument("--model", help="network name (picks the bundled weights for --scale)")
    src.add_argument("--weights", help="checkpoint file (.safetensors or .pth, any supported layout)")
    src.add_argument("--onnx", metavar="PATH", help="run an ONNX model exported by `lightsr export`")
    src.add_argument("--scale", type=_argtypes.positive, help="upscaling factor (default: the checkpoint's, or 4)")
    src.add_argument("--outscale", type=_argtypes.positive_float, metavar="X",
                     help="final size as a multiple of the input, e.g. 2 with a ×4 model: the model's output is "
                          "resized (MATLAB bicubic, antialiased); default: the model's scale")
    out = u.add_argument_group("files")
    out.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders (and ** in globs)")
    out.add_argument("--ext", choices=sorted({s.lstrip(".") for s in FORMATS}),
                     help="output format (default: the input's)")
    out.add_argument("--suffix", default="_x{scale}",
                     help="added to file names written into a folder (default: _x{scale}; '' for none)")
    exists = out.add_mutually_exclusive_group()
    exists.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    exists.add_argument("--skip-existing", action="store_true", help="skip inputs whose output already exists")
    out.add_argument("--quality", type=_argtypes.int_range(1, 100), default=95, help="JPEG/WebP quality (default: 95)")
    out.add_argument("--alpha", choices=("bicubic", "model"), default="bicubic",
                     help="how the alpha channel is upscaled (default: bicubic)")
    out.add_argument("--max-pixels", type=_parse_pixels, default=DEFAULT_MAX_PIXELS, metavar="N",
                     help=f"refuse inputs with more pixels (default: {DEFAULT_MAX_PIXELS // 10**6}M; 0: no limit)")
    run = u.add_argument_group("execution")
    run.add_argument("--tile", type=_parse_tile, default=None, metavar="SIZE",
                     help="tile core size in input pixels; auto (default: from --max-memory) or 0 (never tile)")
    run.add_argument("--tile-overlap", type=_argtypes.int_range(0), metavar="PX",
                     help="context pixels around each tile (default: per network, 32–48)")
    run.add_argument("--max-memory", metavar="SIZE",
                     help="memory budget that picks the tile size, e.g. 2GB: CPU: one tile plus the image "
                          "buffers (default 1GB); CUDA: one tile (default 70%% of free GPU memory)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    run.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32",
                     help="fp32 (default), bf16, or fp16 (CUDA only)")
    run.add_argument("--threads", type=_argtypes.positive, help="CPU threads for PyTorch / onnxruntime")
    run.add_argument("--no-fuse", action="store_true",
                     help="run the training form instead of the (equivalent, faster) inference form")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary")


@dataclass
class _Job:
    src: Path
    dst: Path


def _collect(patterns: list[str], recursive: bool) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Input files with the path their outputs keep below the output folder; and error lines."""
    found: list[tuple[Path, Path]] = []
    errors: list[str] = []
    for pat in patterns:
        p = Path(pat)
        if p.is_dir():
            walker = p.rglob("*") if recursive else p.glob("*")
            files = sorted(f for f in walker if f.is_file() and f.suffix.lower() in INPUT_EXTENSIONS
                           and not f.name.startswith("."))
            if not files:
                errors.append(f"{p}: no images ({', '.join(INPUT_EXTENSIONS)}) in this folder")
            found += [(f, f.relative_to(p)) for f in files]
        elif p.is_file():
            found.append((p, Path(p.name)))
        elif glob.has_magic(pat):
            files = sorted(Path(f) for f in glob.glob(pat, recursive=recursive)
                           if Path(f).is_file() and Path(f).suffix.lower() in INPUT_EXTENSIONS)
            if not files:
                errors.append(f"{pat}: no image matches")
            found += [(f, Path(f.name)) for f in files]
        else:
            errors.append(f"{pat}: no such file or folder")
    unique: dict[Path, tuple[Path, Path]] = {}
    for f, rel in found:  # the same file named twice (a file and its folder, overlapping globs) runs once
        unique.setdefault(f.resolve(), (f, rel))
    return list(unique.values()), errors


def _plan_jobs(args: argparse.Namespace, found: list[tuple[Path, Path]], scale: float) -> tuple[list[_Job], list[str]]:
    out = Path(args.output)
    # One input image (a file, or a glob or folder that holds just one) and an -o that names a file (has an
    # extension): write exactly there. Anything else is a folder (created when missing).
    named_file = len(args.inputs) == 1 and Path(args.inputs[0]).is_file()
    single_file = (len(found) == 1 and not out.is_dir() and not args.output.endswith(("/", os.sep))
                   and (out.suffix.lower() in FORMATS if not named_file else out.suffix != ""))
    jobs: list[_Job] = []
    conflicts: list[str] = []
    if single_file:
        src = found[0][0]
        if out.suffix.lower() not in FORMATS:
            raise UsageError(f"-o {out}: unknown image extension; use .png, .jpg, .webp, .tif or .bmp (or a "
                             "folder)")
        if args.ext and FORMATS[out.suffix.lower()] != FORMATS["." + args.ext]:
            raise UsageError(f"-o {out} and --ext {args.ext} disagree")
        jobs.append(_Job(src, out))
    else:
        if out.suffix.lower() in FORMATS and not out.is_dir():
            raise UsageError(f"-o {out}: several inputs need an output folder")
        try:
            suffix = args.suffix.format(scale=int(scale) if float(scale).is_integer() else scale)
        except (KeyError, IndexError, ValueError) as e:
            raise UsageError(f"--suffix {args.suffix!r}: only {{scale}} can be substituted ({e})") from None
        for src, rel in found:
            ext = "." + args.ext if args.ext else src.suffix.lower()
            jobs.append(_Job(src, out / rel.parent / f"{rel.stem}{suffix}{ext}"))
    # A file this batch writes is not one of its inputs: rerunning a batch into its own folder must not upscale
    # its earlier outputs (a_x4.png → a_x4_x4.png) nor read a file it is about to replace.
    writes = {j.dst.resolve(): j.src.resolve() for j in jobs}
    kept_jobs, ours = [], []
    for j in jobs:
        src = j.src.resolve()
        (ours if writes.get(src, src) != src else kept_jobs).append(j)
    if ours:
        log.warning("%d input(s) are this batch's own outputs (e.g. %s, from %s) and are not upscaled again",
                    len(ours), ours[0].src, writes[ours[0].src.resolve()].name)
    jobs = kept_jobs
    for j in jobs:
        check_creatable(j.dst, "-o")
    inputs = {j.src.resolve() for j in jobs}
    seen: dict[Path, Path] = {}
    kept = []
    for j in jobs:
        d = j.dst.resolve()
        if d in inputs:
            conflicts.append(f"{j.dst}: would overwrite an input (choose another -o or --suffix)")
        elif d in seen:
            conflicts.append(f"{j.dst}: is the output of both {seen[d]} and {j.src}")
        elif j.dst.exists() and not args.overwrite:
            if args.skip_existing:
                log.info("%s: exists, skipped", j.dst)
                seen[d] = j.src
                continue
            conflicts.append(f"{j.dst}: exists (use --overwrite or --skip-existing)")
        else:
            kept.append(j)
        seen[d] = j.src
    return kept, conflicts


def run_cli(args: argparse.Namespace) -> int:
    chosen = [o for o in ("model", "weights", "onnx") if getattr(args, o)]
    if "onnx" in chosen and len(chosen) > 1:
        raise UsageError("--onnx cannot be combined with --model/--weights")
    found, errors = _collect(args.inputs, args.recursive)
    if not found:  # nothing to do: say so without loading a model first
        for line in errors:
            print(f"lightsr: error: {line}", file=sys.stderr)
        return 1 if errors else 0
    if args.onnx and Path(args.onnx).suffix.lower() != ".onnx":
        raise UsageError(f"--onnx {args.onnx}: expected an .onnx file (as written by lightsr export)")
    if args.onnx and args.no_fuse:
        raise UsageError("--no-fuse applies to PyTorch models, not to --onnx")
    if args.onnx:
        model: Any = args.onnx
    else:
        model = resolve_model(args.model, args.weights, args.scale)
    up = Upscaler(model, scale=args.scale if args.onnx else None, tile=args.tile, tile_overlap=args.tile_overlap,
                  device=args.device, precision=args.precision, max_memory=args.max_memory, alpha=args.alpha,
                  threads=args.threads, progress=not args.quiet, fuse=not args.no_fuse, outscale=args.outscale)
    for line in errors:
        print(f"lightsr: error: {line}", file=sys.stderr)
    jobs, conflicts = _plan_jobs(args, found, up.output_scale)
    if conflicts:  # checked before any work: a batch never stops half-way over a name clash
        for line in conflicts:
            print(f"lightsr: error: {line}", file=sys.stderr)
        print(f"lightsr: nothing written ({len(conflicts)} output conflict{'s' * (len(conflicts) > 1)})",
              file=sys.stderr)
        return 2
    failed: list[Path] = []
    start = time.perf_counter()
    bar = None
    if not args.quiet and len(jobs) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="images", unit="img", file=sys.stderr)

    def say(line: str) -> None:
        if bar is not None:
            bar.write(line, file=sys.stderr)  # above the progress bar, not through it
        else:
            print(line, file=sys.stderr)

    for job in jobs:
        try:
            up.upscale_file(job.src, job.dst, overwrite=args.overwrite, max_pixels=args.max_pixels,
                            quality=args.quality)
        except NonFiniteOutputError as e:
            say(f"lightsr: error: {job.src}: {e}; nothing written")
            failed.append(job.src)
        except LightSRError as e:
            say(f"lightsr: error: {e}")
            failed.append(job.src)
        finally:
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if not args.quiet:
        secs = time.perf_counter() - start
        where = f"{up.arch or 'model'}, {up.device.type}, {args.precision}"
        names = [str(f) for f in failed[:5]] + (["…"] if len(failed) > 5 else [])
        print(f"lightsr: {len(jobs) - len(failed)}/{len(jobs)} images upscaled ×{up.output_scale:g} in {secs:.1f} s "
              f"({where})" + (f"; {len(failed)} failed: {', '.join(names)}" if failed else "")
              + (f"; {len(errors)} input error{'s' * (len(errors) > 1)}" if errors else ""), file=sys.stderr)
    return 1 if failed or errors else 0
