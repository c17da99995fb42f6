"""HASN's inference form: the same function as :class:`~lightsr.models.hasn.network.HASN`, rearranged for speed.

* LayerNorm's affine is folded into the three sibling 1×1 expansions f1/f2/f3, which become one convolution;
  ESA's ``conv1 ∘ f3`` and ``conv_f ∘ conv1 ∘ f3`` are chained linear maps, folded into one convolution;
* the per-pixel middle (expand ×3, gate, reduce) runs on cache-sized chunks of pixels as matrix products into
  reused buffers, so its 468-channel expansion never exists for the whole image;
* everything runs channels-last.

Tracing for ONNX and ``torch.compile`` get the whole-image graph (:func:`~lightsr.models._fuse.whole_graph`).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightsr.models._common import pad_to_multiple
from lightsr.models._fuse import CHUNK, CL, conv_from, fold_pre_affine, layer_norm_cl, whole_graph
from lightsr.models.base import InferenceForm


class FusedHASB(nn.Module):
    def __init__(self, blk) -> None:
        super().__init__()
        self.hidden = blk.f1.out_channels
        self.c, self.eps = blk.f1.in_channels, blk.ln.eps
        self.dwconv = copy.deepcopy(blk.dwconv)
        gamma, beta = blk.ln.weight.detach(), blk.ln.bias.detach()
        ws, bs = zip(*(fold_pre_affine(f, gamma, beta) for f in (blk.f1, blk.f2, blk.f3)), strict=True)
        self.f123 = conv_from(torch.cat(ws), torch.cat(bs))
        esa = blk.esa
        # ESA's conv1 reads f3's output with nothing in between, and conv_f reads conv1's: both are linear maps
        # of the normalised input, so they read it directly (52 channels instead of a strided 156-channel slice).
        w3, b3 = ws[2][:, :, 0, 0], bs[2]
        w1, b1 = esa.conv1.weight.detach()[:, :, 0, 0], esa.conv1.bias.detach()
        w1, b1 = w1 @ w3, w1 @ b3 + b1
        wf, bf = esa.conv_f.weight.detach()[:, :, 0, 0], esa.conv_f.bias.detach()
        self.esa_f = w1.shape[0]
        self.esa_in = conv_from(torch.cat([w1, wf @ w1])[:, :, None, None], torch.cat([b1, wf @ b1 + bf]))
        self.esa_conv2 = copy.deepcopy(esa.conv2)
        self.esa_conv3 = copy.deepcopy(esa.conv3)
        self.esa_conv4 = copy.deepcopy(esa.conv4)
        self.g = copy.deepcopy(blk.g)
        self.dwconv2 = copy.deepcopy(blk.dwconv2)
        cab = blk.cab
        self.cab_conv1, self.cab_conv2 = copy.deepcopy(cab.conv1), copy.deepcopy(cab.conv2)
        self.ca_down, self.ca_up = copy.deepcopy(cab.ca.down), copy.deepcopy(cab.ca.up)
        for name, conv in (("w123_b", self.f123), ("w4_b", self.esa_conv4), ("wg_b", self.g)):
            self.register_buffer(name, _with_bias_row(conv).detach(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        y = layer_norm_cl(self.dwconv(x), self.c, self.eps)
        c1_, cf = self.esa_in(y).split(self.esa_f, dim=1)
        c3 = self.esa_conv3(F.max_pool2d(self.esa_conv2(c1_), kernel_size=7, stride=3))
        c3 = F.interpolate(c3, size=x.shape[-2:], mode="bilinear", align_corners=False).add_(cf)
        if whole_graph():
            x1, x2, x3 = self.f123(y).split(self.hidden, dim=1)
            gate = self.esa_conv4(c3).sigmoid_()
            t = self.g(F.hardtanh(x1, 0.0, 6.0).mul_(x2).addcmul_(x3, gate))
        else:
            t = self._expand_gate_reduce(y, c3)
        out = self.dwconv2(t).add_(x)
        out = self.cab_conv2(F.gelu(self.cab_conv1(out)))
        s = torch.sigmoid(self.ca_up(F.relu(self.ca_down(out.mean(dim=(2, 3), keepdim=True)))))
        return out.mul_(s)

    def _expand_gate_reduce(self, y: Tensor, c3: Tensor) -> Tensor:
        """``g(ReLU6(f1 y)·f2 y + f3 y·σ(conv4 c3))`` in chunks of pixels that stay in cache.

        Everything here is per pixel, so the channels-last maps are plain (pixels × channels) matrices and
        the 3×156-channel expansion never exists for the whole image: it is made, gated and reduced
        ``CHUNK`` pixels at a time into reused buffers (twice as fast as whole-image ops, benchmarks/README.md).
        The biases ride in the products as a row of the weights against a column of ones in the operands:
        ``addmm`` would first copy the bias into each output chunk, a write as large as the product's own.
        """
        b, c, h, w = y.shape
        n, hid = b * h * w, self.hidden
        y2 = y.permute(0, 2, 3, 1).reshape(n, c)
        g2 = c3.permute(0, 2, 3, 1).reshape(n, -1)
        cg = g2.shape[1]
        out = torch.empty(b, h, w, c, dtype=y.dtype, device=y.device)
        o2 = out.view(n, c)
        step = min(CHUNK, n)
        z = y.new_empty(step, 3 * hid)
        gate = y.new_empty(step, hid)
        ya, ga, ta = (y.new_ones(step, k + 1) for k in (c, cg, hid))  # operands, last column = 1
        w123, w4, wg = self.w123_b, self.w4_b, self.wg_b
        for s in range(0, n, step):
            e = min(s + step, n)
            k = e - s
            ya[:k, :c].copy_(y2[s:e])
            ga[:k, :cg].copy_(g2[s:e])
            zz = torch.mm(ya[:k], w123, out=z[:k])
            gg = torch.mm(ga[:k], w4, out=gate[:k]).sigmoid_()
            tt = torch.clamp(zz[:, :hid], 0.0, 6.0, out=ta[:k, :hid]).mul_(zz[:, hid : 2 * hid])
            tt.addcmul_(zz[:, 2 * hid :], gg)
            torch.mm(ta[:k], wg, out=o2[s:e])
        return out.permute(0, 3, 1, 2)


def _with_bias_row(conv: nn.Conv2d) -> Tensor:
    """A 1×1 conv's ``(in + 1) × out`` matrix for operands with a trailing column of ones."""
    return torch.cat([conv.weight[:, :, 0, 0].t(), conv.bias[None]])


class FusedHASN(InferenceForm):
    def __init__(self, net) -> None:
        super().__init__(net.info)
        self.min_input = net.min_input
        self.head = copy.deepcopy(net.head)
        self.blocks = nn.Sequential(*(FusedHASB(b) for b in net.blocks))
        self.body_conv = copy.deepcopy(net.body_conv)
        self.upsampler = copy.deepcopy(net.upsampler)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if h < self.min_input or w < self.min_input:
            x = pad_to_multiple(x, 1, min_size=self.min_input)
        feat = self.head(x.contiguous(memory_format=CL))
        out = self.upsampler(self.body_conv(self.blocks(feat)).add_(feat))
        return out[..., : h * self.scale, : w * self.scale]

