"""Inference forms: the same functions as the training forms, rearranged for speed.

``SRNet.fuse()`` returns one of these. What changes, and why it is exact:

* affine maps are folded into neighbouring linear layers — ELAN's BatchNorm into the q/v projection, the
  LayerNorm affine of HASN and LKSMN into the 1×1 convolutions that read it, ELAN's output mean shift into the
  tail convolution (the input shift stays explicit: folding it into a zero-padded 3×3 conv would change the
  borders);
* sibling 1×1 convolutions reading the same tensor become one convolution (HASN's f1/f2/f3, LKSMN's A/V);
  chained linear maps become one (HASN's ESA ``conv1 ∘ f3`` and ``conv_f ∘ conv1 ∘ f3``), and same-input
  depthwise convs of different sizes become one with zero-padded kernels (LKSMN's first stage);
* HASN's per-pixel middle (expand ×3, gate, reduce) runs on cache-sized chunks of pixels as matrix products
  into reused buffers, so its 468-channel expansion never exists for the whole image;
* LKSMN's dilated depthwise convs run undilated on the pixel phases, and MDTA is one Gram matrix plus one
  C×C matrix per image (``proj ∘ attention`` folded) instead of normalised, reshaped copies of q, k, v;
* ELAN's shift is a depthwise conv with the fixed one-hot kernel on channels-last data (faster there than
  slicing; see ``FusedShiftConv``); window partition and cyclic shift are one gather through a cached
  index, q and v gathered separately so that the batched matmuls get contiguous operands; large windows
  recompute shared attention with ``F.scaled_dot_product_attention`` (q = k, scale 1) from the kept q
  instead of storing the maps;
* everything runs channels-last, so 1×1 convolutions are plain matrix products and layout changes are views.

Tracing for ONNX and ``torch.compile`` get the whole-image graph (``_whole_graph``): those compilers fuse the
per-pixel stages themselves, and a Python loop over chunks or an index cached per image size would freeze the
traced size (ELAN's attention then shifts with ``torch.roll`` and partitions windows with reshapes).

The training forms (what the golden tests check against the official code) are left untouched.
"""

from __future__ import annotations

import copy
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CL = torch.channels_last


def _conv(weight: Tensor, bias: Tensor | None, **kw) -> nn.Conv2d:
    out_c, in_per_group, kh, kw_ = weight.shape
    groups = kw.pop("groups", 1)
    conv = nn.Conv2d(in_per_group * groups, out_c, (kh, kw_), groups=groups, bias=True, **kw)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias if bias is not None else torch.zeros(out_c))
    return conv


# Pixels per chunk of the per-pixel stages done in cache-sized pieces (640–2,048 measured alike).
_CHUNK = 1024


