"""LKSMN's inference form: the same function as :class:`~lightsr.models.lksmn.network.LKSMN`, rearranged for speed.

* the pre-norm affines are folded into the 1×1 convolutions that read them; MSMA's sibling A/V 1×1 convs become
  one, and the same-input depthwise convs of the three scales one with zero-padded kernels;
* dilated depthwise convs run undilated on the pixel phases; MDTA is one Gram matrix plus one C×C matrix per
  image (``proj ∘ attention`` folded) instead of normalised, reshaped copies of q, k, v;
* MLFA's fusion of the concatenated block outputs is accumulated block by block;
* everything runs channels-last.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightsr.models._fuse import CL, conv_from, fold_pre_affine, layer_norm_cl, onnx_graph, whole_graph
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
    return conv_from(w, b, padding=k // 2, groups=ch)


class FusedLKSMB(nn.Module):
    def __init__(self, blk) -> None:
        super().__init__()
        c = blk.norm1.channels
        self.c, self.eps = c, blk.norm1.eps
        msma = blk.msma
        wa, ba = fold_pre_affine(msma.a_conv, blk.norm1.weight.detach(), blk.norm1.bias.detach())
        wv, bv = fold_pre_affine(msma.v, blk.norm1.weight.detach(), blk.norm1.bias.detach())
        # a and v as two convolutions: GELU on a channel slice of one channels-last map is a strided walk, much
        # slower in bf16 than on a dense map (benchmarks/README.md).
        self.msma_a = conv_from(wa, ba)
        self.msma_v = conv_from(wv, bv)
        lka = msma.lka
        self.splits = lka.splits
        self.dw = _merge_depthwise([br.depthwise for br in lka.branches])
        self.dilated = nn.ModuleList(_dilated_depthwise(br.dilated) for br in lka.branches)
        pw = torch.block_diag(*(br.pointwise.weight.detach()[:, :, 0, 0] for br in lka.branches))
        self.pw = conv_from(pw[:, :, None, None], torch.cat([br.pointwise.bias.detach() for br in lka.branches]))
        self.proj = copy.deepcopy(msma.proj)
        mdta = blk.mdta
        self.heads = mdta.heads
        self.temperature = nn.Parameter(mdta.temperature.detach().clone(), requires_grad=False)
        # q|k and v as two convolutions: a 144-channel map of a 320×180 image is 33 MB, above glibc's largest
        # heap-served block (32 MB), so every one of them was a fresh mmap and page faults.
        wqkv, bqkv = fold_pre_affine(mdta.qkv, blk.norm2.weight.detach(), blk.norm2.bias.detach())
        wdw = mdta.qkv_dwconv.weight.detach()
        self.qk = conv_from(wqkv[: 2 * c], bqkv[: 2 * c])
        self.v = conv_from(wqkv[2 * c :], bqkv[2 * c :])
        self.qk_dw = conv_from(wdw[: 2 * c], None, padding=1, groups=2 * c)
        self.v_dw = conv_from(wdw[2 * c :], None, padding=1, groups=c)
        self.register_buffer("mdta_proj", mdta.proj.weight.detach()[:, :, 0, 0].clone(), persistent=False)
        mlp = blk.mlp
        self.fc1 = conv_from(*fold_pre_affine(mlp.fc1, blk.norm3.weight.detach(), blk.norm3.bias.detach()))
        self.mlp_dw = copy.deepcopy(mlp.dwconv)
        self.fc2 = copy.deepcopy(mlp.fc2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.msma(x)
        y = layer_norm_cl(x, self.c, self.eps)
        x = self._mdta(self.qk_dw(self.qk(y)), self.v_dw(self.v(y))).add_(x)
        return self.mlp(x)

    def msma(self, x: Tensor) -> Tensor:
        """The MSMA residual stage (local: reads :attr:`msma_reach` pixels around each output pixel)."""
        c = self.c
        y = layer_norm_cl(x, c, self.eps)
        a, v = self.dw(F.gelu(self.msma_a(y))), self.msma_v(y)
        a = torch.cat([conv(p) for conv, p in zip(self.dilated, a.split(self.splits, dim=1), strict=True)], 1)
        return self.proj(self.pw(a).mul_(v)).add_(x)

    def mlp(self, x: Tensor) -> Tensor:
        """The MLP residual stage."""
        return self.fc2(F.gelu(self.mlp_dw(self.fc1(layer_norm_cl(x, self.c, self.eps))))).add_(x)

    def qk_map(self, y: Tensor) -> Tensor:
        """MDTA's depthwise-filtered q|k of the MSMA output ``y`` (what the Gram matrix sums over)."""
        return self.qk_dw(self.qk(layer_norm_cl(y, self.c, self.eps)))

    def after_mdta(self, y: Tensor, m: Tensor) -> Tensor:
        """The block's output from the MSMA output ``y`` once MDTA's matrix ``m`` (:meth:`mdta_matrix`) is known:
        MDTA's residual stage, then the MLP."""
        return self.mlp(self.mdta_apply(self.v_dw(self.v(layer_norm_cl(y, self.c, self.eps))), m).add_(y))

    @property
    def msma_reach(self) -> int:
        return conv_reach(self.dw) + max(conv_reach(m) for m in self.dilated)

    def _mdta(self, qk: Tensor, v: Tensor) -> Tensor:
        """MDTA from its (channels-last) q|k and v, without normalising or reshaping them.

        Restormer's ``proj((softmax(τ·q̂ k̂ᵀ)) v)`` with q̂, k̂ unit-norm over pixels: one Gram matrix of
        [q, k] gives every q·k product and every squared norm at once, and since the attention mixes channels
        at each pixel, ``proj ∘ attention`` is one C×C matrix per image applied to v as a single matmul.
        """
        b, c2, h, w = qk.shape
        if onnx_graph():  # products over the NCHW layout: the channels-last views would be transposes there
            qk = qk.reshape(b, c2, h * w).float()
            return self.mdta_apply(v, self.mdta_matrix(qk @ qk.transpose(1, 2)))
        qk = qk.permute(0, 2, 3, 1).reshape(b, h * w, c2).float()  # channels-last: a view in fp32
        return self.mdta_apply(v, self.mdta_matrix(qk.transpose(1, 2) @ qk))

    def mdta_matrix(self, g: Tensor) -> Tensor:
        """``proj ∘ attention`` (b, c, c) from the Gram matrix (b, 2c, 2c) of [q, k] over all pixels.

        Computed in float32 whatever the network's dtype (the norms, logits and softmax of a few c×c matrices
        cost nothing next to the convolutions) and returned in the network's dtype; the Gram matrix itself is
        summed in float32 by the callers.
        """
        dtype = self.mdta_proj.dtype
        g = g.float()
        c = self.c
        b = g.shape[0]
        heads = self.heads
        d = c // heads
        n = g.diagonal(dim1=1, dim2=2).sqrt().clamp_min(1e-12)  # F.normalize's eps
        logits = g[:, :c, c:] / (n[:, :c, None] * n[:, None, c:])
        # The per-head diagonal blocks of the c×c products: (b, heads, d, d).
        logits = logits.reshape(b, heads, d, heads, d).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2)
        attn = (logits * self.temperature.float()).softmax(dim=-1)
        proj = self.mdta_proj.float().view(c, heads, d)
        return torch.einsum("ohi,bhij->bohj", proj, attn).reshape(b, c, c).to(dtype)

    @staticmethod
    def mdta_apply(v: Tensor, m: Tensor) -> Tensor:
        """MDTA's output: the per-image matrix ``m`` applied to v at every pixel (v channels-last)."""
        b, c, h, w = v.shape
        if onnx_graph():
            return (m @ v.reshape(b, c, h * w)).reshape(b, c, h, w)
        y = v.permute(0, 2, 3, 1).reshape(b, h * w, c) @ m.transpose(1, 2)  # (b, hw, c)
        return y.view(b, h, w, c).permute(0, 3, 1, 2)


