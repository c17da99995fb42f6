"""The planes around the network's colour: alpha, and gray images that run through it as RGB.

Transparent pixels get their colour from their visible neighbours before the network sees them
(:func:`fill_transparent`), so it never sees (and bleeds) the arbitrary colour stored under alpha = 0; the upscaled
alpha is exactly 0 or 1 where the input's is all around (:func:`exact_alpha`); gray images come back as luma
(:func:`to_luma`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# ITU-R BT.601 luma, as Pillow converts RGB to L: grayscale inputs come back through the same formula.
LUMA = (0.299, 0.587, 0.114)


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


def to_luma(block: torch.Tensor) -> torch.Tensor:
    """``3×H×W`` RGB → ``1×H×W`` luma (:data:`LUMA`)."""
    # Clamped first: the result equals converting the (valid) RGB output image to L.
    r, g, b = block.clamp(0, 1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b)[None]


def exact_alpha(alpha: torch.Tensor, scale: int) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """``fix(row0, block)``: a block of the ×``scale`` upscaled ``alpha`` (``1×rows×W``, starting at output row
    ``row0``) clamped to [0, 1], and exactly 0 (1) where the input is fully transparent (opaque) within 2 pixels:
    no faint halo from filter ringing or from the network's response to a flat plane."""
    a = alpha[None, None]
    hi_a = F.max_pool2d(a, 5, 1, 2)[0, 0]
    lo_a = -F.max_pool2d(-a, 5, 1, 2)[0, 0]

    def fix(y0: int, block: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(y0, y0 + block.shape[1]) // scale
        cols = torch.arange(block.shape[2]) // scale
        hi_b = hi_a[rows][:, cols]
        lo_b = lo_a[rows][:, cols]
        b = block[0].clamp(0, 1)
        return torch.where(hi_b <= 0, 0.0, torch.where(lo_b >= 1, 1.0, b))[None]

    return fix
