"""ELAN and ELAN-light.

Zhang, Zeng, Guo, Zhang: *Efficient Long-Range Attention Network for Image Super-resolution*, ECCV 2022.

The paper's building block is the efficient long-range attention block (ELAB, Sec. 3.2, Fig. 2): a local
feature extraction module (LFE: two shift-convolutions with a ReLU between them) followed by a group-wise
multi-scale self-attention module (GMSA: channels split into three groups attended over 4×4, 8×8 and 16×16
windows). Its "accelerated self-attention" (ASA, Sec. 3.2) replaces LayerNorm by a BatchNorm that can be folded
into the 1×1 projection at inference, and shares the projection between query and key (q = k, no scaling).
Attention maps are computed once and reused by the next ``n_share`` ELABs (shared attention), and every other
group of ELABs attends over cyclically shifted windows.

This module is the *training form*: a readable rendering that the golden tests compare with the official
code's outputs. :meth:`ELAN.fuse` builds the inference form (:mod:`lightsr.models.elan.fused`), same outputs.

Data convention: lightsr networks take and return RGB in [0, 1]. The official code works on 0..255 with a
frozen 1×1 "MeanShift" convolution; here the same affine map is applied with constant buffers, so it is neither
trainable nor counted, exactly as the paper counts parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightsr.models._common import pad_to_multiple
from lightsr.models.base import SRNet
from lightsr.models.elan.constants import RGB_MEAN, RGB_RANGE, shift_kernel
from lightsr.models.elan.fused import FusedELAN


class ShiftConv2d(nn.Module):
    """Shift-convolution (Sec. 3.2): a fixed spatial shift of channel groups followed by a 1×1 convolution.

    It has the receptive field of a 3×3 convolution at the cost of a 1×1. ``weight``/``bias`` are the 1×1
    convolution's; the shift kernel is a constant (not a parameter, not saved).
    """

    seam_reach = 1  # a one-pixel shift with zero fill: tiling's seams treat it as a 'same' 3×3 convolution

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels))
        # Same initialisation as nn.Conv2d(in, out, 1).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(in_channels)
        nn.init.uniform_(self.bias, -bound, bound)
        self.register_buffer("shift", shift_kernel(in_channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.shift, padding=1, groups=x.shape[1])
        return F.conv2d(x, self.weight, self.bias)


class LFE(nn.Module):
    """Local feature extraction (Sec. 3.2): shift-conv → ReLU → shift-conv, with channel expansion."""

    def __init__(self, channels: int, exp_ratio: int = 2) -> None:
        super().__init__()
        self.conv0 = ShiftConv2d(channels, channels * exp_ratio)
        self.act = nn.ReLU(inplace=True)
        self.conv1 = ShiftConv2d(channels * exp_ratio, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.act(self.conv0(x)))


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B·nH·nW, ws·ws, C)``: one row of tokens per non-overlapping window."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // ws, ws, w // ws, ws)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, ws * ws, c)


def window_reverse(y: torch.Tensor, ws: int, b: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    c = y.shape[-1]
    y = y.view(b, h // ws, w // ws, ws, ws, c)
    return y.permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


class GMSA(nn.Module):
    """Group-wise multi-scale self-attention with accelerated self-attention (Sec. 3.2, Fig. 2c–d).

    The 1×1 projection (+ BatchNorm) yields, per window-size group, a shared query/key ``q`` and a value ``v``;
    attention is ``softmax(q qᵀ) v`` inside each window, without a temperature. A GMSA that reuses the previous
    one's attention maps (``calc_attn=False``) only projects values. ``shift`` rolls the feature map by half a
    window first (and back after) so neighbouring blocks see different window borders.
    """

    def __init__(self, channels: int, window_sizes: Sequence[int] = (4, 8, 16), shift: bool = False,
                 calc_attn: bool = True) -> None:
        super().__init__()
        if channels % len(window_sizes):
            raise ValueError(f"channels ({channels}) must split evenly into {len(window_sizes)} window groups")
        self.window_sizes = tuple(window_sizes)
        self.shift = shift
        self.calc_attn = calc_attn
        mult = 2 if calc_attn else 1
        group = channels // len(window_sizes)
        self.split_chns = [group * mult] * len(window_sizes)
        self.project_inp = nn.Sequential(
            nn.Conv2d(channels, channels * mult, kernel_size=1), nn.BatchNorm2d(channels * mult)
        )
        self.project_out = nn.Conv2d(channels, channels, kernel_size=1)

    # The projection's parts by name (one Sequential, as the official keys ``project_inp.0/1`` have them).
    @property
    def projection(self) -> nn.Conv2d:
        return self.project_inp[0]

    @property
    def norm(self) -> nn.BatchNorm2d:
        return self.project_inp[1]

    def forward(
        self, x: torch.Tensor, prev_atns: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, _, h, w = x.shape
        xs = torch.split(self.project_inp(x), self.split_chns, dim=1)
        ys, atns = [], []
        for idx, (x_, ws) in enumerate(zip(xs, self.window_sizes, strict=True)):
            if self.shift:
                x_ = torch.roll(x_, shifts=(-(ws // 2), -(ws // 2)), dims=(2, 3))
            tokens = window_partition(x_, ws)
            if self.calc_attn:
                q, v = tokens.chunk(2, dim=-1)
                atn = (q @ q.transpose(-2, -1)).softmax(dim=-1)
            else:
                v, atn = tokens, prev_atns[idx]
            y_ = window_reverse(atn @ v, ws, b, h, w)
            if self.shift:
                y_ = torch.roll(y_, shifts=(ws // 2, ws // 2), dims=(2, 3))
            ys.append(y_)
            atns.append(atn)
        return self.project_out(torch.cat(ys, dim=1)), atns


class ELAB(nn.Module):
    """Efficient long-range attention block (Sec. 3.2, Fig. 2b): ``x + LFE(x)``, then ``x + GMSA(x)``."""

    def __init__(self, channels: int, exp_ratio: int, window_sizes: Sequence[int], shift: bool,
                 calc_attn: bool) -> None:
        super().__init__()
        self.lfe = LFE(channels, exp_ratio)
        self.gmsa = GMSA(channels, window_sizes, shift=shift, calc_attn=calc_attn)

    def forward(
        self, x: torch.Tensor, prev_atns: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.lfe(x) + x
        y, atns = self.gmsa(x, prev_atns)
        return y + x, atns


class ELAN(SRNet):
    """ELAN (Sec. 3.1, Fig. 2a): 3×3 head conv, a chain of ELABs with a long skip, 3×3 conv + PixelShuffle.

    ``num_blocks`` ELABs; ELAB ``j`` computes attention when ``j % (n_share + 1) == 0`` and reuses it
    otherwise; groups of ``n_share + 1`` ELABs alternate between plain and shifted windows. ELAN-light:
    24 blocks, 60 channels, ``n_share=1``; ELAN: 36 blocks, 180 channels, ``n_share=0``.

    Inputs of any size are mirror-padded to a multiple of the largest window (as the official code does, but
    also for images smaller than one window) and the output is cropped back.
    """

    arch = "elan"
    rgb_range = RGB_RANGE

    def __init__(self, scale: int = 4, num_blocks: int = 24, channels: int = 60, n_share: int = 1,
                 exp_ratio: int = 2, window_sizes: Sequence[int] = (4, 8, 16), in_channels: int = 3) -> None:
        super().__init__()
        if in_channels != 3:
            raise ValueError("ELAN's mean shift is defined for RGB input (in_channels=3)")
        self._remember(scale=scale, num_blocks=num_blocks, channels=channels, n_share=n_share,
                       exp_ratio=exp_ratio, window_sizes=list(window_sizes), in_channels=in_channels)
        self.window_sizes = tuple(window_sizes)
        self.pad_multiple = math.lcm(*self.window_sizes)
        self.n_share = n_share
        self.register_buffer("rgb_mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.body = nn.ModuleList(
            ELAB(channels, exp_ratio, window_sizes,
                 shift=(j // (n_share + 1)) % 2 == 1, calc_attn=j % (n_share + 1) == 0)
            for j in range(num_blocks)
        )
        self.tail = nn.Sequential(nn.Conv2d(channels, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.pad_multiple)
        x = (x - self.rgb_mean) * RGB_RANGE
        feat = self.head(x)
        res, atns = feat, None
        for block in self.body:
            res, atns = block(res, atns if not block.gmsa.calc_attn else None)
        out = self.tail(res + feat) / RGB_RANGE + self.rgb_mean
        s = self.scale
        return out[..., : h * s, : w * s]

    @property
    def tail_conv(self) -> nn.Conv2d:
        """The reconstruction conv before the pixel shuffle."""
        return self.tail[0]

    def fuse(self) -> FusedELAN:
        return FusedELAN(self.eval()).ready(self)