class _PhaseDilatedDepthwise(nn.Module):
    """A depthwise conv with dilation r as an undilated one on the r×r pixel phases (exact, zero padding).

    Pixels ``r`` apart form ``r²`` sub-images (``pixel_unshuffle``); a dilated kernel only ever combines
    pixels of one phase, so it is the plain kernel on each sub-image. oneDNN's dilated depthwise kernel is
    slow for large dilations (benchmarks/README.md).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        r, ch, k = conv.dilation[0], conv.out_channels, conv.kernel_size[0]
        self.r, self.k = r, k
        self.register_buffer("weight", conv.weight.detach().repeat_interleave(r * r, 0), persistent=False)
        self.register_buffer("bias", conv.bias.detach().repeat_interleave(r * r), persistent=False)
        self.groups = ch * r * r
        self.reach = r * (k // 2)  # the dilated conv's reach (for tiled execution)

    def forward(self, x: Tensor) -> Tensor:
        r = self.r
        if whole_graph():  # the padding below depends on the size; graph compilers pick their own kernel anyway
            return F.conv2d(x, self.weight[:: r * r], self.bias[:: r * r], padding=self.reach, dilation=r,
                            groups=self.groups // (r * r))
        h, w = x.shape[-2:]
        ph, pw = -h % r, -w % r
        if ph or pw:  # zeros beyond the border are what the dilated conv's zero padding reads anyway
            x = F.pad(x, (0, pw, 0, ph))
        y = F.conv2d(F.pixel_unshuffle(x, r), self.weight, self.bias, padding=self.k // 2, groups=self.groups)
        return F.pixel_shuffle(y, r)[..., :h, :w]


def _dilated_depthwise(conv: nn.Conv2d) -> nn.Module:
    # Dilation 2 runs fast directly; the phase form only pays off from dilation 3 (benchmarks/README.md).
    if conv.dilation[0] >= 3 and conv.groups == conv.in_channels == conv.out_channels:
        return _PhaseDilatedDepthwise(conv)
    return copy.deepcopy(conv)


class FusedLKSMN(InferenceForm):
    def __init__(self, net) -> None:
        super().__init__(net.info)
        self.shallow = copy.deepcopy(net.shallow)
        self.blocks = nn.ModuleList(FusedLKSMB(b) for b in net.blocks)
        self.mlfa_fuse = copy.deepcopy(net.mlfa.fuse)
        self.mlfa_conv = copy.deepcopy(net.mlfa.conv)
        self.upsampler = copy.deepcopy(net.upsampler)

    def forward(self, x: Tensor) -> Tensor:
        shallow = self.shallow(x.contiguous(memory_format=CL))
        if whole_graph():
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

    @property
    def stream_halo(self) -> int:
        return max(self._halos())

    def _halos(self) -> tuple[int, int, int]:
        """Context per side of the tiles of: a block's first pass (MSMA, then q|k for the Gram matrix), its
        second pass (v, then the MLP) and the output stage (shallow / MLFA conv, then the upsampler)."""
        blk = self.blocks[0]
        first = max(b.msma_reach for b in self.blocks) + conv_reach(blk.qk_dw)
        second = conv_reach(blk.v_dw) + conv_reach(blk.mlp_dw)
        last = max(conv_reach(self.shallow), conv_reach(self.mlfa_conv)) + conv_reach(self.upsampler[0])
        return first, second, last

    def output_stage(self, fused: Tensor, x: Tensor) -> Tensor:
        """The upsampled image from MLFA's fusion ``fused`` and the input ``x`` (the shallow features)."""
        return self.upsampler(self.mlfa_conv(fused).add_(self.shallow(x)))

    def forward_tiled(self, x: Tensor, tile: int, sink: Sink, progress: Progress | None = None,
                      run: StageRunner = eager) -> None:
        """``forward(x)`` layer by layer in tiles of at most ``tile`` pixels (see :class:`InferenceForm`); the
        per-tile stages go through ``run``.

        Kept for the whole image: the block input (later its output), the MSMA output x₁ and the MLFA sum
        (three ``C×H×W`` maps; the shallow features are recomputed from the input where needed). Per block,
        pass 1 writes x₁ and sums the Gram matrix of [q, k] over all tiles (in float32); pass 2 applies
        MDTA's now known C×C matrix and the MLP, and adds the block's share of MLFA's fusion.
        """
        check_batch(x)
        x = x.contiguous(memory_format=CL)
        _, _, h, w = x.shape
        c = self.mlfa_conv.in_channels
        grid = Grid(h, w, tile)
        first, second, last = self._halos()
        steps = Steps(progress, len(grid) * (2 * len(self.blocks) + 2))
        cur = feature_map(x, c, h, w)
        for t in grid:
            t.of(cur).copy_(t.core(run(self.shallow, "forward", t.read(x, 1)), 1))
            steps()
        x1 = torch.empty_like(cur)
        acc = torch.empty_like(cur)
        acc.copy_(self.mlfa_fuse.bias.view(1, c, 1, 1))
        fuse_w = self.mlfa_fuse.weight[:, :, 0, 0]
        for i, blk in enumerate(self.blocks):
            g = torch.zeros(1, 2 * c, 2 * c, dtype=torch.float32, device=x.device)
            for t in grid:
                y = t.shrink(run(blk, "msma", t.read(cur, first)), first, 1)  # x₁ on the core ± 1
                t.of(x1).copy_(t.core(y, 1))
                qk = t.core(run(blk, "qk_map", y.contiguous(memory_format=CL)), 1)
                qk = qk.permute(0, 2, 3, 1).reshape(-1, 2 * c).float()
                g[0].addmm_(qk.t(), qk)
                steps()
            m = blk.mdta_matrix(g)
            for t in grid:
                out = t.core(run(blk, "after_mdta", t.read(x1, second), m), second)
                t.of(cur).copy_(out)
                part = t.of(acc).permute(0, 2, 3, 1).reshape(-1, c)  # a copy unless the core spans whole rows
                part.addmm_(out.permute(0, 2, 3, 1).reshape(-1, c), fuse_w[:, i * c : (i + 1) * c].t())
                t.of(acc).copy_(part.view(1, t.r1 - t.r0, t.c1 - t.c0, c).permute(0, 3, 1, 2))
                steps()
        del x1, cur

        def output(t: Tile) -> Tensor:
            return run(self, "output_stage", t.read(acc, last), t.read(x, last))

        stream_rows(grid, last, output, self.scale, sink, steps)

