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
from lightsr.models._fuse import CHUNK, CL, conv_from, fold_pre_affine, layer_norm_cl, onnx_graph, whole_graph
from lightsr.models._stream import (
    Grid,
    Progress,
    Sink,
    StageRunner,
    Steps,
    Tile,
    check_batch,
    conv_reach,
    eager,
    feature_map,
    stream_rows,
)
from lightsr.models.base import InferenceForm

# ESA's max-pool (RLFN): 7×7 windows, stride 3.
_POOL, _POOL_STRIDE = 7, 3


def _parts(conv: nn.Conv2d, y: Tensor, size: int) -> list[Tensor] | tuple[Tensor, ...]:
    """``conv(y).split(size, dim=1)`` (a 1×1 ``conv``); in an ONNX graph as one convolution per part, whose weight
    slices are constants of the graph: OpenVINO runs the split of a channel-blocked map as a slow reference copy
    (benchmarks/README.md, graph forms)."""
    if not onnx_graph():
        return conv(y).split(size, dim=1)
    w, b = conv.weight, conv.bias
    return [F.conv2d(y, w[i : i + size], None if b is None else b[i : i + size]) for i in range(0, w.shape[0], size)]


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
        c1_, cf = _parts(self.esa_in, y, self.esa_f)
        c3 = self.esa_conv3(self._pool(c1_))
        c3 = F.interpolate(c3, size=x.shape[-2:], mode="bilinear", align_corners=False).add_(cf)
        out = self._body(x, y, c3)
        return out.mul_(self.channel_scale(out.mean(dim=(2, 3), keepdim=True)))

    def _pool(self, c1_: Tensor) -> Tensor:
        return F.max_pool2d(self.esa_conv2(c1_), kernel_size=_POOL, stride=_POOL_STRIDE)

    def _body(self, x: Tensor, y: Tensor, c3: Tensor) -> Tensor:
        """Everything between ESA's upsampled gate ``c3`` and the channel attention: CAB's convolutions' output."""
        if whole_graph():
            x1, x2, x3 = _parts(self.f123, y, self.hidden)
            gate = self.esa_conv4(c3).sigmoid_()
            t = self.g(F.hardtanh(x1, 0.0, 6.0).mul_(x2).addcmul_(x3, gate))
        else:
            t = self._expand_gate_reduce(y, c3)
        out = self.dwconv2(t).add_(x)
        return self.cab_conv2(F.gelu(self.cab_conv1(out)))

    def channel_scale(self, mean: Tensor) -> Tensor:
        """CAB's channel attention: per-channel scale (b, c, 1, 1) from the mean over all pixels."""
        return torch.sigmoid(self.ca_up(F.relu(self.ca_down(mean))))

    # -- tiled execution (FusedHASN.forward_tiled)

    @property
    def body_reach(self) -> int:
        """Context a core of :meth:`body` output needs around it in the block input."""
        return sum(conv_reach(m) for m in (self.dwconv, self.dwconv2, self.cab_conv1, self.cab_conv2))

    def pooled_size(self, height: int, width: int) -> tuple[int, int]:
        """ESA's pooled map size for an ``height × width`` input (stride-2 3×3 conv, then 7×7/3 max-pool)."""
        (k, _), (s, _) = self.esa_conv2.kernel_size, self.esa_conv2.stride

        def n(v: int) -> int:
            return ((v - k) // s + 1 - _POOL) // _POOL_STRIDE + 1

        return n(height), n(width)

    def pooled(self, x: Tensor, t: Tile, run: StageRunner = eager) -> Tensor:
        """ESA's max-pooled map at pooled rows/columns ``t`` (a tile of the pooled grid), from the block input.

        Pooled index ``j`` reads the stride-2 conv's rows ``[3j, 3j + 7)``, which read ``c1_``'s rows
        ``[6j, 6j + 15)``; those need the depthwise conv's reach more of ``x`` (clipped at the image border,
        where the conv zero-pads as on the whole image).
        """
        (k, _), (s, _) = self.esa_conv2.kernel_size, self.esa_conv2.stride
        height, width = x.shape[-2:]

        def span(j0: int, j1: int) -> tuple[int, int]:
            return s * _POOL_STRIDE * j0, s * (_POOL_STRIDE * (j1 - 1) + _POOL - 1) + k

        (ra, rb), (ca, cb) = span(t.r0, t.r1), span(t.c0, t.c1)
        reach = conv_reach(self.dwconv)
        xa, xb, xc, xd = max(0, ra - reach), min(height, rb + reach), max(0, ca - reach), min(width, cb + reach)
        y = run(self, "normalised", x[..., xa:xb, xc:xd].contiguous(memory_format=CL))
        return run(self, "pool_stage", y[..., ra - xa:rb - xa, ca - xc:cb - xc].contiguous(memory_format=CL))

    def normalised(self, x: Tensor) -> Tensor:
        """LayerNorm of the depthwise conv: what every other stage of the block reads."""
        return layer_norm_cl(self.dwconv(x), self.c, self.eps)

    def pool_stage(self, y: Tensor) -> Tensor:
        """ESA's max-pooled map of (a window of) the normalised input ``y``."""
        return self._pool(self.esa_in(y)[:, : self.esa_f])

    def body(self, xw: Tensor, c3: Tensor, window: tuple[int, int, int, int], size: tuple[int, int],
             run: StageRunner = eager) -> Tensor:
        """:meth:`_body` on a window ``(row0, row1, col0, col1)`` ``xw`` of the block input of size ``size``;
        ``c3``: ESA's coarse map of the whole image (after conv3), upsampled here for the window's pixels as
        ``F.interpolate`` upsamples it to the whole image."""
        return run(self, "body_stage", xw, _bilinear_window(c3, size, window))

    def body_stage(self, xw: Tensor, up: Tensor) -> Tensor:
        """:meth:`_body` on a window ``xw`` of the block input, given the window ``up`` of ESA's upsampled coarse
        map."""
        y = self.normalised(xw)
        return self._body(xw, y, self.esa_in(y)[:, self.esa_f :].add(up))

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


def _taps(n_in: int, n_out: int, lo: int, hi: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Source indices and weights of output positions ``[lo, hi)`` of a linear resize ``n_in → n_out``
    (``align_corners=False``), computed as PyTorch's CPU kernel does (float32 arithmetic)."""
    scale = torch.tensor(n_in, dtype=torch.float32) / n_out
    src = (scale * (torch.arange(lo, hi, dtype=torch.float32) + 0.5) - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    lam = (src - i0).clamp(0, 1)
    i1 = torch.where(i0 < n_in - 1, i0 + 1, i0)
    return i0.to(device), i1.to(device), lam.to(device)


def _bilinear_window(c: Tensor, size: tuple[int, int], window: tuple[int, int, int, int]) -> Tensor:
    """Rows ``[r0, r1)`` × columns ``[c0, c1)`` of ``F.interpolate(c, size, mode='bilinear')`` (float32 inside,
    like the kernel's own arithmetic), without making the whole upsampled map."""
    r0, r1, c0, c1 = window
    h0, h1, hl = _taps(c.shape[-2], size[0], r0, r1, c.device)
    w0, w1, wl = _taps(c.shape[-1], size[1], c0, c1, c.device)
    cf = c.float()
    cols = cf.index_select(3, w0) * (1 - wl) + cf.index_select(3, w1) * wl
    hl = hl[:, None]
    out = cols.index_select(2, h0) * (1 - hl) + cols.index_select(2, h1) * hl
    return out.to(c.dtype).contiguous(memory_format=CL)


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

    @property
    def stream_halo(self) -> int:
        return max(self._halos())

    def _halos(self) -> tuple[int, int]:
        """Context per side of the tiles of a block's second pass and of the head / output stage (ESA's pooling
        pass reads its own windows, see :meth:`FusedHASB.pooled`)."""
        body = max(b.body_reach for b in self.blocks)
        last = max(conv_reach(self.head), conv_reach(self.body_conv)) + conv_reach(self.upsampler[0])
        return body, last

    def output_stage(self, body: Tensor, x: Tensor) -> Tensor:
        """The upsampled image from the blocks' output ``body`` and the input ``x`` (the head's features)."""
        return self.upsampler(self.body_conv(body).add_(self.head(x)))

    def forward_tiled(self, x: Tensor, tile: int, sink: Sink, progress: Progress | None = None,
                      run: StageRunner = eager) -> None:
        """``forward(x)`` layer by layer in tiles of at most ``tile`` pixels (see :class:`InferenceForm`); the
        per-tile stages go through ``run``.

        Kept for the whole image: the block input and output (two ``C×H×W`` maps; the head's features are
        recomputed from the input where needed) and ESA's pooled map (1/36 of the pixels). Per block, pass 1
        makes ESA's pooled map tile by tile (its tiles are tiles of the pooled grid); conv3 runs on the whole
        pooled map; pass 2 writes the output of CAB's convolutions and sums it per channel over all tiles (in
        float32); then the whole map is scaled by the channel attention of the mean. ESA's bilinear upsampling
        depends on the whole image's size, so every tile computes it for its own pixels from the whole map.
        """
        check_batch(x)
        h, w = x.shape[-2:]
        if h < self.min_input or w < self.min_input:
            x = pad_to_multiple(x, 1, min_size=self.min_input)
        x = x.contiguous(memory_format=CL)
        height, width = x.shape[-2:]
        c = self.body_conv.in_channels
        grid = Grid(height, width, tile)
        body, last = self._halos()
        first = self.blocks[0]
        ph, pw = first.pooled_size(height, width)
        # A pooled pixel stands for a 6×6 patch: tiles of the pooled grid cover about `tile` input pixels too.
        stride = first.esa_conv2.stride[0] * _POOL_STRIDE
        pooled_grid = Grid(ph, pw, max(1, tile // stride))
        steps = Steps(progress, len(grid) * (len(self.blocks) + 2) + len(pooled_grid) * len(self.blocks))
        cur = feature_map(x, c, height, width)
        for t in grid:
            t.of(cur).copy_(t.core(run(self.head, "forward", t.read(x, 1)), 1))
            steps()
        nxt = torch.empty_like(cur)
        for blk in self.blocks:
            pooled = feature_map(x, blk.esa_f, ph, pw)
            for t in pooled_grid:
                t.of(pooled).copy_(blk.pooled(cur, t, run))
                steps()
            c3 = blk.esa_conv3(pooled)
            del pooled
            total = torch.zeros(1, c, dtype=torch.float32, device=x.device)
            for t in grid:
                out = t.core(blk.body(t.read(cur, body), c3, t.window(body), (height, width), run), body)
                t.of(nxt).copy_(out)
                total += out.float().sum(dim=(2, 3))
                steps()
            nxt.mul_(blk.channel_scale((total / (height * width)).to(x.dtype)[:, :, None, None]))
            cur, nxt = nxt, cur
        del nxt

        def output(t: Tile) -> Tensor:
            return run(self, "output_stage", t.read(cur, last), t.read(x, last))

        stream_rows(grid, last, output, self.scale, sink, steps, (h * self.scale, w * self.scale))

