"""What every runtime builds: :class:`Runtime`, a network ready to run, with what tiling needs to know."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class OnnxFile:
    """An exported ``.onnx`` file a user named (:func:`lightsr.sources.resolve`): a runtime that runs such files
    opens it (:func:`lightsr.runtimes.build`)."""

    path: Path


# seamed(x, (row, column)): a wrap-mode tile with its seams, None where there is none on that axis.
Seamed = Callable[[torch.Tensor, tuple[int | None, int | None]], torch.Tensor]


@dataclass
class Runtime:
    """A network (or an exported graph) on one runtime, in one precision, on one device.

    ``forward(x)``: float ``N×3×H×W`` in [0, 1] (any device: the runtime moves it) → ``N×3×sH×sW`` as the runtime
    computes it: in :attr:`dtype` on :attr:`device` (torch), float32 on the CPU (the graph runtimes). Calling the
    runtime gives the same as float32. ``forward_tiled(x, tile, sink, progress=None)``: the layer-streamed
    execution of networks with global operators (exact tiles; :mod:`lightsr.models._stream`), where the
    runtime has it. ``seamed(x, seams)``: a wrap-mode tile with the seams placed inside the network
    (:class:`~lightsr.seams.SeamHooks`), where the runtime can place them. ``blended_tiles``: why this runtime
    blends its tiles where the network tiles exactly elsewhere (tiled runs warn with it); None: no such loss.
    """

    forward: Callable[[torch.Tensor], torch.Tensor]
    scale: int
    arch: str | None
    precision: str
    device: torch.device
    dtype: torch.dtype = torch.float32  # what forward returns, and what the tiles' memory is counted in
    runtime: str = ""  # its name in the registry (set by the factory)
    module: torch.nn.Module | None = None  # the PyTorch network it runs, if it runs one
    path: Path | None = None  # the graph file it runs, if it runs one
    forward_tiled: Callable[..., None] | None = None
    seamed: Seamed | None = None
    blended_tiles: str | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).float()
