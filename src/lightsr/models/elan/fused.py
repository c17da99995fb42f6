"""ELAN's inference form: the same function as :class:`~lightsr.models.elan.network.ELAN`, rearranged for speed.

* BatchNorm is folded into the q/v projection, the output mean shift into the tail convolution (the input shift
  stays explicit: folding it into a zero-padded 3×3 conv would change the borders);
* the shift is a depthwise conv with the fixed one-hot kernel on channels-last data (see ``FusedShiftConv``);
  window partition and cyclic shift are one gather through a cached index, q and v gathered separately so that
  the batched matmuls get contiguous operands; large windows recompute shared attention with
  ``F.scaled_dot_product_attention`` (q = k, scale 1) from the kept q instead of storing the maps;
* everything runs channels-last.

Tracing for ONNX and ``torch.compile`` get a size-generic graph: shifts as ``torch.roll``, windows as reshapes.
"""

from __future__ import annotations

import copy
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightsr.models._common import pad_to_multiple
from lightsr.models._fuse import CL, conv_from, whole_graph
from lightsr.models.base import InferenceForm


class FusedShiftConv(nn.Module):
    """The shift as a depthwise 3×3 convolution with the fixed one-hot kernel, then the 1×1 convolution.

    On channels-last tensors oneDNN's depthwise kernel moves the channel groups in one pass, faster than
    copying five channel slices (short strided runs in that layout; benchmarks/README.md). Both are exact: the
    kernel holds a single 1 per channel.
    """

    seam_reach = 1  # a one-pixel shift with zero fill: to tiling's seams a 'same' 3×3 convolution
    # Wrapped tiles (lightsr.seams.SeamHooks): the shift zero-fills across the seams itself, by a mask on its
    # output — a zero gap inserted and removed around the module copied the map four times.
    handles_seams = True

    def __init__(self, sc) -> None:
        super().__init__()
        self.register_buffer("shift", sc.shift.detach().clone(), persistent=False)
        self.conv = conv_from(sc.weight.detach(), sc.bias.detach())
        self.seams: tuple = (None, None)

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv2d(x, self.shift, padding=1, groups=x.shape[1])
        row, col = self.seams
        if row is not None:
            y = y * self._seam_mask(y, -2, row)
        if col is not None:
            y = y * self._seam_mask(y, -1, col)
        return self.conv(y)

    def _seam_mask(self, y: Tensor, dim: int, at: int | Tensor) -> Tensor:
        """Ones except where a channel's shift reads across the seam before index ``at`` along ``dim``: row
        ``at - 1`` of the channels that read the next row, row ``at`` of those that read the previous one
        (as a zero row inserted at ``at`` would give them)."""
        k = self.shift[:, 0].sum(dim=2 if dim == -2 else 1)  # (C, 3): which neighbour each channel reads
        i = torch.arange(y.shape[dim], device=y.device)
        cut = k[:, 2:3] * (i == at - 1).to(k.dtype) + k[:, 0:1] * (i == at).to(k.dtype)  # (C, n)
        mask = (1 - cut).to(y.dtype)
        return mask[None, :, :, None] if dim == -2 else mask[None, :, None, :]


