"""Wrap mode's seams: a network's 'same' convolutions zero-padded at the image border inside wrapped tiles.

Tiles of networks whose attention wraps around the image (``TilingSpec.wrap``) continue past the border with the
opposite border's pixels; :class:`SeamHooks` makes every convolution treat that crossing as the border it is.
On their own here (torch only), so that both :mod:`lightsr.tiling` and the graph runtimes
(:mod:`lightsr.runtimes.graphs`, which traces the hooks into an export taking the seams as an input) can use them.
"""

from __future__ import annotations

import torch


def insert_gap(t: torch.Tensor, dim: int, at: torch.Tensor, gap: int) -> torch.Tensor:
    """``gap`` zero slices inserted along ``dim`` before index ``at`` (a 0-d int64 tensor; at or beyond the
    length: none inside, the zeros go after the end, where a 'same' convolution reads zero padding anyway).

    The tensor form of what :class:`SeamHooks` does with Python ints, as index arithmetic on the traced
    shape, so an exported graph takes the seams as an input and works at any size.
    """
    n = torch._shape_as_tensor(t)[dim]
    at = torch.minimum(at, n)
    p = torch.arange(n + gap, device=t.device)
    src = torch.where(p < at, p, torch.where(p < at + gap, n, p - gap))  # index n: the zero slice appended
    return torch.cat([t, torch.zeros_like(t.narrow(dim, 0, 1))], dim).index_select(dim, src)


def remove_gap(t: torch.Tensor, dim: int, at: torch.Tensor, gap: int) -> torch.Tensor:
    """The inverse of :func:`insert_gap` on a 'same' convolution's output."""
    n = torch._shape_as_tensor(t)[dim] - gap
    q = torch.arange(n, device=t.device)
    return t.index_select(dim, torch.where(q < torch.minimum(at, n), q, q + gap))


class SeamHooks:
    """Make a network treat a wrapped window's border crossing like the image border it stands for.

    In wrap mode a window at the image border continues with pixels from the opposite border, because the
    network's attention (e.g. cyclically shifted windows, ``torch.roll`` over the whole padded image) mixes the
    two borders. Its convolutions, however, zero-pad at the image border. While active, these hooks insert zero
    rows/columns at the seams in front of every spatial convolution (``padding`` of them, the conv's reach) and
    remove the corresponding output positions after it, so convolutions see zero padding at the seam while
    attention sees the wrapped pixels. Only modules whose spatial reach is a plain 'same' convolution are hooked:
    ``nn.Conv2d`` with a kernel > 1 and stride 1, and modules that declare their reach in a ``seam_reach``
    attribute (e.g. a shift by one pixel with zero fill). A module that sets ``handles_seams = True`` places the
    seams itself, more cheaply than by copies: while the hooks are active its ``seams`` attribute holds the
    current ``(row, column)`` (ints or None; 0-d tensors when traced, a value ≥ the size meaning none).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.seams: tuple[int | None, int | None] = (None, None)
        self.targets: list[tuple[torch.nn.Module, int]] = []
        self.aware: list[torch.nn.Module] = []
        for m in model.modules():
            reach = getattr(m, "seam_reach", None)
            if getattr(m, "handles_seams", False):
                self.aware.append(m)
            elif reach is not None:
                self.targets.append((m, int(reach)))
            elif isinstance(m, torch.nn.Conv2d) and max(m.kernel_size) > 1:
                if m.stride != (1, 1) or not isinstance(m.padding, tuple):
                    raise ValueError(f"cannot place seams around {m}")
                self.targets.append((m, max(m.padding) * max(m.dilation)))
        self._handles: list = []

    def __enter__(self) -> SeamHooks:
        for m, gap in self.targets:
            self._handles.append(m.register_forward_pre_hook(lambda _m, args, g=gap: self._open(args, g)))
            self._handles.append(m.register_forward_hook(lambda _m, _a, out, g=gap: self._close(out, g)))
        for m in self.aware:
            self._handles.append(m.register_forward_pre_hook(lambda m, _a: setattr(m, "seams", self.seams)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for m in self.aware:
            m.seams = (None, None)

    def _open(self, args: tuple, gap: int) -> tuple | None:
        row, col = self.seams
        if row is None and col is None:
            return None
        t = args[0]
        if isinstance(row, torch.Tensor):  # traced for a graph backend: see insert_gap
            return (insert_gap(insert_gap(t, -2, row, gap), -1, col, gap), *args[1:])
        if row is not None:
            t = torch.cat([t[..., :row, :], t.new_zeros(*t.shape[:-2], gap, t.shape[-1]), t[..., row:, :]], -2)
        if col is not None:
            t = torch.cat([t[..., :col], t.new_zeros(*t.shape[:-1], gap), t[..., col:]], -1)
        return (t, *args[1:])

    def _close(self, out: torch.Tensor, gap: int) -> torch.Tensor | None:
        row, col = self.seams
        if row is None and col is None:
            return None
        if isinstance(row, torch.Tensor):
            return remove_gap(remove_gap(out, -2, row, gap), -1, col, gap)
        if row is not None:
            out = torch.cat([out[..., :row, :], out[..., row + gap:, :]], -2)
        if col is not None:
            out = torch.cat([out[..., :col], out[..., col + gap:]], -1)
        return out