def _whole_graph() -> bool:
    """True while tracing for ONNX or compiling: a Python loop over chunks would be unrolled at the traced size,
    and those compilers fuse the per-pixel stages themselves."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def _fold_pre_affine(conv: nn.Conv2d, gamma: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """Weights of ``conv(γ·x + β)`` as a single 1×1 conv of ``x``."""
    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[0])
    return w * gamma.view(1, -1, 1, 1), b + w[:, :, 0, 0] @ beta


def _layer_norm_cl(x: Tensor, c: int, eps: float) -> Tensor:
    """Affine-free LayerNorm over the ``c`` channels of a channels-last tensor (a view in and out, no copy).

    ``c`` is passed as a plain int, not read from ``x.shape``, so that an ONNX trace keeps it constant.
    """
    return F.layer_norm(x.permute(0, 2, 3, 1), (c,), eps=eps).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------------------------- HASN


class FusedHASB(nn.Module):
    def __init__(self, blk) -> None:
        super().__init__()
        self.hidden = blk.f1.out_channels
        self.c, self.eps = blk.f1.in_channels, blk.ln.eps
        self.dwconv = copy.deepcopy(blk.dwconv)
        gamma, beta = blk.ln.weight.detach(), blk.ln.bias.detach()
        ws, bs = zip(*(_fold_pre_affine(f, gamma, beta) for f in (blk.f1, blk.f2, blk.f3)), strict=True)
        self.f123 = _conv(torch.cat(ws), torch.cat(bs))
        esa = blk.esa
        # ESA's conv1 reads f3's output with nothing in between, and conv_f reads conv1's: both are linear maps
        # of the normalised input, so they read it directly (52 channels instead of a strided 156-channel slice).
        w3, b3 = ws[2][:, :, 0, 0], bs[2]
        w1, b1 = esa.conv1.weight.detach()[:, :, 0, 0], esa.conv1.bias.detach()
        w1, b1 = w1 @ w3, w1 @ b3 + b1
        wf, bf = esa.conv_f.weight.detach()[:, :, 0, 0], esa.conv_f.bias.detach()
        self.esa_f = w1.shape[0]
        self.esa_in = _conv(torch.cat([w1, wf @ w1])[:, :, None, None], torch.cat([b1, wf @ b1 + bf]))
        self.esa_conv2 = copy.deepcopy(esa.conv2)
        self.esa_conv3 = copy.deepcopy(esa.conv3)
        self.esa_conv4 = copy.deepcopy(esa.conv4)
        self.g = copy.deepcopy(blk.g)
        self.dwconv2 = copy.deepcopy(blk.dwconv2)
        cab = blk.cab.body
        self.cab_conv1, self.cab_conv2 = copy.deepcopy(cab[0]), copy.deepcopy(cab[2])
        self.ca_down, self.ca_up = copy.deepcopy(cab[3].attention[1]), copy.deepcopy(cab[3].attention[3])
        for name, conv in (("w123_b", self.f123), ("w4_b", self.esa_conv4), ("wg_b", self.g)):
            self.register_buffer(name, _with_bias_row(conv).detach(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        y = _layer_norm_cl(self.dwconv(x), self.c, self.eps)
        c1_, cf = self.esa_in(y).split(self.esa_f, dim=1)
        c3 = self.esa_conv3(F.max_pool2d(self.esa_conv2(c1_), kernel_size=7, stride=3))
        c3 = F.interpolate(c3, size=x.shape[-2:], mode="bilinear", align_corners=False).add_(cf)
        if _whole_graph():
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
        ``_CHUNK`` pixels at a time into reused buffers. Measured on the 2-core development machine (320×180):
        51 ms per block for the whole-image ops, 24 ms in chunks. The biases ride in the products as a row of
        the weights against a column of ones in the operands: ``addmm`` would first copy the bias into each
        output chunk, a write as large as the product's own (fused HASN ×4 at 320×180 went from 0.377 to
        0.346 s, the mean of four A/B pairs' medians, 2 threads, tcmalloc).
        """
        b, c, h, w = y.shape
        n, hid = b * h * w, self.hidden
        y2 = y.permute(0, 2, 3, 1).reshape(n, c)
        g2 = c3.permute(0, 2, 3, 1).reshape(n, -1)
        cg = g2.shape[1]
        out = torch.empty(b, h, w, c, dtype=y.dtype, device=y.device)
        o2 = out.view(n, c)
        step = min(_CHUNK, n)
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


class FusedHASN(nn.Module):
    def __init__(self, net) -> None:
        super().__init__()
        from lightsr.models.hasn import MIN_INPUT

        self.scale, self.min_input = net.scale, MIN_INPUT
        self.head = copy.deepcopy(net.head)
        self.blocks = nn.Sequential(*(FusedHASB(b) for b in net.blocks))
        self.body_conv = copy.deepcopy(net.body_conv)
        self.upsampler = copy.deepcopy(net.upsampler)

    def forward(self, x: Tensor) -> Tensor:
        from lightsr.models._common import pad_to_multiple

        h, w = x.shape[-2:]
        if h < self.min_input or w < self.min_input:
            x = pad_to_multiple(x, 1, min_size=self.min_input)
        feat = self.head(x.contiguous(memory_format=CL))
        out = self.upsampler(self.body_conv(self.blocks(feat)).add_(feat))
        return out[..., : h * self.scale, : w * self.scale]


# ----------------------------------------------------------------------------------------------- ELAN


class FusedShiftConv(nn.Module):
    """The shift as a depthwise 3×3 convolution with the fixed one-hot kernel, then the 1×1 convolution.

    On channels-last tensors oneDNN's depthwise kernel moves the channel groups in one pass; it measured
    3.5× faster than zero-filling a buffer and copying five channel slices into it (0.76 vs 2.63 ms for a
    60-channel 192×320 map on the 2-core development machine), because slices of the channel axis are short
    strided runs in that layout. Both are exact: the kernel holds a single 1 per channel.
    """

    def __init__(self, sc) -> None:
        super().__init__()
        self.register_buffer("shift", sc.shift.detach().clone(), persistent=False)
        self.conv = _conv(sc.weight.detach(), sc.bias.detach())

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.conv2d(x, self.shift, padding=1, groups=x.shape[1]))


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


