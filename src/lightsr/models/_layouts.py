"""Pieces shared by the checkpoint layouts (``<arch>/layouts.py``): reading sizes from a state dict."""

from __future__ import annotations

import math
import re

import torch

from lightsr.errors import CheckpointError

StateDict = dict[str, torch.Tensor]


def scale_from_out_channels(n_out: int, source: str) -> int:
    """The scale of a pixel-shuffle upsampler with ``n_out`` = 3·scale² output channels."""
    s = math.isqrt(n_out // 3)
    if s * s * 3 != n_out:
        raise CheckpointError(f"{source}: upsampler has {n_out} output channels, not 3·scale²")
    return s


def block_indices(sd: StateDict, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern``'s first group over the keys."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})

