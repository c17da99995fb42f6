"""Pieces shared by the inference forms (``<arch>/fused.py``): folding affine maps into convolutions, layouts.

An inference form computes the same function as its training form (≤ 1e-4), rearranged for speed: affine maps
folded into neighbouring linear layers, sibling 1×1 convolutions merged, everything channels-last so that 1×1
convolutions are plain matrix products and layout changes are views.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CL = torch.channels_last

# Pixels per chunk of the per-pixel stages done in cache-sized pieces (see benchmarks/README.md).
CHUNK = 1024


def conv_from(weight: Tensor, bias: Tensor | None, **kw) -> nn.Conv2d:
    """An ``nn.Conv2d`` holding the given weights (a zero bias when ``bias`` is None)."""
    out_c, in_per_group, kh, kw_ = weight.shape
    groups = kw.pop("groups", 1)
    conv = nn.Conv2d(in_per_group * groups, out_c, (kh, kw_), groups=groups, bias=True, **kw)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias if bias is not None else torch.zeros(out_c))
    return conv


def whole_graph() -> bool:
    """True while tracing for ONNX or compiling: a Python loop over chunks (or an index cached per image size)
    would be frozen at the traced size, and those compilers fuse the per-pixel stages themselves."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def onnx_graph() -> bool:
    """True while tracing for ONNX: the graph has no memory format, so channels-last views become whole-map
    transposes and channel slices become splits (benchmarks/README.md, graph forms); ``torch.compile`` keeps
    strides and is not included."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def fold_pre_affine(conv: nn.Conv2d, gamma: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """Weights of ``conv(γ·x + β)`` as a single 1×1 conv of ``x``."""
    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[0])
    return w * gamma.view(1, -1, 1, 1), b + w[:, :, 0, 0] @ beta


def layer_norm_cl(x: Tensor, c: int, eps: float) -> Tensor:
    """Affine-free LayerNorm over the ``c`` channels of a channels-last tensor (in eager mode a view in and out,
    no copy; ``c`` is a plain int, not read from ``x.shape``, so that a trace keeps it constant).

    In an ONNX graph (:func:`onnx_graph`) it is written as reductions over the channel axis instead of around
    permuted views, which would become two transposes of the whole map there.
    """
    if onnx_graph():
        d = x - x.mean(1, keepdim=True)
        return d / torch.sqrt(d.pow(2).mean(1, keepdim=True) + eps)
    return F.layer_norm(x.permute(0, 2, 3, 1), (c,), eps=eps).permute(0, 3, 1, 2)