@lru_cache(maxsize=64)
def _shifted_window_index(h: int, w: int, ws: int, device: str) -> Tensor:
    """Flat pixel index listing, window by window, the pixels of an ``h×w`` map cyclically shifted by ws/2."""
    # torch.roll(x, -ws//2) puts pixel (i + ws//2) at position i
    rows = (torch.arange(h) + ws // 2) % h
    cols = (torch.arange(w) + ws // 2) % w
    grid = rows.view(h, 1) * w + cols.view(1, w)
    idx = grid.view(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(-1)
    return idx.to(device)


def _partition_view(m: Tensor, ws: int) -> Tensor:
    """A ``(b, h, w, c)`` map as ``(b, h/ws, w/ws, ws, ws, c)``, window by window: a strided view, no copy."""
    b, h, w, c = m.shape
    return m.view(b, h // ws, ws, w // ws, ws, c).transpose(2, 3)


def _partition(m: Tensor, ws: int) -> Tensor:
    """The unshifted windows of a ``(b, h, w, c)`` map as one contiguous ``(b·windows, ws², c)`` tensor."""
    return _partition_view(m, ws).reshape(-1, ws * ws, m.shape[-1])


# Windows of at least this many tokens are attended with SDPA (see FusedGMSA.forward).
_RECOMPUTE_TOKENS = 256


# Windows per chunk of the 16-bit CPU attention: a chunk's (windows × 256 × 256) scores stay in L2 (2 MB).
_CHUNK_WINDOWS = 16


def _attend(q: Tensor, v: Tensor) -> Tensor:
    """``softmax(q qᵀ) v`` per window (ELAN: q = k, no scaling); 4-D because torch's 3-D path is slower.

    In bf16/fp16 on the CPU, SDPA's flash kernel gains nothing over float32 with ELAN's 10-channel heads, so
    the product runs as two batched matmuls over chunks of windows; the softmax reduces in float32 inside
    PyTorch's CPU kernel before rounding, as SDPA does.
    """
    if q.dtype == torch.float32 or q.device.type != "cpu" or whole_graph():
        return F.scaled_dot_product_attention(q[None], q[None], v[None], scale=1.0)[0]
    out = torch.empty_like(v)
    for i in range(0, q.shape[0], _CHUNK_WINDOWS):
        qc = q[i : i + _CHUNK_WINDOWS]
        attn = torch.softmax(torch.bmm(qc, qc.transpose(1, 2)), dim=-1)
        torch.bmm(attn, v[i : i + _CHUNK_WINDOWS], out=out[i : i + _CHUNK_WINDOWS])
    return out


class FusedGMSA(nn.Module):
    def __init__(self, gmsa, keep_attn: bool) -> None:
        super().__init__()
        conv, bn = gmsa.projection, gmsa.norm
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        w = conv.weight.detach() * scale.view(-1, 1, 1, 1)
        b = (conv.bias.detach() - bn.running_mean) * scale + bn.bias.detach()
        self.project_inp = conv_from(w, b)
        self.project_out = copy.deepcopy(gmsa.project_out)
        self.window_sizes, self.shift, self.calc_attn = gmsa.window_sizes, gmsa.shift, gmsa.calc_attn
        self.split = gmsa.split_chns
        self.keep_attn = keep_attn  # the next block reuses this block's attention maps

    def forward(self, x: Tensor, prev: list[Tensor] | None) -> tuple[Tensor, list[Tensor] | None]:
        if whole_graph():
            return self._traceable(x, prev)
        b, c, h, w = x.shape
        t = self.project_inp(x).permute(0, 2, 3, 1).reshape(b, h * w, -1)  # channels-last: a view
        out = torch.empty(b, h * w, c, dtype=x.dtype, device=x.device)
        atns, off_in, off_out = [], 0, 0
        for i, (ws, cg) in enumerate(zip(self.window_sizes, self.split, strict=True)):
            idx = _shifted_window_index(h, w, ws, str(x.device)) if self.shift else None

            # Gathering q and v separately makes each contiguous: the batched matmuls on a strided half of
            # the projection ran at half speed. Unshifted windows are a permuted view of the map, and copying
            # that view is faster than a gather through an index; shifted ones wrap around the border and go
            # through the cached index.
            def windows(lo: int, hi: int, ws: int = ws, idx: Tensor | None = idx) -> Tensor:
                if idx is None:
                    return _partition(t.view(b, h, w, -1)[..., lo:hi], ws)
                return t[:, :, lo:hi].index_select(1, idx).view(-1, ws * ws, hi - lo)

            y = self._group(windows, off_in, cg, ws, prev[i] if prev else None, atns)
            co = y.shape[-1]
            if idx is None:
                dst = _partition_view(out.view(b, h, w, c)[..., off_out : off_out + co], ws)
                dst.copy_(y.view(dst.shape))
            else:
                out[:, :, off_out : off_out + co].index_copy_(1, idx, y.view(b, h * w, co))
            off_in, off_out = off_in + cg, off_out + co
        y = out.view(b, h, w, c).permute(0, 3, 1, 2)  # channels-last NCHW view
        return self.project_out(y), (atns if self.keep_attn else None)

    def _group(self, windows, off: int, cg: int, ws: int, prev: Tensor | None, atns: list[Tensor]) -> Tensor:
        """One channel group's attention over its windows (``windows(lo, hi)`` gives channels lo:hi of them).

        Large windows: the next block recomputes the attention from the kept q with the fused SDPA kernel
        instead of reading back a materialised (windows × ws² × ws²) map — 63 MB for 16×16 windows of a 192×320
        map, which is slower to write and read than to recompute. Small windows keep the map in ``atns``.
        """
        recompute = ws * ws >= _RECOMPUTE_TOKENS
        if not self.calc_attn:
            v = windows(off, off + cg)
            return _attend(prev, v) if recompute else prev @ v
        q, v = windows(off, off + cg // 2), windows(off + cg // 2, off + cg)
        if self.keep_attn and not recompute:
            atn = torch.softmax(q @ q.transpose(-2, -1), dim=-1)
            atns.append(atn)
            return atn @ v
        if self.keep_attn:
            atns.append(q)
        return _attend(q, v)

    def _traceable(self, x: Tensor, prev: list[Tensor] | None) -> tuple[Tensor, list[Tensor] | None]:
        """The same attention for ONNX export and ``torch.compile``: cyclic shifts as ``torch.roll`` and windows
        as reshapes, so that the graph holds for any input size (the cached indices of ``forward`` would
        freeze the traced size), and group outputs concatenated instead of written into a buffer."""
        t = self.project_inp(x).permute(0, 2, 3, 1)  # (b, h, w, 2c), a view
        b, h, w = t.shape[:3]
        atns, ys, off = [], [], 0
        for i, (ws, cg) in enumerate(zip(self.window_sizes, self.split, strict=True)):
            s = ws // 2 if self.shift else 0

            def windows(lo: int, hi: int, ws: int = ws, s: int = s) -> Tensor:
                m = t[..., lo:hi]
                return _partition(torch.roll(m, (-s, -s), (1, 2)) if s else m, ws)

            y = self._group(windows, off, cg, ws, prev[i] if prev else None, atns)
            co = y.shape[-1]
            y = y.view(b, h // ws, w // ws, ws, ws, co).transpose(2, 3).reshape(b, h, w, co)
            ys.append(torch.roll(y, (s, s), (1, 2)) if s else y)
            off += cg
        y = torch.cat(ys, dim=-1).permute(0, 3, 1, 2)
        return self.project_out(y), (atns if self.keep_attn else None)


class FusedELAB(nn.Module):
    def __init__(self, blk, keep_attn: bool) -> None:
        super().__init__()
        self.conv0 = FusedShiftConv(blk.lfe.conv0)
        self.conv1 = FusedShiftConv(blk.lfe.conv1)
        self.gmsa = FusedGMSA(blk.gmsa, keep_attn)

    def forward(self, x: Tensor, prev: list[Tensor] | None) -> tuple[Tensor, list[Tensor] | None]:
        x = self.conv1(F.relu_(self.conv0(x))).add_(x)
        y, atns = self.gmsa(x, prev)
        return y.add_(x), atns


class FusedELAN(InferenceForm):
    def __init__(self, net) -> None:
        super().__init__(net.info)
        self.pad_multiple = net.pad_multiple
        self.register_buffer("rgb_mean", net.rgb_mean.clone(), persistent=False)
        self.rgb_range = rgb_range = net.rgb_range
        self.head = copy.deepcopy(net.head)
        blocks = list(net.body)
        self.body = nn.ModuleList(
            FusedELAB(blk, keep_attn=j + 1 < len(blocks) and not blocks[j + 1].gmsa.calc_attn)
            for j, blk in enumerate(blocks)
        )
        tail = net.tail_conv
        s2 = net.scale**2
        mean = net.rgb_mean.view(3).repeat_interleave(s2)
        self.tail_conv = conv_from(tail.weight.detach() / rgb_range, tail.bias.detach() / rgb_range + mean, padding=1)
        self.shuffle = nn.PixelShuffle(net.scale)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.pad_multiple)
        x = ((x - self.rgb_mean) * self.rgb_range).contiguous(memory_format=CL)
        feat = self.head(x)
        res, atns = feat, None
        for blk in self.body:
            res, atns = blk(res, atns)
        out = self.shuffle(self.tail_conv(res.add_(feat)))
        return out[..., : h * self.scale, : w * self.scale]

