"""Small pieces shared by the networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mirror_pad(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Pad the bottom/right of ``x`` by mirroring, for any pad size.

    For ``pad < size`` this is exactly ``F.pad(..., mode='reflect')`` (what the official ELAN code does, so
    golden outputs are reproduced). ``reflect`` refuses a pad as large as the image (a 7×5 input padded to
    16×16); we then keep reflecting the already padded tensor, which is the natural periodic extension of the
    same rule. A 1-pixel dimension has nothing to reflect and is replicated.
    """
    while pad_h > 0 or pad_w > 0:
        h, w = x.shape[-2:]
        step_h = min(pad_h, h - 1) if h > 1 else 0
        step_w = min(pad_w, w - 1) if w > 1 else 0
        if step_h or step_w:
            x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        rep_h = pad_h if h == 1 else 0
        rep_w = pad_w if w == 1 else 0
        if rep_h or rep_w:
            x = F.pad(x, (0, rep_w, 0, rep_h), mode="replicate")
        pad_h -= step_h + rep_h
        pad_w -= step_w + rep_w
    return x


def pad_to_multiple(x: torch.Tensor, multiple: int, min_size: int = 1) -> torch.Tensor:
    """Mirror-pad H and W up to a multiple of ``multiple`` and at least ``min_size``."""
    h, w = x.shape[-2:]
    th = max(-(-h // multiple) * multiple, -(-min_size // multiple) * multiple)
    tw = max(-(-w // multiple) * multiple, -(-min_size // multiple) * multiple)
    return mirror_pad(x, th - h, tw - w)
