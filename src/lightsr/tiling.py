"""Tiled inference: memory bounded by the tile size, and no visible seams.

The image is cut into a grid of *cores* (the part of the output a tile is responsible for). Each tile runs the
network on its core plus ``overlap`` input pixels of context on every side (clamped at the image border, where
the whole-image run has no context either), so pixels near a core border see what the whole-image run would
see within the network's effective receptive field.

Neighbouring tiles are blended, not cut: across each interior core border a smooth ramp of ``blend`` input
pixels hands the output over from one tile to the next. The ramp weights of the two tiles are exact complements
and the 2-D weight is the product of a row and a column weight, so at every output pixel the weights of all
tiles sum to one (a partition of unity): outputs are accumulated with no normalisation buffer. The ramp lies
in the middle of the overlap, where both tiles have at least ``overlap - blend/2`` pixels of context.

Memory: the model only ever sees one tile. The float32 accumulator is a *strip*: one row of tiles plus the
blend band below it; finished output rows are handed to a sink (which typically converts them to uint8/uint16
into the final image) and the strip moves down. Nothing holds per-tile outputs.

Tile geometry respects what each network needs to compute tiles like the whole image: its spec's
:class:`~lightsr.models.spec.TilingSpec` gives the alignment of tile borders (windowed attention or pooling
grids fixed to the image origin), the default context, the memory per pixel, and whether the network wraps
around the image borders.

Networks that pool or attend over the whole image (``TilingSpec.global_context``) cannot be blended exactly:
each tile would compute the global statistics of its own pixels. Their inference forms run *streamed* instead
(:attr:`~lightsr.models.base.InferenceForm.forward_tiled`, :mod:`lightsr.models._stream`): layer by layer, with
full-size LR feature maps and the statistics summed over all tiles, exact at any tile size. A streamed
:class:`TilePlan` (``streamed=True``, from :func:`plan_streamed`) describes those tiles; its memory is the maps
plus one tile (:func:`streamed_bytes`). The graph runtimes run the same execution with each stage as a graph
(:mod:`lightsr.runtimes.graphs`); the training form and exported ``.onnx`` files of such networks keep blended
tiles.

:func:`plan_image` picks an image's plan from a memory budget (the network's working set, and on the CPU the image
buffers around it); :func:`halve` re-plans with smaller tiles after running out of memory.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from lightsr.errors import UsageError
from lightsr.models._common import mirror_pad
from lightsr.models.registry import find_spec
from lightsr.models.spec import TilingSpec

log = logging.getLogger("lightsr")

# ------------------------------------------------------------------------------------- per-architecture facts

# Networks lightsr does not know (e.g. an exported ONNX graph of another tool): generous context, no alignment.
DEFAULT_TILING = TilingSpec(overlap=48, align=1, bytes_per_pixel=16_000)

# Smallest core the automatic choice goes down to: below this the overlap dominates the work.
MIN_AUTO_TILE = 32


def arch_tiling(arch: str | None) -> TilingSpec:
    """Tiling facts of a registered network (its spec's ``tiling``); a conservative default otherwise."""
    spec = find_spec(arch)
    return spec.tiling if spec is not None else DEFAULT_TILING


# -------------------------------------------------------------------------------------------------- memory

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def parse_memory(text: str | int, option: str = "--max-memory") -> int:
    """``"1.5GB"``, ``"800M"``, ``"2g"``, ``"512MiB"`` or a plain byte count → bytes (binary units); ``option``
    names the setting in the one-line error."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m[2].lower() not in _UNITS:
        raise UsageError(f"{option} {text!r}: expected a size such as 800MB, 2GB or 1.5G")
    value = int(float(m[1]) * _UNITS[m[2].lower()])
    if value <= 0:
        raise UsageError(f"{option} {text!r}: must be positive")
    return value


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# On CPU, 1 GiB of activations keeps a whole upscaling process (interpreter + torch ≈ 0.3 GB, image buffers)
# well under 1.5 GB, and larger tiles are barely faster on CPU (work is linear in pixels; only the overlap
# fraction shrinks).
CPU_DEFAULT_BUDGET = 1 << 30


def default_memory_budget(device: torch.device | str) -> int:
    """Activation budget for one tile: 70 % of the free GPU memory, or 1 GiB (at most half the free RAM) on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * 0.7)
    avail = _available_ram()
    return CPU_DEFAULT_BUDGET if avail is None else max(64 << 20, min(CPU_DEFAULT_BUDGET, avail // 2))


def activation_bytes(pixels: int, spec: TilingSpec, element_size: int = 4) -> int:
    """Estimated peak memory of running the network on ``pixels`` input pixels at the given element size."""
    return int(pixels * spec.bytes_per_pixel * _precision_factor(element_size))


def _precision_factor(element_size: int) -> float:
    # 16-bit runs keep some fp32 state (LayerNorm/softmax accumulators, the fp32 copy of the output), so 16-bit
    # counts as 0.6 of fp32 rather than 0.5 (benchmarks/README.md, "Tiling memory").
    return 1.0 if element_size >= 4 else 0.6


def _maps_bytes(pixels: int, spec: TilingSpec, element_size: int) -> float:
    # The maps are in the run's precision: exactly halved for 16 bits.
    return pixels * spec.map_bytes_per_pixel * min(element_size, 4) / 4


def streamed_bytes(height: int, width: int, tile: int, spec: TilingSpec, element_size: int = 4) -> int:
    """Estimated peak memory of streamed tiling (see the module docstring) of an ``height × width`` image with
    cores of ``tile``: the full-size feature maps plus one tile's window (the core and ``stream_halo``)."""
    wh, ww = (min(tile + 2 * spec.stream_halo, n) for n in (height, width))
    tile_bytes = wh * ww * spec.stream_bytes_per_pixel * _precision_factor(element_size)
    return int(_maps_bytes(height * width, spec, element_size) + tile_bytes)


def auto_tile(height: int, width: int, spec: TilingSpec, budget: int, element_size: int = 4,
              overlap: int | None = None, streamed: bool = False) -> int:
    """Core size for an image under a memory ``budget``: 0 (no tiling) when the whole image fits.

    The tile window is the core plus ``overlap`` context on both sides, so the largest window ``E`` with
    ``activation_bytes(E²) ≤ budget`` gives ``core = E - 2·overlap`` (aligned down, at least
    :data:`MIN_AUTO_TILE`). ``streamed``: the budget first holds the full-size feature maps
    (:func:`streamed_bytes`), the window adds the spec's ``stream_halo`` and needs no alignment.
    """
    if activation_bytes(height * width, spec, element_size) <= budget:
        return 0
    if streamed:
        free = budget - _maps_bytes(height * width, spec, element_size)
        per_px = spec.stream_bytes_per_pixel * _precision_factor(element_size)
        window = math.isqrt(int(free / per_px)) if free > 0 and per_px > 0 else 0
        return max(window - 2 * spec.stream_halo, MIN_AUTO_TILE)
    overlap = spec.overlap if overlap is None else overlap
    per_px = activation_bytes(1_000_000, spec, element_size) / 1_000_000
    window = math.isqrt(max(int(budget / per_px), 1))
    core = (window - 2 * _round_up(overlap, spec.align)) // spec.align * spec.align
    return max(core, _round_up(MIN_AUTO_TILE, spec.align))


# ---------------------------------------------------------------------------------------------------- plan


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


@dataclass(frozen=True)
class Span:
    """One tile along one axis: core ``[start, stop)`` in image pixels, window ``[in_start, in_stop)``.

    The window is in coordinates of the (padded) axis of length ``period`` seen as a circle: in wrap mode it
    may start below 0 or end past ``period``, meaning it continues from the opposite border.
    """

    start: int
    stop: int
    in_start: int
    in_stop: int

    @property
    def window(self) -> int:
        return self.in_stop - self.in_start

    def seam(self, period: int) -> int | None:
        """Index inside the window where it crosses the image border (wrap mode), else None."""
        if self.in_start < 0:
            return -self.in_start
        if self.in_stop > period:
            return period - self.in_start
        return None


def plan_axis(length: int, tile: int, overlap: int, align: int = 1, wrap: bool = False) -> list[Span]:
    """Split ``[0, length)`` into cores of at most ``tile`` (evenly sized, borders on multiples of ``align``).

    Windows add ``overlap`` (rounded up to ``align``) on each side. Without ``wrap`` they are clipped to the
    image; with ``wrap`` the axis is first padded to a multiple of ``align`` (as windowed networks pad) and
    windows at the borders continue around it, up to the whole padded axis.
    """
    period = _round_up(length, align) if wrap else length
    if tile <= 0 or tile >= length:
        return [Span(0, length, 0, period)]
    overlap = _round_up(max(overlap, 0), align)
    # Count in alignment units (the last one may be partial) and spread them evenly over the fewest cores
    # of at most `tile`: borders k·units/n (rounded) are distinct because each core gets ≥ 1 unit.
    units = -(-length // align)
    per_core = max(1, tile // align)
    n = -(-units // per_core)
    bounds = [0] + [round(k * units / n) * align for k in range(1, n)] + [length]
    spans = []
    for a, b in itertools.pairwise(bounds):
        if wrap:
            lo, hi = a - overlap, (period if b == length else b) + overlap
            if hi - lo >= period:
                lo, hi = 0, period
        else:
            lo, hi = max(0, a - overlap), min(length, b + overlap)
        spans.append(Span(a, b, lo, hi))
    return spans


@dataclass(frozen=True)
class TilePlan:
    """The tiles of an image: row spans × column spans, and the blend width at interior borders.

    ``periods`` are the (padded) axis lengths windows refer to: the image size, or in wrap mode the size
    padded to ``align``. ``streamed``: the tiles of the network's layer-streamed execution (see
    :func:`plan_streamed`), not blended.
    """

    height: int
    width: int
    tile: int
    overlap: int
    blend: int
    rows: tuple[Span, ...]
    cols: tuple[Span, ...]
    wrap: bool = False
    align: int = 1
    streamed: bool = False

    @property
    def n_tiles(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def periods(self) -> tuple[int, int]:
        if not self.wrap:
            return self.height, self.width
        return _round_up(self.height, self.align), _round_up(self.width, self.align)

    @property
    def core(self) -> int:
        """The largest core side: the tile size the plan actually runs."""
        return max(max(r.stop - r.start for r in self.rows), max(c.stop - c.start for c in self.cols))

    @property
    def max_window(self) -> tuple[int, int]:
        """Largest tile window (h, w) in input pixels: what bounds the model's memory."""
        return max(r.window for r in self.rows), max(c.window for c in self.cols)

    def tiles(self) -> Iterator[tuple[Span, Span]]:
        """Every tile as ``(row span, column span)``, row by row."""
        for r in self.rows:
            for c in self.cols:
                yield r, c


def plan_tiles(height: int, width: int, tile: int, overlap: int, align: int = 1, blend: int | None = None,
               wrap: bool = False, streamed: bool = False) -> TilePlan:
    """Tile plan for an ``height × width`` input; ``tile <= 0`` means one tile (the whole image).

    ``blend`` (default: ``overlap``) is the width of the hand-over ramp centred on each interior core border;
    it is limited to twice the overlap (both tiles must cover it) and to the smallest core (ramps of one tile
    must not meet). ``wrap``: see :func:`plan_axis`.
    """
    if tile > 0:
        tile = max(_round_up(tile, align), align)
    rows = plan_axis(height, tile, overlap, align, wrap)
    cols = plan_axis(width, tile, overlap, align, wrap)
    tiled = len(rows) * len(cols) > 1
    overlap_eff = _round_up(max(overlap, 0), align) if tiled else 0
    blend = overlap_eff if blend is None else blend
    cores = [s.stop - s.start for axis in (rows, cols) if len(axis) > 1 for s in axis]
    blend = max(0, min(blend, 2 * overlap_eff, min(cores) if cores else 0))
    return TilePlan(height, width, tile if tiled else 0, overlap_eff, blend, tuple(rows), tuple(cols),
                    wrap=wrap, align=align, streamed=streamed and tiled)


def can_stream(net: object, spec: TilingSpec) -> bool:
    """Whether ``net`` tiles exactly by layer-streamed execution: it has a ``forward_tiled`` (an inference form,
    or a graph runtime running one's stages) and the network has global operators (not its training form, not
    an exported ``.onnx`` file)."""
    return spec.global_context and getattr(net, "forward_tiled", None) is not None


def plan_streamed(height: int, width: int, tile: int, spec: TilingSpec) -> TilePlan:
    """The tiles of layer-streamed execution with cores of at most ``tile``: cut as the inference form cuts
    them (evenly, no alignment: every tile computes exactly what the whole image does), windows with the
    network's ``stream_halo``, no blending. One tile (``streamed`` False) when ``tile`` covers the image."""
    return plan_tiles(height, width, tile, spec.stream_halo, 1, blend=0, streamed=True)


def image_bytes(height: int, width: int, scale: int, channels: int = 3, bytes_per_sample: int = 1,
                final_size: tuple[int, int] | None = None) -> int:
    """Host memory of the image buffers around the network: the float input (with its padded and filled copies),
    the integer output and the copy its encoder makes; with ``final_size`` (an ``outscale`` resize) the final
    image and one channel's float64 resize buffers."""
    s = scale
    fixed = 16 * channels * height * width + 2 * s * s * height * width * channels * bytes_per_sample
    if final_size is not None:
        fh, fw = final_size
        fixed += fh * fw * channels * bytes_per_sample + 8 * (fh * width * s + fh * fw)
    return fixed


def plan_image(height: int, width: int, spec: TilingSpec, *, tile: int | None = None, budget: int | None = None,
               overlap: int | None = None, element_size: int = 4, scale: int = 1, channels: int = 3,
               bytes_per_sample: int = 1, on_host: bool = True, final_size: tuple[int, int] | None = None,
               streamable: bool = False, wrap: bool = False) -> TilePlan:
    """The tile plan of an ``height × width`` image (what :meth:`lightsr.Upscaler.plan` runs).

    ``tile``: cores of that size (0: the whole image), or None to pick them from ``budget`` bytes: the network's
    working set in ``element_size`` bytes per value and, ``on_host`` (the CPU), the image buffers
    (:func:`image_bytes`) and the float strip of one tile row. ``streamable``: the network tiles exactly by
    layer-streamed execution (:func:`can_stream`); with automatic tiles that needs the full-size feature maps within
    the budget, and when they do not fit the image gets blended tiles (approximate) and a warning. ``wrap``: the
    tiles may wrap (the runtime places the seams).
    """
    overlap = spec.overlap if overlap is None else overlap
    streamed = streamable
    if tile is None:
        if budget is None:
            raise ValueError("plan_image: automatic tiles (tile=None) need a memory budget")
        s = scale
        fixed = image_bytes(height, width, s, channels, bytes_per_sample, final_size) if on_host else 0

        def fit(streamed: bool) -> tuple[int, int]:
            """(tile, budget left for the network) under the memory budget."""
            left = budget - fixed
            tile = auto_tile(height, width, spec, left, element_size, overlap, streamed)
            if tile and on_host:
                left -= 2 * 4 * channels * (tile + overlap) * s * width * s
                tile = auto_tile(height, width, spec, left, element_size, overlap, streamed)
            return tile, left

        tile, left = fit(streamed)
        if tile and streamed and streamed_bytes(height, width, tile, spec, element_size) > left:
            log.warning("%d×%d: exact tiling needs %.0f MB (feature maps of the whole image and one tile), "
                        "beyond the memory budget; using blended tiles (approximate)", width, height,
                        streamed_bytes(height, width, tile, spec, element_size) / 2**20)
            streamed = False
            tile, _ = fit(False)
    if streamed and tile:
        plan = plan_streamed(height, width, tile, spec)
        if plan.n_tiles > 1:
            return plan
    return plan_tiles(height, width, tile, overlap, spec.align, wrap=wrap)


def halve(plan: TilePlan, spec: TilingSpec, overlap: int, streamable: bool = False) -> TilePlan | None:
    """``plan`` with cores half as large (after running out of memory; streamed where the network streams), or
    None when they would be smaller than 8 pixels or the alignment."""
    core = plan.core
    if core // 2 < max(8, plan.align):
        return None
    if plan.streamed or (plan.n_tiles == 1 and streamable):
        return plan_streamed(plan.height, plan.width, core // 2, spec)
    return plan_tiles(plan.height, plan.width, core // 2, overlap, plan.align, wrap=plan.wrap)


# ------------------------------------------------------------------------------------------------- weights


def _axis_weights(span: Span, length: int, blend: int, scale: int, out_lo: int, out_hi: int) -> torch.Tensor:
    """Weights of one tile for output pixels ``[out_lo, out_hi)`` along one axis (float32)."""
    # Output pixel X covers input position u = (X + 0.5) / s: the ramp is defined on the input grid, so ×2 and
    # ×4 outputs blend over the same image area.
    u = (torch.arange(out_lo, out_hi, dtype=torch.float64) + 0.5) / scale
    w = torch.ones_like(u)
    if blend > 0:
        if span.start > 0:  # ramp up across the border with the previous tile
            w = w * _smoothstep((u - (span.start - blend / 2)) / blend)
        if span.stop < length:  # ramp down across the border with the next tile
            w = w * (1.0 - _smoothstep((u - (span.stop - blend / 2)) / blend))
    else:
        w = ((u >= span.start) & (u < span.stop)).to(torch.float64)
    return w.float()


def _smoothstep(t: torch.Tensor) -> torch.Tensor:
    # Zero slope at both ends: the hand-over has no kink; s(t) + s(1 - t) = 1 keeps the partition of unity.
    t = t.clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _out_range(span: Span, length: int, blend: int, scale: int) -> tuple[int, int]:
    """Output pixels (image coordinates) where this tile's weight can be non-zero."""
    lo = span.start - blend / 2 if span.start > 0 else 0
    hi = span.stop + blend / 2 if span.stop < length else length
    return max(math.floor(lo * scale), 0), min(math.ceil(hi * scale), length * scale)


def _take(x: torch.Tensor, dim: int, span: Span, period: int) -> torch.Tensor:
    """The window of ``span`` along ``dim`` of ``x`` (whose length there is ``period``), wrapping around."""
    if 0 <= span.in_start and span.in_stop <= period:
        return x.narrow(dim, span.in_start, span.window)
    idx = torch.arange(span.in_start, span.in_stop, device=x.device) % period
    return x.index_select(dim, idx)


# ----------------------------------------------------------------------------------------------------- run

# A tile function gets a 1×C×h×w window and the seams (row, column index inside the window where it crosses
# the image border in wrap mode, else None) and returns 1×C'×s·h×s·w.
TileFn = Callable[[torch.Tensor, tuple[int | None, int | None]], torch.Tensor]
Sink = Callable[[int, torch.Tensor], None]


def run_tiled(fn: TileFn, x: torch.Tensor, scale: int, plan: TilePlan, sink: Sink | None = None,
              progress: Callable[[int], None] | None = None) -> torch.Tensor | None:
    """Run ``fn`` over ``x`` (``C×H×W``, on the device ``fn`` expects) tile by tile and blend the outputs.

    Finished output rows go to ``sink(row0, block)`` with ``block`` a CPU float32 ``C'×rows×s·W`` tensor, in
    order from top to bottom; without a sink the whole output is returned as a CPU float32 ``C'×sH×sW``
    tensor. ``progress(1)`` is called after each tile.
    """
    _c, height, width = x.shape
    if (height, width) != (plan.height, plan.width):
        raise ValueError(f"plan is for {plan.height}×{plan.width}, input is {height}×{width}")
    period_h, period_w = plan.periods
    if (period_h, period_w) != (height, width):
        # The same mirror padding the network applies to the whole image, so wrapped windows see what it sees.
        x = mirror_pad(x[None], period_h - height, period_w - width)[0]
    out_w = width * scale
    collected: list[torch.Tensor] = []
    if sink is None:
        def sink(_y0: int, block: torch.Tensor) -> None:
            collected.append(block.clone())  # a view would keep the whole strip (and its carry) alive

    col_ranges = [_out_range(c, width, plan.blend, scale) for c in plan.cols]
    col_weights = [_axis_weights(c, width, plan.blend, scale, *rng)
                   for c, rng in zip(plan.cols, col_ranges, strict=True)]
    strip: torch.Tensor | None = None
    for i, r in enumerate(plan.rows):
        lo, hi = _out_range(r, height, plan.blend, scale)
        row_w = _axis_weights(r, height, plan.blend, scale, lo, hi)
        x_rows = _take(x, 1, r, period_h)
        new = None
        for c, (clo, chi), cw in zip(plan.cols, col_ranges, col_weights, strict=True):
            y = fn(_take(x_rows, 2, c, period_w)[None], (r.seam(period_h), c.seam(period_w)))
            if y.shape[-2:] != (r.window * scale, c.window * scale):
                raise RuntimeError(f"model output {tuple(y.shape)} is not ×{scale} of the tile "
                                   f"{r.window}×{c.window}")
            y = y[0, :, lo - r.in_start * scale:hi - r.in_start * scale,
                  clo - c.in_start * scale:chi - c.in_start * scale].float().cpu()
            if new is None:
                new = torch.zeros(y.shape[0], hi - lo, out_w)
                if strip is not None:  # rows still open from the previous tile row (its lower blend band)
                    new[:, : strip.shape[1]] += strip
            if plan.n_tiles == 1:
                new += y
            else:
                new[:, :, clo:chi].addcmul_(y, row_w[None, :, None] * cw[None, None, :])
            if progress is not None:
                progress(1)
        assert new is not None
        # Rows above the next tile row's first weighted row are final.
        done = (_out_range(plan.rows[i + 1], height, plan.blend, scale)[0] if i + 1 < len(plan.rows) else hi) - lo
        sink(lo, new[:, :done])
        strip = new[:, done:]
        del new
    if collected:
        return torch.cat(collected, dim=1) if len(collected) > 1 else collected[0]
    return None
