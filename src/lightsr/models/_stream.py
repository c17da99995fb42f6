"""Layer-streamed execution: exact tiling for inference forms whose networks pool or attend over the whole image.

Blended tiles (:mod:`lightsr.tiling`) are exact only for networks whose every operator is local: a tile of a
network with a global statistic (a Gram matrix or an average over all pixels) computes that statistic over the
tile alone. The statistics are sums over pixels, so an inference form can instead run *layer by layer*: it keeps
its LR-resolution feature maps for the whole image (``C×H×W``, small next to the ×s² output) and runs each block's
local stages tile by tile — each tile reads its core plus a halo of at least the stage's receptive-field radius
from the full map, clipped at the image border, where every convolution zero-pads exactly as on the whole image
— writing the core into a full-size map and adding the tile's share to the global sums. A second tile pass then
applies the now complete global result. The output stage runs tile-wise from the full maps and streams rows of
the high-resolution image to a sink, top to bottom. Only one tile's activations exist at a time.

The inference forms build their ``forward_tiled`` from these pieces; see
:attr:`lightsr.models.base.InferenceForm.forward_tiled` for the contract. Each per-tile computation goes
through a :data:`StageRunner` as ``run(owner, method, *tensors)``: a method of one of the form's submodules that
maps tensors to tensors and knows nothing of the tile's place in the image (crops, sums and the global results
stay in ``forward_tiled``). :func:`eager` calls it; the graph runtimes (:mod:`lightsr.runtimes.graphs`) run each
such stage as its own exported graph, so their tiled output is as exact as PyTorch's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

CL = torch.channels_last

# sink(row0, block): block is a CPU float32 C×rows×W' tensor of output rows starting at row0, top to bottom
Sink = Callable[[int, Tensor], None]
# progress(done, total) in steps (one tile of one pass)
Progress = Callable[[int, int], None]
# run(owner, method, *tensors) -> a tensor or a tuple of tensors: one per-tile stage (see the module docstring)
StageRunner = Callable[..., Any]


def eager(owner: nn.Module, method: str, *args: Tensor) -> Any:
    """The :data:`StageRunner` that calls the stage in PyTorch."""
    return getattr(owner, method)(*args)


def split(length: int, tile: int, unit: int = 1) -> list[tuple[int, int]]:
    """``[0, length)`` in the fewest even pieces of at most ``tile`` (at least one ``unit``), borders on
    multiples of ``unit`` (the last piece may end on a partial unit)."""
    units = -(-length // unit)
    per = max(1, tile // unit)
    n = -(-units // per)
    bounds = [0] + [round(k * units / n) * unit for k in range(1, n)] + [length]
    return list(itertools.pairwise(bounds))


def conv_reach(m: nn.Module) -> int:
    """How far a 'same' convolution reads beyond the output pixel (``dilation·(k - 1)/2``); modules that are
    not ``nn.Conv2d`` declare it in a ``reach`` attribute."""
    if isinstance(m, nn.Conv2d):
        return max(d * (k - 1) // 2 for d, k in zip(m.dilation, m.kernel_size, strict=True))
    return int(m.reach)


@dataclass(frozen=True)
class Tile:
    """A core ``[r0, r1) × [c0, c1)`` of an ``height × width`` map; windows add a halo, clipped at the image."""

    r0: int
    r1: int
    c0: int
    c1: int
    height: int
    width: int

    def window(self, halo: int) -> tuple[int, int, int, int]:
        """The core plus ``halo`` pixels on each side, clipped to the image: ``(row0, row1, col0, col1)``."""
        return (max(0, self.r0 - halo), min(self.height, self.r1 + halo),
                max(0, self.c0 - halo), min(self.width, self.c1 + halo))

    def read(self, x: Tensor, halo: int) -> Tensor:
        """The window of a full-size map (a channels-last copy: the stages run on dense tensors)."""
        a, b, c, d = self.window(halo)
        return x[..., a:b, c:d].contiguous(memory_format=CL)

    def shrink(self, y: Tensor, halo: int, inner: int, scale: int = 1) -> Tensor:
        """The part of ``y`` (computed on ``window(halo)``, ``scale`` × its size) that is ``window(inner)``."""
        a, _, c, _ = self.window(halo)
        e, f, g, h = self.window(inner)
        return y[..., (e - a) * scale:(f - a) * scale, (g - c) * scale:(h - c) * scale]

    def core(self, y: Tensor, halo: int, scale: int = 1) -> Tensor:
        """The core of ``y`` computed on ``window(halo)``."""
        return self.shrink(y, halo, 0, scale)

    def of(self, x: Tensor) -> Tensor:
        """The core of a full-size map (a view, for writing)."""
        return x[..., self.r0:self.r1, self.c0:self.c1]


class Grid:
    """The tiles of an ``height × width`` map: cores of at most ``tile`` pixels (multiples of ``unit``)."""

    def __init__(self, height: int, width: int, tile: int, unit: int = 1) -> None:
        if tile < 1:
            raise ValueError(f"tile must be positive, got {tile}")
        self.height, self.width = height, width
        self.rows = split(height, tile, unit)
        self.cols = split(width, tile, unit)

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def row(self, i: int) -> list[Tile]:
        r0, r1 = self.rows[i]
        return [Tile(r0, r1, c0, c1, self.height, self.width) for c0, c1 in self.cols]

    def __iter__(self) -> Iterator[Tile]:
        for i in range(len(self.rows)):
            yield from self.row(i)


class Steps:
    """Counts finished steps (tiles of passes) towards a known total for a ``progress(done, total)`` callback."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def feature_map(like: Tensor, channels: int, height: int, width: int) -> Tensor:
    """An uninitialised full-size channels-last map in ``like``'s dtype and device."""
    return torch.empty(like.shape[0], channels, height, width, dtype=like.dtype, device=like.device,
                       memory_format=CL)


def stream_rows(grid: Grid, halo: int, fn: Callable[[Tile], Tensor], scale: int, sink: Sink, steps: Steps,
                out_size: tuple[int, int] | None = None) -> None:
    """The output stage: ``fn(tile)`` gives the ×``scale`` output of ``tile.window(halo)``; the cores of each
    row of tiles are assembled into one CPU float32 strip and handed to ``sink`` in order, cropped to
    ``out_size`` (rows, columns) when given (networks that pad small inputs)."""
    out_h, out_w = out_size if out_size is not None else (grid.height * scale, grid.width * scale)
    for i in range(len(grid.rows)):
        r0, r1 = grid.rows[i]
        if r0 * scale >= out_h:  # only padding below
            for _ in grid.cols:
                steps()
            continue
        strip: Tensor | None = None
        for t in grid.row(i):
            y = t.core(fn(t), halo, scale)
            if strip is None:
                strip = torch.empty(y.shape[1], (r1 - r0) * scale, grid.width * scale)
            strip[:, :, t.c0 * scale:t.c1 * scale] = y[0].float()
            steps()
        assert strip is not None
        sink(r0 * scale, strip[:, : out_h - r0 * scale, :out_w])


def check_batch(x: Tensor) -> None:
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"forward_tiled takes one image (1×C×H×W), got shape {tuple(x.shape)}")
