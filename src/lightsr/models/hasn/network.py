"""HASN: Hybrid Attention Separable Network.

Cao, et al.: *Hybrid Attention Separable Network for Efficient Image Super-resolution*, The Visual Computer 2024.

The network (Sec. 3, Fig. 2) is a 3×3 shallow conv, six hybrid attention separable blocks (HASB) and a
3×3 conv with a global skip, then a 3×3 conv + PixelShuffle upsampler. A HASB (Sec. 3.2, Fig. 3) is built
from depthwise-separable pieces: a 7×7 depthwise conv and LayerNorm, three sibling 1×1 expansions — two of
them gated (``ReLU6(f1) · f2``, the star operation of StarNet), the third refined by enhanced spatial attention
(ESA, from RFANet/RLFN) — a 1×1 reduction and a second 7×7 depthwise conv with a residual, and finally a
channel attention block (CAB: two 3×3 convs and RCAN-style squeeze-excitation).

This is the *training form*, matching the official BasicSR implementation key for key (up to the renames of
:mod:`lightsr.models.hasn.layouts`); golden tests compare it with the official outputs. :meth:`HASN.fuse`
returns the inference form (:mod:`lightsr.models.hasn.fused`).

ESA downsamples with a stride-2 3×3 conv and a 7×7/3 max-pool, so the official network fails on inputs
smaller than 15×15; here such inputs are mirror-padded to 15×15 and the output cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightsr.models._common import pad_to_multiple
from lightsr.models.base import SRNet
from lightsr.models.hasn.fused import FusedHASN

# Smallest input for which ESA's stride-2 conv followed by its 7×7 stride-3 max-pool is defined.
MIN_INPUT = 15


class ChannelAttention(nn.Module):
    """RCAN's squeeze-and-excitation channel attention."""

    def __init__(self, channels: int, squeeze_factor: int) -> None:
        super().__init__()
        hidden = max(channels // squeeze_factor, 1)
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    @property
    def down(self) -> nn.Conv2d:
        return self.attention[1]

    @property
    def up(self) -> nn.Conv2d:
        return self.attention[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel attention block: 3×3 conv (÷compress) → GELU → 3×3 conv → channel attention."""

    def __init__(self, channels: int, compress_ratio: int = 3, squeeze_factor: int = 30) -> None:
        super().__init__()
        mid = channels // compress_ratio
        self.body = nn.Sequential(
            nn.Conv2d(channels, mid, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(mid, channels, 3, padding=1),
            ChannelAttention(channels, squeeze_factor),
        )

    # The parts by name (the official layout keeps them in one Sequential, so the keys stay indices).
    @property
    def conv1(self) -> nn.Conv2d:
        return self.body[0]

    @property
    def conv2(self) -> nn.Conv2d:
        return self.body[2]

    @property
    def ca(self) -> ChannelAttention:
        return self.body[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ESA(nn.Module):
    """Enhanced spatial attention (RFANet), in RLFN's simplified form: a spatial gate from a coarse view."""

    def __init__(self, esa_channels: int, channels: int) -> None:
        super().__init__()
        f = esa_channels
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)
        c3 = self.conv3(F.max_pool2d(c1, kernel_size=7, stride=3))
        c3 = F.interpolate(c3, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class HASB(nn.Module):
    """Hybrid attention separable block (Sec. 3.2)."""

    def __init__(self, channels: int, mlp_ratio: int = 3, esa_channels: int = 16) -> None:
        super().__init__()
        hidden = mlp_ratio * channels
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.ln = nn.LayerNorm(channels)
        self.f1 = nn.Conv2d(channels, hidden, 1)
        self.f2 = nn.Conv2d(channels, hidden, 1)
        self.f3 = nn.Conv2d(channels, hidden, 1)
        self.g = nn.Conv2d(hidden, channels, 1)
        self.dwconv2 = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.act = nn.ReLU6()
        self.esa = ESA(esa_channels, hidden)
        self.cab = CAB(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        x = self.dwconv(x)
        x = self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        gated = self.act(self.f1(x)) * self.f2(x)
        x = self.dwconv2(self.g(gated + self.esa(self.f3(x))))
        return self.cab(identity + x)


class HASN(SRNet):
    """HASN (Sec. 3.1, Fig. 2): shallow conv, ``num_blocks`` HASBs, conv + global skip, PixelShuffle."""

    arch = "hasn"
    min_input = MIN_INPUT

    def __init__(self, scale: int = 4, channels: int = 52, num_blocks: int = 6, mlp_ratio: int = 3,
                 in_channels: int = 3) -> None:
        super().__init__()
        self._remember(scale=scale, channels=channels, num_blocks=num_blocks, mlp_ratio=mlp_ratio,
                       in_channels=in_channels)
        self.head = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(HASB(channels, mlp_ratio) for _ in range(num_blocks)))
        self.body_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.upsampler = nn.Sequential(
            nn.Conv2d(channels, in_channels * scale * scale, 3, padding=1), nn.PixelShuffle(scale)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h < MIN_INPUT or w < MIN_INPUT:
            x = pad_to_multiple(x, 1, min_size=MIN_INPUT)
        feat = self.head(x)
        out = self.upsampler(self.body_conv(self.blocks(feat)) + feat)
        s = self.scale
        return out[..., : h * s, : w * s]

    def fuse(self) -> FusedHASN:
        return FusedHASN(self.eval()).ready(self)