def _attend(q: Tensor, v: Tensor) -> Tensor:
    """``softmax(q qᵀ) v`` per window (ELAN: q = k, no scaling); 4-D because torch's 3-D path was 4× slower."""
    return F.scaled_dot_product_attention(q[None], q[None], v[None], scale=1.0)[0]


class FusedGMSA(nn.Module):
    def __init__(self, gmsa, keep_attn: bool) -> None:
        super().__init__()
        conv, bn = gmsa.project_inp[0], gmsa.project_inp[1]
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        w = conv.weight.detach() * scale.view(-1, 1, 1, 1)
        b = (conv.bias.detach() - bn.running_mean) * scale + bn.bias.detach()
        self.project_inp = _conv(w, b)
        self.project_out = copy.deepcopy(gmsa.project_out)
        self.window_sizes, self.shift, self.calc_attn = gmsa.window_sizes, gmsa.shift, gmsa.calc_attn
        self.split = gmsa.split_chns
        self.keep_attn = keep_attn  # the next block reuses this block's attention maps

    def forward(self, x: Tensor, prev: list[Tensor] | None) -> tuple[Tensor, list[Tensor] | None]:
        if _whole_graph():
            return self._traceable(x, prev)
        b, c, h, w = x.shape
        t = self.project_inp(x).permute(0, 2, 3, 1).reshape(b, h * w, -1)  # channels-last: a view
        out = torch.empty(b, h * w, c, dtype=x.dtype, device=x.device)
        atns, off_in, off_out = [], 0, 0
        for i, (ws, cg) in enumerate(zip(self.window_sizes, self.split, strict=True)):
            idx = _shifted_window_index(h, w, ws, str(x.device)) if self.shift else None

            # Gathering q and v separately makes each contiguous: the batched matmuls on a strided half of
            # the projection ran at half speed. Unshifted windows are a permuted view of the map, and copying
            # that view measured 2.4× faster than a gather through an index (0.57 vs 1.37 ms, 20 channels of
            # 192×320); shifted ones wrap around the border and go through the cached index.
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


class FusedELAN(nn.Module):
    def __init__(self, net) -> None:
        super().__init__()
        from lightsr.models.elan import RGB_RANGE

        self.scale, self.pad_multiple = net.scale, net.pad_multiple
        self.register_buffer("rgb_mean", net.rgb_mean.clone(), persistent=False)
        self.rgb_range = RGB_RANGE
        self.head = copy.deepcopy(net.head)
        blocks = list(net.body)
        self.body = nn.ModuleList(
            FusedELAB(blk, keep_attn=j + 1 < len(blocks) and not blocks[j + 1].gmsa.calc_attn)
            for j, blk in enumerate(blocks)
        )
        tail = net.tail[0]
        s2 = net.scale**2
        mean = net.rgb_mean.view(3).repeat_interleave(s2)
        self.tail_conv = _conv(tail.weight.detach() / RGB_RANGE, tail.bias.detach() / RGB_RANGE + mean, padding=1)
        self.shuffle = nn.PixelShuffle(net.scale)

    def forward(self, x: Tensor) -> Tensor:
        from lightsr.models._common import pad_to_multiple

        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.pad_multiple)
        x = ((x - self.rgb_mean) * self.rgb_range).contiguous(memory_format=CL)
        feat = self.head(x)
        res, atns = feat, None
        for blk in self.body:
            res, atns = blk(res, atns)
        out = self.shuffle(self.tail_conv(res.add_(feat)))
        return out[..., : h * self.scale, : w * self.scale]


# ---------------------------------------------------------------------------------------------- LKSMN


