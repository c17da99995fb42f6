"""Upscaling images: the Python API (:class:`Upscaler`, :func:`upscale`); the ``lightsr upscale`` command over it
is :mod:`lightsr.commands.upscale`.

The data path: decode (:mod:`lightsr.imageio`: channels, 16 bits, orientation, ICC, DPI kept) → float in [0, 1]
→ colour planes through the network tile by tile (:mod:`lightsr.tiling`), alpha separately → integers of the
input's bit depth → atomic write. Grayscale runs through the network as replicated RGB and comes back as luma;
transparent pixels get their colour from their visible neighbours first, so the network never sees (and bleeds)
the arbitrary colour stored under alpha = 0.

What the user named is resolved by :mod:`lightsr.sources` and run by a runtime (:mod:`lightsr.runtimes`); the
tile plan comes from :func:`lightsr.tiling.plan_image`. The Upscaler orchestrates: planning, the tiles' order,
alpha, progress, non-finite outputs and re-planning after running out of memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lightsr.alpha import exact_alpha, fill_transparent, to_luma
from lightsr.device import resolve_device
from lightsr.errors import LightSRError, UsageError
from lightsr.imageio import (
    ALPHA_FORMATS,
    DEFAULT_MAX_OUTPUT_PIXELS,
    DEFAULT_MAX_PIXELS,
    ImageData,
    array_to_tensor,
    check_not_empty,
    composite,
    format_for,
    load_image,
    save_image,
    tensor_to_array,
    unpack,
)
from lightsr.models._common import mirror_pad
from lightsr.models.base import SRNet
from lightsr.resize import resize_channels
from lightsr.runtimes.base import Runtime
from lightsr.runtimes.factory import build
from lightsr.runtimes.registry import check_runtime
from lightsr.sources import resolve
from lightsr.tiling import (
    TilePlan,
    arch_tiling,
    can_stream,
    default_memory_budget,
    halve,
    parse_memory,
    plan_image,
    plan_tiles,
    run_tiled,
)

log = logging.getLogger("lightsr")

# Images of fewer input pixels run on one CPU thread: their layers are too small for a team of threads to pay off
# (two threads measured no faster up to 48×48), and a team stalls at every layer when another process takes one of
# its cores — 1,000 files of 4×4 ran ~4× slower on two threads than on one beside a busy process
# (benchmarks/README.md, "Threads beside other work").
SMALL_IMAGE = 64 * 64


class NonFiniteOutputError(LightSRError, RuntimeError):
    """The network produced NaN or Inf (typically fp16 overflow); nothing is written."""


class OutputExistsError(LightSRError, FileExistsError):
    """An output file exists and overwriting was not allowed, or the output would replace an input."""


class Upscaler:
    """Keeps a network loaded and upscales images, arrays, tensors and files with it.

    ``model``: what :func:`lightsr.sources.resolve` takes — a bundled or published name, a checkpoint path
    (``.pth``, ``.safetensors``), an exported ``.onnx`` file, or an :class:`SRNet` (None:
    :func:`lightsr.bundled.default_upscale_model` at ``scale``). ``tile``: None picks the tile size from
    ``max_memory`` (the whole image when it fits), 0 never tiles, N uses cores of N input pixels.
    ``tile_overlap``: context on each side of a tile (default: the network's, ``TilingSpec.overlap``; see
    :func:`lightsr.tiling.arch_tiling`). ``alpha``: ``"bicubic"`` or ``"model"`` (the network on the alpha
    plane replicated to RGB). ``max_memory``: bytes or a string such as ``"2GB"`` that sets the automatic tile
    size: on CPU one tile's working set plus the image buffers, on a GPU one tile (default:
    :func:`lightsr.tiling.default_memory_budget`). ``device``: ``auto`` (the runtime's accelerator when
    available), ``cpu``, ``cuda[:N]``, …; ``precision``: ``fp32``, ``bf16``, ``fp16`` (CUDA only), ``int8``
    (OpenVINO's int8 graph, :mod:`lightsr.runtimes.int8`) or ``auto`` (bf16 where the device computes it natively
    — :func:`lightsr.device.native_bf16` — else fp32, never int8; :attr:`precision` then holds the choice).
    ``backend``: a runtime of :data:`lightsr.runtimes.RUNTIMES` — ``torch``, or ``onnxruntime``/``openvino``
    running the network's ONNX export, made and cached on first use; None: torch for networks (OpenVINO for int8),
    onnxruntime for ``.onnx`` files (which OpenVINO runs too). ``calibration``: a folder of images to calibrate
    the int8 graph on (default: scikit-image's public-domain photos). ``progress``: tqdm bar over tiles;
    ``on_progress(done, total, what)``: called after each tile.
    ``fuse``: run the network's inference form (:meth:`SRNet.fuse`, same outputs, faster; default).
    ``outscale``: the final size as a multiple of the input (e.g. 2 with a ×4 network), reached by resizing
    the network's output with MATLAB's antialiased bicubic (:func:`lightsr.resize.imresize`), as
    Real-ESRGAN's ``--outscale`` does with its own resize; None keeps the network's scale.
    ``max_output_pixels``: refuse (:class:`UsageError`, before the network runs) an image whose output — or the
    network's output before an ``outscale`` resize, if larger — would have more pixels (default
    :data:`lightsr.imageio.DEFAULT_MAX_OUTPUT_PIXELS`; None: no limit).
    """

    def __init__(self, model: str | os.PathLike | SRNet | None = None, scale: int | None = None,
                 tile: int | None = None, tile_overlap: int | None = None, device: str | torch.device = "auto",
                 precision: str = "fp32", max_memory: int | str | None = None, alpha: str = "bicubic",
                 threads: int | None = None, progress: bool = False, fuse: bool = True,
                 outscale: float | None = None,
                 max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
                 on_progress: Callable[[int, int, str], None] | None = None, backend: str | None = None,
                 calibration: str | os.PathLike | None = None) -> None:
        if max_output_pixels is not None and not max_output_pixels >= 1:
            raise UsageError(f"--max-output-pixels {max_output_pixels}: must be ≥ 1 (or 0 for no limit)")
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
        if backend is not None:
            check_runtime(backend)  # an unknown name or a missing extra, before any model loads
        resolve_device(device)  # likewise an unavailable device
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.alpha = alpha
        self.progress = progress
        self.outscale = outscale
        self.max_output_pixels = max_output_pixels
        self.on_progress = on_progress  # (tiles done, tiles in all, what), e.g. for a web page's progress bar
        self._max_memory = parse_memory(max_memory) if max_memory is not None else None
        # upscale_batch: whether a batch's network outputs equal one picture's, per (padded) size and thread count
        self._batch_exact: dict[tuple[int, int, int], bool] = {}
        source = resolve(model, scale, option="model")
        self.runtime: Runtime = build(source, backend, precision, device, threads, fuse, calibration)
        self._warned_blend = False
        if scale is not None and scale != self.runtime.scale:  # an .onnx file: its metadata says its scale
            raise UsageError(f"{self.runtime.path}: is a ×{self.runtime.scale} model, but scale {scale} was "
                             "requested")
        self.scale = self.runtime.scale

    @property
    def backend(self) -> str:
        """The runtime that runs the network (a name of :data:`lightsr.runtimes.RUNTIMES`)."""
        return self.runtime.runtime

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def precision(self) -> str:
        """The precision the network runs in (``auto`` resolved)."""
        return self.runtime.precision

    @property
    def dtype(self) -> torch.dtype:
        return self.runtime.dtype

    @property
    def arch(self) -> str | None:
        return self.runtime.arch

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

    def check_output_size(self, height: int, width: int, name: str = "") -> None:
        """Refuse, in one line naming ``name``, an ``height × width`` input whose output (or the network's output
        before the ``outscale`` resize, if larger) exceeds ``max_output_pixels``: before any allocation."""
        limit = self.max_output_pixels
        if limit is None:
            return
        s = self.scale
        oh, ow = self.output_size(height, width)
        note = ""
        if oh * ow < height * s * width * s:
            oh, ow, note = height * s, width * s, f" (the network's ×{s} output, before --outscale)"
        if oh * ow > limit:
            raise UsageError(f"{name + ': ' if name else ''}{width}×{height} → {ow}×{oh} = {oh * ow:,} output "
                             f"pixels{note} exceeds the limit of {limit:,} (raise it with --max-output-pixels; "
                             "0: no limit)")

    # -- planning

    @property
    def max_memory(self) -> int:
        return self._max_memory if self._max_memory is not None else default_memory_budget(self.device)

    def _overlap(self) -> int:
        return arch_tiling(self.arch).overlap if self.tile_overlap is None else self.tile_overlap

    def plan(self, height: int, width: int, channels: int = 3, bytes_per_sample: int = 1) -> TilePlan:
        """The tile plan for an image of this size: exactly what :meth:`upscale` would run
        (:func:`lightsr.tiling.plan_image`: streamed, exact tiles where the runtime streams the network; wrapped
        tiles where the runtime places the seams, not an ``.onnx`` file of unknown origin)."""
        spec = arch_tiling(self.arch)
        return plan_image(height, width, spec, tile=self.tile, budget=self.max_memory if self.tile is None else None,
                          overlap=self._overlap(), element_size=self.dtype.itemsize, scale=self.scale,
                          channels=channels, bytes_per_sample=bytes_per_sample, on_host=self.device.type == "cpu",
                          final_size=self.output_size(height, width) if self.outscale is not None else None,
                          streamable=can_stream(self.runtime, spec),
                          wrap=spec.wrap and self.runtime.seamed is not None)

    # -- running

    def _forward_fn(self, what: str, streamed: bool = False) -> Callable:
        """``fn(tile, seams)`` → the network's output for one tile; ``streamed``: ``fn(x, tile, sink, progress)``
        running the whole ``C×H×W`` image through the runtime's layer-streamed execution instead."""
        rt = self.runtime

        def check(y: torch.Tensor) -> None:
            if not bool(torch.isfinite(y).all()):
                raise NonFiniteOutputError(
                    f"the network produced NaN/Inf in the {what} ({self.precision} on {self.device.type})"
                    + ("; fp16 overflows in this network — use --precision bf16 or fp32"
                       if self.precision == "fp16" else ""))

        if streamed:
            def run(x: torch.Tensor, tile: int, sink: Callable, progress: Callable | None) -> None:
                def checked(y0: int, block: torch.Tensor) -> None:
                    check(block)
                    sink(y0, block)

                assert rt.forward_tiled is not None
                rt.forward_tiled(x[None], tile, checked, progress)

            return run

        def fn(t: torch.Tensor, seams: tuple[int | None, int | None]) -> torch.Tensor:
            y = rt.seamed(t, seams) if rt.seamed is not None and seams != (None, None) else rt.forward(t)
            check(y)
            return y

        return fn

    def _run(self, x: torch.Tensor, plan: TilePlan, fn: Callable, sink: Callable, bar_label: str) -> None:
        """``fn`` from :meth:`_forward_fn` over ``x`` as ``plan`` says (streamed plans: a streamed ``fn``)."""
        bar = None
        if self.progress and plan.n_tiles > 1:
            from tqdm import tqdm

            # disable=None: tqdm's own switch, no bar when stderr is not a terminal (no carriage returns in logs)
            bar = tqdm(total=plan.n_tiles, desc=bar_label, unit="tile", leave=False, file=sys.stderr, disable=None)
        report = self.on_progress
        state = {"done": 0, "total": plan.n_tiles}

        def steps(done: int, total: int) -> None:  # streamed: every pass over the tiles counts
            state.update(done=done, total=total)
            if bar is not None:
                bar.total = total
                bar.update(done - bar.n)
            if report is not None:
                report(done, total, bar_label)

        def one_tile(n: int = 1) -> None:
            steps(state["done"] + n, state["total"])

        try:
            with torch.inference_mode():
                if plan.streamed:
                    fn(x, plan.tile, sink, steps if bar or report else None)
                else:
                    run_tiled(fn, x, self.scale, plan, sink=sink, progress=one_tile if bar or report else None)
        finally:
            if bar is not None:
                bar.close()

    def _run_colour(self, rgb: torch.Tensor, sink: Callable, plan: TilePlan, what: str = "image") -> TilePlan:
        """Colour planes through the network; on out-of-memory, retry with tiles half as large.

        Returns the plan that ran (the sink overwrites rows, so a retry simply starts again from the top).
        """
        spec = arch_tiling(self.arch)
        if (self.runtime.blended_tiles and not self._warned_blend and plan.n_tiles > 1 and not plan.streamed
                and (spec.global_context or spec.wrap)):
            log.warning("%d tiles are blended, not exact (%s): the output differs slightly from the whole image's; "
                        "--tile 0 runs the whole image", plan.n_tiles, self.runtime.blended_tiles)
            self._warned_blend = True
        while True:
            try:
                self._run(rgb, plan, self._forward_fn(what, plan.streamed), sink, "tiles")
                return plan
            except (torch.OutOfMemoryError, RuntimeError) as e:
                if isinstance(e, LightSRError) or not _is_oom(e):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                spec = arch_tiling(self.arch)
                smaller = halve(plan, spec, self._overlap(), can_stream(self.runtime, spec))
                if smaller is None:
                    raise LightSRError(f"out of memory on {self.device} even with {plan.core}-pixel tiles; "
                                       "use --device cpu or a smaller --max-memory") from None
                log.warning("out of memory with %d-pixel tiles on %s; retrying with %d", plan.core, self.device,
                            plan.core // 2)
                plan = smaller

    def _run_alpha(self, alpha: torch.Tensor, sink: Callable, plan: TilePlan) -> None:
        s = self.scale
        h, w = alpha.shape
        if self.alpha == "model" and plan.streamed:
            run = self._forward_fn("alpha channel", streamed=True)
            self._run(alpha[None].expand(3, -1, -1), plan, run,
                      lambda y0, b: sink(y0, b.clamp(0, 1).mean(0, keepdim=True)), "alpha tiles")
            return
        if self.alpha == "model":
            colour_fn = self._forward_fn("alpha channel")

            def fn(t: torch.Tensor, seams: tuple) -> torch.Tensor:
                return colour_fn(t.expand(-1, 3, -1, -1), seams).float().clamp(0, 1).mean(1, keepdim=True)

            self._run(alpha[None], plan, fn, sink, "alpha tiles")
            return

        def bicubic(t: torch.Tensor, _seams: tuple) -> torch.Tensor:
            return F.interpolate(t, scale_factor=s, mode="bicubic", align_corners=False)

        # Bicubic reads 2 pixels either side: 4 pixels of context make tiles exact.
        self._run(alpha[None], plan_tiles(h, w, 512, 4), bicubic, sink, "alpha tiles")

    @contextlib.contextmanager
    def _threads_for(self, height: int, width: int) -> Iterator[None]:
        """PyTorch's CPU threads for one image: one below :data:`SMALL_IMAGE` pixels (a pure function of the size,
        so that an image's output never depends on what else runs), else as set (``threads``, or PyTorch's)."""
        if self.device.type != "cpu" or self.runtime.module is None or height * width >= SMALL_IMAGE:
            yield
            return
        before = torch.get_num_threads()
        if before == 1:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def upscale_tensor(self, x: torch.Tensor, sink: Callable[[int, torch.Tensor, int], None] | None = None,
                       plan: TilePlan | None = None) -> torch.Tensor | None:
        """``C×H×W`` float in [0, 1] (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA, on CPU) → ``C×H'×W'`` at
        :meth:`output_size`.

        With ``sink(row0, block, channel0)`` the output is streamed in row blocks at the network's scale (no
        ``outscale`` resize) instead of returned.
        """
        if x.ndim != 3:
            raise UsageError(f"expected a C×H×W tensor, got shape {tuple(x.shape)}")
        c, h, w = x.shape
        if c not in (1, 2, 3, 4):
            raise UsageError(f"expected 1 to 4 channels (L, LA, RGB, RGBA), got {c}")
        check_not_empty(x.shape, "tensor")
        self.check_output_size(h, w)
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
        with self._threads_for(h, w):
            if colour_c == 3:
                plan = self._run_colour(colour, lambda y0, b: sink(y0, b, 0), plan)
            else:
                plan = self._run_colour(colour, lambda y0, b: sink(y0, to_luma(b), 0), plan)
            if alpha is not None:
                fix = exact_alpha(alpha, s)
                self._run_alpha(alpha, lambda y0, b: sink(y0, fix(y0, b), c - 1), plan)
        if out is not None and self.output_size(h, w) != tuple(out.shape[1:]):
            resized = resize_channels(out.permute(1, 2, 0).numpy(), self.output_size(h, w))
            out = torch.from_numpy(resized).permute(2, 0, 1)
        return out

    def upscale_data(self, data: ImageData, name: str | os.PathLike | None = None) -> ImageData:
        """Upscale decoded pixels, keeping channels and bit depth; DPI is multiplied by the scale. With ``name``
        (the file the pixels came from) a failure is one line naming it: NaN/Inf outputs, and running out of memory
        for the image buffers (the network itself retries smaller tiles)."""
        px = data.pixels
        h, w, c = px.shape
        check_not_empty(px.shape, "image")
        self.check_output_size(h, w)
        s = self.scale
        try:
            out = np.empty((h * s, w * s, c), dtype=px.dtype)

            def sink(y0: int, block: torch.Tensor, ch0: int) -> None:
                out[y0:y0 + block.shape[1], :, ch0:ch0 + block.shape[0]] = tensor_to_array(block, px.dtype)

            x = array_to_tensor(px)
            self.upscale_tensor(x, sink, self.plan(h, w, c, px.dtype.itemsize))
            if self.output_size(h, w) != (h * s, w * s):
                out = resize_channels(out, self.output_size(h, w))
        except NonFiniteOutputError as e:
            if name is None:
                raise
            raise NonFiniteOutputError(f"{name}: {e}; nothing written") from None
        except (MemoryError, RuntimeError) as e:
            if name is None or isinstance(e, LightSRError) or not (isinstance(e, MemoryError) or _is_oom(e)):
                raise
            oh, ow = self.output_size(h, w)
            raise LightSRError(f"{name}: out of memory upscaling {w}×{h} to {ow}×{oh}; lower --max-output-pixels "
                               "or free memory") from None
        return self._result(data, out)

    def _result(self, data: ImageData, out: np.ndarray) -> ImageData:
        """``out`` with ``data``'s metadata; DPI multiplied by the scale."""
        f = self.output_scale
        dpi = (data.dpi[0] * f, data.dpi[1] * f) if data.dpi else None
        return ImageData(out, icc_profile=data.icc_profile, dpi=dpi, format=data.format, exif=data.exif)

    def can_batch(self, first: ImageData, other: ImageData) -> bool:
        """Whether :meth:`upscale_batch` runs ``other`` through the network together with ``first``: the same
        size, channels (gray or RGB, no alpha) and depth, on a torch network, small enough that two of them fit
        the memory budget as one tile."""
        a, b = first.pixels, other.pixels
        if a.shape != b.shape or a.dtype != b.dtype or a.ndim != 3 or a.shape[2] not in (1, 3):
            return False
        if self.runtime.module is None:
            return False
        h, w, c = a.shape
        one, two = self.plan(h, w, c, a.dtype.itemsize), self.plan(2 * h, w, c, a.dtype.itemsize)
        return (one.n_tiles == 1 and not one.streamed and two.n_tiles == 1 and not two.streamed
                and one.rows[0].seam(one.periods[0]) is None and one.cols[0].seam(one.periods[1]) is None)

    def upscale_batch(self, datas: Sequence[ImageData], names: Sequence[Any] | None = None) -> list[ImageData]:
        """:meth:`upscale_data` of each of ``datas``, the same outputs bit for bit; pictures that
        :meth:`can_batch` says go together run through the network as one batch (more work per layer keeps a
        CPU's threads busier; ``benchmarks/README.md``, "Many files").

        A batch is only as exact as the kernels the backend picks for it, which may sum in another order than for
        one picture (oneDNN does for some convolution shapes). So the first batch of each input size is run both
        ways and its network outputs compared bit for bit: the size batches from then on only if they were equal,
        and that first batch's results are the one-at-a-time ones either way. A batch whose network output holds
        NaN/Inf or does not fit in memory runs again one picture at a time, so that an error names its picture."""
        names = list(names) if names is not None else [None] * len(datas)
        if len(datas) < 2 or not all(self.can_batch(datas[0], d) for d in datas[1:]):
            return self._one_by_one(datas, names)
        h, w, c = datas[0].pixels.shape
        self.check_output_size(h, w)
        s = self.scale
        period_h, period_w = self.plan(h, w, c, datas[0].pixels.dtype.itemsize).periods
        try:
            fn = self._forward_fn("image")
            with torch.inference_mode(), self._threads_for(h, w):
                key = (period_h, period_w, torch.get_num_threads())
                if self._batch_exact.get(key) is False:
                    return self._one_by_one(datas, names)
                colours = []
                for d in datas:
                    x = array_to_tensor(d.pixels)
                    colours.append(x if c == 3 else x.expand(3, -1, -1))
                x = torch.stack(colours)
                if (period_h, period_w) != (h, w):  # as run_tiled pads a one-tile plan in wrap mode
                    x = mirror_pad(x, period_h - h, period_w - w)
                y = fn(x, (None, None))
                if key not in self._batch_exact:
                    alone = torch.cat([fn(x[i:i + 1], (None, None)) for i in range(len(datas))])
                    self._batch_exact[key] = torch.equal(y, alone)
                    y = alone
            outs = []
            for i, d in enumerate(datas):
                block = y[i, :, :h * s, :w * s].float().cpu()
                out = tensor_to_array(block if c == 3 else to_luma(block), d.pixels.dtype)
                if self.output_size(h, w) != out.shape[:2]:
                    out = resize_channels(out, self.output_size(h, w))
                outs.append(out)
        except (NonFiniteOutputError, MemoryError, RuntimeError) as e:
            if not isinstance(e, (NonFiniteOutputError, MemoryError)) and not _is_oom(e):
                raise
            return self._one_by_one(datas, names)
        return [self._result(d, out) for d, out in zip(datas, outs, strict=True)]

    def _one_by_one(self, datas: Sequence[ImageData], names: list[Any]) -> list[ImageData]:
        return [self.upscale_data(d, n) for d, n in zip(datas, names, strict=True)]

    def upscale(self, image: Any) -> Any:
        """Upscale a PIL image, a numpy array (uint8/uint16, ``H×W`` or ``H×W×C``; float in [0, 1] also
        accepted) or a torch tensor (float in [0, 1], ``C×H×W`` or ``N×C×H×W``); returns the same kind
        (:func:`lightsr.imageio.unpack`)."""
        pixels, repack = unpack(image)
        if isinstance(pixels, ImageData):
            return repack(self.upscale_data(pixels))
        return repack([self.upscale_tensor(t) for t in pixels])

    __call__ = upscale

    def upscale_file(self, src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False,
                     max_pixels: int | None = DEFAULT_MAX_PIXELS, quality: int = 95,
                     background: tuple[int, int, int] | None = None) -> Path:
        """Read ``src``, upscale, write ``dst`` atomically (format by its extension); returns ``dst``.

        Refuses to replace ``src`` itself, and an existing ``dst`` unless ``overwrite``. An image with alpha
        written to a format without alpha (JPEG) is composited over ``background`` (8-bit RGB) when given,
        else its alpha channel is dropped with a warning. ICC profile, resolution and EXIF (orientation reset,
        pixel size updated) are carried over. The three steps are :meth:`read_file`, :meth:`upscale_data` and
        :meth:`write_file` (what :mod:`lightsr.pipeline` runs on three threads for many files).
        """
        src, dst = Path(src), Path(dst)
        format_for(dst)
        self.check_destination(src, dst, overwrite)
        data = self.read_file(src, max_pixels)
        return self.write_file(dst, self.upscale_data(data, src), data, src, quality, background)

    @staticmethod
    def check_destination(src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False) -> None:
        """Refuse (:class:`OutputExistsError`) a ``dst`` that is ``src`` itself, or that exists unless
        ``overwrite``."""
        src, dst = Path(src), Path(dst)
        if dst.exists() and dst.resolve() == src.resolve():
            raise OutputExistsError(f"{dst}: is the input; refusing to overwrite it")
        if dst.exists() and not overwrite:
            raise OutputExistsError(f"{dst}: exists (use --overwrite)")

    def read_file(self, src: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageData:
        """Decode ``src`` (:func:`lightsr.imageio.load_image`), refusing from its header, before any pixel is
        decoded, an image above ``max_pixels`` or whose output would exceed ``max_output_pixels``."""
        return load_image(src, max_pixels=max_pixels, check_size=lambda w, h: self.check_output_size(h, w, str(src)))

    def write_file(self, dst: str | os.PathLike, result: ImageData, source: ImageData, src: str | os.PathLike = "",
                   quality: int = 95, background: tuple[int, int, int] | None = None) -> Path:
        """Write ``result``, the upscaled ``source`` (read from ``src``), to ``dst`` as :meth:`upscale_file` does:
        atomically, alpha composited over ``background`` (or dropped with a warning) for formats without it."""
        dst = Path(dst)
        fmt = format_for(dst)
        if source.has_alpha and fmt not in ALPHA_FORMATS:
            if background is not None:
                result = composite(result, background)
            else:
                log.warning("%s: %s has no alpha channel; the alpha channel of %s is dropped (composite it over a "
                            "colour with --background)", dst, fmt, Path(src).name)
        if source.bit_depth == 16 and fmt not in ("PNG", "TIFF"):
            log.info("%s: %s stores 8 bits per channel; 16-bit input rounded", dst, fmt)
        save_image(dst, result, quality=quality)
        return dst

    def upscale_video(self, src: str | os.PathLike, dst: str | os.PathLike, codec: str | None = None,
                      crf: int | None = None, bitrate: int | None = None, pix_fmt: str | None = None,
                      frames: tuple[int, int | None] | None = None, overwrite: bool = False,
                      max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool = False,
                      on_frames: Callable[[int, int], None] | None = None) -> Path:
        """Upscale a video file frame by frame into ``dst`` (MP4, MOV, MKV or WebM by its extension; needs
        ``pip install "lightsr[video]"``); returns ``dst``. The video is never held in memory: frames are decoded,
        upscaled and encoded as they come (:mod:`lightsr.pipeline`). Audio and subtitle streams are copied;
        timestamps, rate, rotation and colour range are kept (:mod:`lightsr.video`). ``codec``, ``crf``,
        ``bitrate``, ``pix_fmt``: see :class:`lightsr.video.VideoOptions` (default H.264, crf 18, yuv420p);
        ``frames``: ``(first, stop)``, frame indices with ``stop`` excluded (None: to the end). Raises the
        one-line :class:`lightsr.errors.LightSRError` of a file that cannot be read or written; nothing partial
        is left behind. Animated GIF, WebP and PNG files are upscaled frame by frame the same way. ``progress``:
        a tqdm bar over frames; ``on_frames(written, expected)``: called as frames are written.
        """
        from lightsr.pipeline import Job, WriteOptions, run
        from lightsr.video import VideoOptions

        start, stop = frames if frames is not None else (0, None)
        options = WriteOptions(overwrite=overwrite, max_pixels=max_pixels,
                               video=VideoOptions(codec, crf, bitrate, pix_fmt, start, stop))
        (result,) = run(self, [Job(Path(src), Path(dst))], options, progress=progress, on_frames=on_frames)
        if result.exception is not None:
            raise result.exception
        return Path(dst)


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return True
    msg = str(e).lower()
    return "out of memory" in msg or "can't allocate memory" in msg or "not enough memory" in msg


def upscale(image: Any, model: str | os.PathLike | SRNet | None = None, scale: int | None = None,
            tile: int | None = None, **kwargs: Any) -> Any:
    """Upscale one image (PIL, numpy or torch; see :meth:`Upscaler.upscale`) and return the same kind.

    Loads the model on every call: keep an :class:`Upscaler` for repeated use. ``kwargs`` go to
    :class:`Upscaler` (``tile_overlap``, ``device``, ``precision``, ``max_memory``, ``alpha``).
    """
    return Upscaler(model, scale=scale, tile=tile, **kwargs).upscale(image)
