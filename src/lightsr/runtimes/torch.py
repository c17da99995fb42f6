"""The PyTorch runtime: the network's inference form (:meth:`SRNet.fuse`; or its training form) in the chosen dtype,
on any device PyTorch offers."""

from __future__ import annotations

import copy

import torch

from lightsr.device import precision_dtype
from lightsr.models.base import SRNet
from lightsr.runtimes.base import Runtime
from lightsr.seams import SeamHooks


def build(model: SRNet, precision: str, device: torch.device, threads: int | None, fuse: bool) -> Runtime:
    """``model`` on ``device`` in ``precision``: its inference form unless ``fuse`` is False. The caller's network
    is copied before anything about it would change (device, dtype, eval mode)."""
    dtype = precision_dtype(precision)
    p = next(model.parameters(), None)
    if p is not None and (p.device != device or p.dtype != dtype or model.training):
        model = copy.deepcopy(model)
    module = model.to(device).eval()
    if fuse:
        # The inference form: the same function (≤ 1e-4), faster; folded in float32, then cast.
        module = module.fuse()
    module = module.to(dtype)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x.to(device, dtype))

    hooks: SeamHooks | None = None

    def seamed(x: torch.Tensor, seams: tuple[int | None, int | None]) -> torch.Tensor:
        nonlocal hooks
        if hooks is None:  # made on first use: only networks whose tiles wrap need them
            hooks = SeamHooks(module)
        hooks.seams = seams
        with hooks:
            return forward(x)

    def forward_tiled(x: torch.Tensor, tile: int, sink: object, progress: object = None) -> None:
        with torch.inference_mode():
            module.forward_tiled(x.to(device, dtype), tile, sink, progress)

    streams = getattr(module, "forward_tiled", None) is not None  # inference forms of networks that stream
    return Runtime(forward, module.scale, module.arch, precision, device, dtype, module=module,
                   forward_tiled=forward_tiled if streams else None, seamed=seamed)