def _merge_depthwise(convs: list[nn.Conv2d]) -> nn.Conv2d:
    """Depthwise convs on consecutive channel groups with different odd kernels → one, zero-padded."""
    k = max(c.kernel_size[0] for c in convs)
    ch = sum(c.out_channels for c in convs)
    w = torch.zeros(ch, 1, k, k)
    b = torch.cat([c.bias.detach() for c in convs])
    off = 0
    for c in convs:
        kc, n = c.kernel_size[0], c.out_channels
        p = (k - kc) // 2
        w[off : off + n, :, p : p + kc, p : p + kc] = c.weight.detach()
        off += n
    return _conv(w, b, padding=k // 2, groups=ch)


class FusedLKSMB(nn.Module):
    def __init__(self, blk) -> None:
        super().__init__()
        c = blk.norm1.channels
        self.c, self.eps = c, blk.norm1.eps
        msma = blk.msma
        wa, ba = _fold_pre_affine(msma.a[0], blk.norm1.weight.detach(), blk.norm1.bias.detach())
        wv, bv = _fold_pre_affine(msma.v, blk.norm1.weight.detach(), blk.norm1.bias.detach())
        self.av = _conv(torch.cat([wa, wv]), torch.cat([ba, bv]))
        lka = msma.a[2]
        self.splits = lka.splits
        self.dw = _merge_depthwise([br[0] for br in lka.branches])
        self.dilated = nn.ModuleList(_dilated_depthwise(br[1]) for br in lka.branches)
        pw = torch.block_diag(*(br[2].weight.detach()[:, :, 0, 0] for br in lka.branches))
        self.pw = _conv(pw[:, :, None, None], torch.cat([br[2].bias.detach() for br in lka.branches]))
        self.proj = copy.deepcopy(msma.proj)
        mdta = blk.mdta
        self.heads = mdta.heads
        self.temperature = nn.Parameter(mdta.temperature.detach().clone(), requires_grad=False)
        # q|k and v as two convolutions: a 144-channel map of a 320×180 image is 33 MB, above glibc's largest
        # heap-served block (32 MB), so every one of them was a fresh mmap and page faults.
        wqkv, bqkv = _fold_pre_affine(mdta.qkv, blk.norm2.weight.detach(), blk.norm2.bias.detach())
        wdw = mdta.qkv_dwconv.weight.detach()
        self.qk = _conv(wqkv[: 2 * c], bqkv[: 2 * c])
        self.v = _conv(wqkv[2 * c :], bqkv[2 * c :])
        self.qk_dw = _conv(wdw[: 2 * c], None, padding=1, groups=2 * c)
        self.v_dw = _conv(wdw[2 * c :], None, padding=1, groups=c)
        self.register_buffer("mdta_proj", mdta.proj.weight.detach()[:, :, 0, 0].clone(), persistent=False)
        mlp = blk.mlp
        self.fc1 = _conv(*_fold_pre_affine(mlp.fc1, blk.norm3.weight.detach(), blk.norm3.bias.detach()))
        self.mlp_dw = copy.deepcopy(mlp.dwconv)
        self.fc2 = copy.deepcopy(mlp.fc2)

    def forward(self, x: Tensor) -> Tensor:
        c = self.c
        a, v = self.av(_layer_norm_cl(x, c, self.eps)).split(c, dim=1)
        a = self.dw(F.gelu(a))
        a = torch.cat([conv(p) for conv, p in zip(self.dilated, a.split(self.splits, dim=1), strict=True)], 1)
        x = self.proj(self.pw(a).mul_(v)).add_(x)

        y = _layer_norm_cl(x, c, self.eps)
        x = self._mdta(self.qk_dw(self.qk(y)), self.v_dw(self.v(y))).add_(x)

        return self.fc2(F.gelu(self.mlp_dw(self.fc1(_layer_norm_cl(x, c, self.eps))))).add_(x)

    def _mdta(self, qk: Tensor, v: Tensor) -> Tensor:
        """MDTA from its (channels-last) q|k and v, without normalising or reshaping them.

        Restormer's ``proj((softmax(τ·q̂ k̂ᵀ)) v)`` with q̂, k̂ unit-norm over pixels: one Gram matrix of
        [q, k] gives every q·k product and every squared norm at once, and since the attention mixes channels
        at each pixel, ``proj ∘ attention`` is one C×C matrix per image applied to v as a single matmul.
        """
        b, c, h, w = v.shape
        heads = self.heads
        d = c // heads
        qk = qk.permute(0, 2, 3, 1).reshape(b, h * w, 2 * c)  # channels-last: views
        v = v.permute(0, 2, 3, 1).reshape(b, h * w, c)
        g = qk.transpose(1, 2) @ qk  # (b, 2c, 2c)
        n = g.diagonal(dim1=1, dim2=2).sqrt().clamp_min(1e-12)  # F.normalize's eps
        logits = g[:, :c, c:] / (n[:, :c, None] * n[:, None, c:])
        # The per-head diagonal blocks of the c×c products: (b, heads, d, d).
        logits = logits.reshape(b, heads, d, heads, d).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2)
        attn = (logits * self.temperature).softmax(dim=-1)
        m = torch.einsum("ohi,bhij->bohj", self.mdta_proj.view(c, heads, d), attn).reshape(b, c, c)
        y = v @ m.transpose(1, 2)  # (b, hw, c)
        return y.view(b, h, w, c).permute(0, 3, 1, 2)


