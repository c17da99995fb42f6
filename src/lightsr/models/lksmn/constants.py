"""Defaults shared by the network and its checkpoint layout (which fills in the dilations from them)."""

from __future__ import annotations

# (depthwise kernel, dilated depthwise kernel, dilation) per scale of the multi-scale large-kernel attention:
# MAN's choice (see the network's docstring, point 4).
DEFAULT_KERNELS: tuple[tuple[int, int, int], ...] = ((3, 5, 2), (5, 7, 3), (7, 9, 4))
