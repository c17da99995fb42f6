"""LKSMN: Large Kernel Spatial Modulation Network, reconstructed from the paper's text.

Paper: "Large Kernel Spatial Modulation Network for Efficient Image Super-resolution", The Visual Computer
2024. No official code is public, so this module follows the description of the method section and its
overview figure, component by component: shallow feature extraction (a 3×3 conv), deep feature extraction by
a stack of Large Kernel Spatial Modulation Blocks (``LKSMB``), each made of multi-scale spatial modulation
attention (``MSMA``), multi-Dconv head transposed attention (``MDTA``) and a convolutional feed-forward
network (``MLP``); multi-level feature aggregation over every block's output (``MLFA``) with a global skip;
and pixel-shuffle reconstruction (``Upsampler``). Section numbers are not quoted because the full text was
not at hand when this was written; the classes carry the paper's component names instead. The components
borrow from

* Conv2Former — Hou et al., "Conv2Former: A Simple Transformer-Style ConvNet for Visual Recognition"
  (convolutional modulation ``Proj(A(x) * V(x))`` and the conv MLP);
* VAN — Guo et al., "Visual Attention Network" (large kernel attention decomposed into a depthwise conv, a
  depthwise dilated conv and a 1×1 conv), and MAN — Wang et al., "Multi-scale Attention Network for Single
  Image Super-Resolution" (the multi-scale, channel-grouped variant of it);
* Restormer — Zamir et al., "Restormer: Efficient Transformer for High-Resolution Image Restoration" (MDTA).

Design points the paper's text does not fix, with the choice made here (revisit with the full text):

1. Norm: a LayerNorm over channels at every pixel (``LayerNorm2d``, affine, eps 1e-6), pre-norm before each
   of the three sub-layers, as in Conv2Former and Restormer. eps 1e-6 is Conv2Former's/ConvNeXt's (Restormer
   uses 1e-5); no norm after the block stack.
2. Block residuals: plain ``x + f(norm(x))`` for all three sub-layers; no layer scale (Conv2Former has one;
   here it would add 3·C = 144 parameters per block, 864 in all, which the rounded 253K cannot rule in or
   out), no drop path.
3. MSMA: ``A = 1×1 conv → GELU → MultiScaleLKA``, ``V = 1×1 conv``, output ``Proj(A(x) * V(x))``, i.e.
   Conv2Former's modulation with its 11×11 depthwise conv replaced by the multi-scale decomposition. The GELU
   is Conv2Former's activation; no extra gate (MAN's MLKA has a second depthwise-conv gate, not used here).
4. MultiScaleLKA: channels split into as many equal groups as scales (48 → 16/16/16); when C is not
   divisible the last group takes the remainder. Scales (depthwise k×k, depthwise d×d dilation r) are
   (3, 5/2), (5, 7/3), (7, 9/4), MAN's choice, with 'same' zero padding. Order depthwise → dilated depthwise
   → 1×1 within the group, as VAN's LKA; the 1×1 mixes only the group's channels (mixing across groups is
   left to ``Proj``). All these convs carry a bias.
5. MDTA: Restormer's layer as published: bias-free 1×1 qkv conv and 3×3 depthwise conv, q and k
   L2-normalised over pixels, softmax over channels, bias-free 1×1 output projection; 4 heads; the learnable
   per-head ``temperature`` starts at 1 (Restormer's init).
6. MLP: ratio 2, ``1×1 conv → 3×3 depthwise conv → GELU → 1×1 conv``, all with bias. Conv2Former's own MLP
   puts a GELU after the first 1×1 conv and a residual around the depthwise conv; the parameter count is the
   same either way, so the count cannot tell them apart.
7. MLFA: the outputs of all blocks are concatenated (N·C channels), fused by a 1×1 conv then refined by a
   3×3 conv (in that order: reduce first, then spatial mixing at C channels), and the shallow feature is
   added afterwards (global skip around the whole deep part).
8. Reconstruction: one 3×3 conv C → 3·s² followed by PixelShuffle(s), the usual lightweight upsampler; the
   output has as many channels as the input.
9. No input mean shift, no bicubic/nearest skip of the input image and no clamp of the output: none is
   described (none has parameters, so the reported count cannot decide).
10. Initialisation: PyTorch defaults; the text gives no init scheme.

Trainable parameters with C=48 and 6 blocks: 238,596 (×2), 245,091 (×3), 254,184 (×4); the paper reports
253K at ×4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightsr.models.base import SRNet
from lightsr.models.lksmn.constants import DEFAULT_KERNELS
from lightsr.models.lksmn.fused import FusedLKSMN

__all__ = ["DEFAULT_KERNELS", "LKSMB", "LKSMN", "MDTA", "MLFA", "MLP", "MSMA", "DecomposedLKA", "LayerNorm2d",
           "MultiScaleLKA"]



class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an ``(N, C, H, W)`` tensor, independently at every pixel."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        # The fused kernel on a channels-last view is faster on CPU than mean/var over dim 1 or than copying the
        # result back to NCHW (benchmarks/README.md), and it accumulates fp16/bf16 in fp32, where a hand-written
        # variance could overflow.
        x = F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class DecomposedLKA(nn.Sequential):
    """One scale of the large-kernel decomposition (VAN's LKA): depthwise k×k → depthwise dilated d×d → 1×1.

    Receptive field radius ``(k - 1) / 2 + r·(d - 1) / 2``, e.g. 19 for (7, 9, dilation 4).
    """

    def __init__(self, channels: int, kernel: int, dilated_kernel: int, dilation: int) -> None:
        if kernel % 2 == 0 or dilated_kernel % 2 == 0:
            raise ValueError(f"kernel sizes must be odd for 'same' padding, got {kernel}, {dilated_kernel}")
        super().__init__(
            nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels),
            nn.Conv2d(channels, channels, dilated_kernel, padding=dilation * (dilated_kernel // 2),
                      dilation=dilation, groups=channels),
            nn.Conv2d(channels, channels, 1),
        )

    # The three convs by name (a Sequential keeps the state-dict keys of the bundled files: ``…branches.i.0``).
    @property
    def depthwise(self) -> nn.Conv2d:
        return self[0]

    @property
    def dilated(self) -> nn.Conv2d:
        return self[1]

    @property
    def pointwise(self) -> nn.Conv2d:
        return self[2]


class MultiScaleLKA(nn.Module):
    """Multi-scale large kernel attention map of MSMA (after MAN): one ``DecomposedLKA`` per channel group."""

    def __init__(self, channels: int, kernels: Sequence[Sequence[int]] = DEFAULT_KERNELS) -> None:
        super().__init__()
        n = len(kernels)
        if not 1 <= n <= channels:
            raise ValueError(f"need between 1 and {channels} scales, got {n}")
        self.splits = [channels // n] * (n - 1) + [channels - (channels // n) * (n - 1)]
        self.branches = nn.ModuleList(
            DecomposedLKA(c, k, d, r) for c, (k, d, r) in zip(self.splits, kernels, strict=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        parts = torch.split(x, self.splits, dim=1)
        return torch.cat([branch(p) for branch, p in zip(self.branches, parts, strict=True)], dim=1)


class MSMA(nn.Module):
    """Multi-scale spatial modulation attention: ``Proj(A(x) * V(x))`` as in Conv2Former."""

    def __init__(self, channels: int, kernels: Sequence[Sequence[int]] = DEFAULT_KERNELS) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.GELU(), MultiScaleLKA(channels, kernels))
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    @property
    def a_conv(self) -> nn.Conv2d:
        """The 1×1 conv that starts the attention branch A."""
        return self.a[0]

    @property
    def lka(self) -> MultiScaleLKA:
        return self.a[2]

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.a(x) * self.v(x))


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention (Restormer): attention across channels, not pixels.

    Its cost is linear in the number of pixels, which is why it can see the whole image in a light model.
    """

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        if channels % heads != 0:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3, bias=False)
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q = q.reshape(b, self.heads, c // self.heads, h * w)
        k = k.reshape(b, self.heads, c // self.heads, h * w)
        v = v.reshape(b, self.heads, c // self.heads, h * w)
        # Unit-norm q and k bound the logits to [-1, 1]; the learnt temperature sets the softmax sharpness.
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.proj((attn @ v).reshape(b, c, h, w))


class MLP(nn.Module):
    """Convolutional feed-forward network: the depthwise 3×3 conv adds local context per channel."""

    def __init__(self, channels: int, ratio: float = 2.0) -> None:
        super().__init__()
        hidden = int(channels * ratio)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class LKSMB(nn.Module):
    """Large Kernel Spatial Modulation Block: pre-norm residual MSMA, MDTA and MLP in turn."""

    def __init__(self, channels: int, heads: int = 4, mlp_ratio: float = 2.0,
                 kernels: Sequence[Sequence[int]] = DEFAULT_KERNELS) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.msma = MSMA(channels, kernels)
        self.norm2 = LayerNorm2d(channels)
        self.mdta = MDTA(channels, heads)
        self.norm3 = LayerNorm2d(channels)
        self.mlp = MLP(channels, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.msma(self.norm1(x))
        x = x + self.mdta(self.norm2(x))
        return x + self.mlp(self.norm3(x))


class MLFA(nn.Module):
    """Multi-level feature aggregation: fuse the outputs of every block, shallow to deep."""

    def __init__(self, channels: int, levels: int) -> None:
        super().__init__()
        self.fuse = nn.Conv2d(channels * levels, channels, 1)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return self.conv(self.fuse(torch.cat(list(features), dim=1)))


class Upsampler(nn.Sequential):
    """Reconstruction: 3×3 conv to ``out_channels·s²`` then pixel shuffle."""

    def __init__(self, channels: int, scale: int, out_channels: int = 3) -> None:
        super().__init__(nn.Conv2d(channels, out_channels * scale**2, 3, padding=1), nn.PixelShuffle(scale))


class LKSMN(SRNet):
    """Large Kernel Spatial Modulation Network (see the module docstring for the paper and open choices).

    Maps ``(N, in_channels, H, W)`` in [0, 1] to ``(N, in_channels, s·H, s·W)``; any ``H, W ≥ 1``.
    """

    arch = "lksmn"

    def __init__(self, scale: int = 4, channels: int = 48, num_blocks: int = 6, heads: int = 4,
                 mlp_ratio: float = 2.0, kernels: Sequence[Sequence[int]] = DEFAULT_KERNELS,
                 in_channels: int = 3) -> None:
        super().__init__()
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be at least 1, got {num_blocks}")
        kernels = [[int(v) for v in k] for k in kernels]
        if any(len(k) != 3 for k in kernels):
            raise ValueError(f"each scale is (kernel, dilated kernel, dilation), got {kernels}")
        self._remember(scale=scale, channels=channels, num_blocks=num_blocks, heads=heads,
                       mlp_ratio=float(mlp_ratio), kernels=kernels, in_channels=in_channels)

        self.shallow = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList(LKSMB(channels, heads, mlp_ratio, kernels) for _ in range(num_blocks))
        self.mlfa = MLFA(channels, num_blocks)
        self.upsampler = Upsampler(channels, scale, in_channels)

    def forward(self, x: Tensor) -> Tensor:
        shallow = self.shallow(x)
        features = []
        h = shallow
        for block in self.blocks:
            h = block(h)
            features.append(h)
        return self.upsampler(self.mlfa(features) + shallow)

    def fuse(self) -> FusedLKSMN:
        return FusedLKSMN(self.eval()).ready(self)