class _PhaseDilatedDepthwise(nn.Module):
    """A depthwise conv with dilation r as an undilated one on the r×r pixel phases (exact, zero padding).

    Pixels ``r`` apart form ``r²`` sub-images (``pixel_unshuffle``); a dilated kernel only ever combines
    pixels of one phase, so it is the plain kernel on each sub-image. oneDNN's dilated depthwise kernel was
    slow here: a 9×9 dilation-4 conv of 16 channels at 320×180 took 9.6 ms, the phase form 2.2 ms.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        r, ch, k = conv.dilation[0], conv.out_channels, conv.kernel_size[0]
        self.r, self.k = r, k
        self.register_buffer("weight", conv.weight.detach().repeat_interleave(r * r, 0), persistent=False)
        self.register_buffer("bias", conv.bias.detach().repeat_interleave(r * r), persistent=False)
        self.groups = ch * r * r

    def forward(self, x: Tensor) -> Tensor:
        r = self.r
        h, w = x.shape[-2:]
        ph, pw = -h % r, -w % r
        if ph or pw:  # zeros beyond the border are what the dilated conv's zero padding reads anyway
            x = F.pad(x, (0, pw, 0, ph))
        y = F.conv2d(F.pixel_unshuffle(x, r), self.weight, self.bias, padding=self.k // 2, groups=self.groups)
        return F.pixel_shuffle(y, r)[..., :h, :w]


def _dilated_depthwise(conv: nn.Conv2d) -> nn.Module:
    # Dilation 2 was as fast directly (0.5 ms for 5×5 at 320×180) as the phase form (1.4 ms) was slow.
    if conv.dilation[0] >= 3 and conv.groups == conv.in_channels == conv.out_channels:
        return _PhaseDilatedDepthwise(conv)
    return copy.deepcopy(conv)


class FusedLKSMN(nn.Module):
    def __init__(self, net) -> None:
        super().__init__()
        self.shallow = copy.deepcopy(net.shallow)
        self.blocks = nn.ModuleList(FusedLKSMB(b) for b in net.blocks)
        self.mlfa_fuse = copy.deepcopy(net.mlfa.fuse)
        self.mlfa_conv = copy.deepcopy(net.mlfa.conv)
        self.upsampler = copy.deepcopy(net.upsampler)

    def forward(self, x: Tensor) -> Tensor:
        shallow = self.shallow(x.contiguous(memory_format=CL))
        if _whole_graph():
            feats, h = [], shallow
            for blk in self.blocks:
                h = blk(h)
                feats.append(h)
            fused = self.mlfa_fuse(torch.cat(feats, dim=1))
        else:
            fused = self._aggregate(shallow)
        return self.upsampler(self.mlfa_conv(fused).add_(shallow))

    def _aggregate(self, h: Tensor) -> Tensor:
        """MLFA's 1×1 fusion of the concatenated block outputs, accumulated block by block.

        ``W·[f₁; …; fₙ] = Σ Wᵢ·fᵢ``: no (n·C)-channel concatenation (66 MB at 320×180), and each block's
        output can be freed as soon as the next block has read it.
        """
        b, c, hh, ww = h.shape
        w = self.mlfa_fuse.weight[:, :, 0, 0]
        acc = torch.empty(b, hh, ww, c, dtype=h.dtype, device=h.device)
        a2 = acc.view(-1, c)
        a2.copy_(self.mlfa_fuse.bias.expand_as(a2))
        for i, blk in enumerate(self.blocks):
            h = blk(h)
            a2.addmm_(h.permute(0, 2, 3, 1).reshape(-1, c), w[:, i * c : (i + 1) * c].t())
        return acc.permute(0, 3, 1, 2)


_FUSERS = {"ELAN": FusedELAN, "HASN": FusedHASN, "LKSMN": FusedLKSMN}


def fuse(net: nn.Module) -> nn.Module:
    """The inference form of a lightsr network (eval mode, channels-last, no gradients)."""
    fused = _FUSERS[type(net).__name__](net.eval())
    fused.info = net.info
    fused.scale = net.scale
    fused.arch = net.arch
    return fused.to(next(net.parameters()).device).to(memory_format=CL).eval().requires_grad_(False)


def same_function(a: nn.Module, b: nn.Module, x: Tensor) -> float:
    """Largest absolute difference of two networks' outputs on ``x`` (a helper for checks and benchmarks)."""
    with torch.inference_mode():
        return (a(x) - b(x)).abs().max().item()


__all__ = ["FusedELAN", "FusedHASN", "FusedLKSMN", "fuse", "same_function"]
