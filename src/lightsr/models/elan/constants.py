"""The official code's fixed constants, shared by the network and its checkpoint layouts (which check them)."""

from __future__ import annotations

import torch

# DIV2K RGB mean used by the official code (EDSR convention), in [0, 1]; the network runs on 0..255 inside.
RGB_MEAN = (0.4488, 0.4371, 0.4040)
RGB_RANGE = 255.0


def shift_kernel(channels: int, n_div: int = 5) -> torch.Tensor:
    """The fixed depthwise 3×3 kernel of a shift-convolution, shape ``(channels, 1, 3, 3)``.

    Channels are cut into ``n_div`` groups: four groups move one pixel (taking the neighbour to the right,
    left, below, above) and the rest stay in place — the pattern of the official code, which pretrained
    weights depend on.
    """
    g = channels // n_div
    k = torch.zeros(channels, 1, 3, 3)
    k[0 * g : 1 * g, 0, 1, 2] = 1.0
    k[1 * g : 2 * g, 0, 1, 0] = 1.0
    k[2 * g : 3 * g, 0, 2, 1] = 1.0
    k[3 * g : 4 * g, 0, 0, 1] = 1.0
    k[4 * g :, 0, 1, 1] = 1.0
    return k
