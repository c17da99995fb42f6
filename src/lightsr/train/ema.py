"""Exponential moving average of a network's parameters *and* buffers.

A small class rather than ``torch.optim.swa_utils.AveragedModel``: its state must round-trip bit-exactly
through a safetensors file (weights) plus two numbers (decay, update count) for exact resume, and the
averaged copy must stay a plain :class:`~lightsr.models.base.SRNet` so that ``save_model`` writes a file
``lightsr eval --weights`` reads. Unlike BasicSR's ``model_ema`` (parameters only), floating-point buffers
are averaged too — BatchNorm running statistics — and integer buffers (``num_batches_tracked``) copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """``ema = decay·ema + (1 − decay)·current`` after every optimizer step.

    With ``warmup`` the decay is ``min(decay, (1 + n) / (10 + n))`` at update ``n`` (TensorFlow's
    ``num_updates`` rule), which keeps short runs from averaging in their random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup, self.num_updates = decay, warmup, 0

    def current_decay(self) -> float:
        """The decay of the next update (``min(decay, (1+n)/(10+n))`` with warm-up)."""
        if self.warmup:
            return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the averaged weights and buffers towards ``model``'s by one step."""
        weight = 1.0 - self.current_decay()
        ema_f, cur_f = [], []
        for (name, e), c in zip(self._tensors(self.module), self._tensors(model), strict=True):
            if e.shape != c[1].shape or name != c[0]:
                raise RuntimeError(f"EMA copy and model differ at {name}")
            if e.is_floating_point():
                ema_f.append(e)
                cur_f.append(c[1].detach())
            else:
                e.copy_(c[1])
        if ema_f:
            torch._foreach_lerp_(ema_f, cur_f, weight)
        self.num_updates += 1

    @staticmethod
    def _tensors(m: nn.Module) -> list[tuple[str, torch.Tensor]]:
        return list(m.named_parameters()) + list(m.named_buffers())

    def state_dict(self) -> dict[str, float | int | bool]:
        """The non-tensor state; the averaged weights are saved separately (``ema.safetensors``)."""
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore the update count from :meth:`state_dict` (the weights are loaded separately)."""
        self.num_updates = int(state["num_updates"])
