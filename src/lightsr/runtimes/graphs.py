"""What the graph runtimes share: the network as an ONNX graph, its cache, its per-tile stages and its seamed form.

A graph runtime (onnxruntime, OpenVINO) supplies two functions and :func:`graph_runtime` does the rest:

* ``whole(path, precision, device, threads, scale)`` → a callable running the whole network's graph on float
  ``N×3×H×W`` tensors;
* ``compile(path, precision, threads)`` → a :data:`GraphFn` running any graph on arrays (the per-tile stages and
  the seamed export).

**The graph.** The networks pad internally in data-dependent ways (to a multiple of their attention window, with
a loop for tiny inputs; or up to a minimum size; see ``ModelInfo.pad_multiple``/``min_input``), which tracing
would freeze at the dummy input's size. The graph therefore wraps the network (:class:`ShapeGenericWrapper`): the
wrapper pads the input itself with a gather whose indices are computed from the input's shape (the same mirror
rule as :func:`lightsr.models._common.mirror_pad`: periodic reflection, replication for a 1-pixel side), so the
traced network always receives a size it needs no padding for, and the output is cropped with shape-derived
bounds. The network's own code is unchanged; outputs are identical. :func:`write_graph` writes it with lightsr's
metadata (``arch``, ``scale``, ``config``, ``lightsr_version``), as ``lightsr export`` does.

**The cache.** The export is of the form the network's spec names (``graph_form``: the inference form, or the
training form where the graph runtimes run that faster), built on first use and cached in ``$LIGHTSR_HOME/exports``
(default ``~/.cache/lightsr``) under a key made of the weights' SHA-256, the network's config, the lightsr version
and the opset: other weights, a fine-tuned file or a new lightsr get their own export. A new export is checked
by the runtime that asked for it against the PyTorch network on image-like inputs at sizes it was not traced at
before it is kept (above :data:`EXPORT_ATOL` it is an error and nothing is kept).

**Exact tiles.** Networks that pool or attend over the whole image tile exactly by layer-streamed execution
(:mod:`lightsr.models._stream`): every per-tile stage of it is exported as a graph of its own (:func:`cached_stages`:
built, checked against the PyTorch network at tile sizes and image sizes it was not traced at, then cached like
the whole export) and :class:`StageGraphs` runs them. Networks whose tiles wrap around the image border
(``TilingSpec.wrap``) get a second export taking the seams as an input (:func:`cached_seamed_export`), which
places :class:`~lightsr.seams.SeamHooks`' zero gaps inside the graph.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightsr.errors import ExportError
from lightsr.models.base import SRNet
from lightsr.models.registry import model_spec
from lightsr.runtimes import artifacts
from lightsr.runtimes.base import Runtime, Seamed
from lightsr.seams import SeamHooks

EXPORT_ATOL = 1e-4
# Input sizes a graph is traced at, and those its check runs: neither the dummy's size nor a multiple of 16-pixel
# attention windows, one below a 15-pixel minimum input, and a batch of two.
DUMMY_SIZE = (37, 45)
CHECK_SHAPES = ((1, 3, 29, 53), (2, 3, 12, 20))

# Graph runner of one graph file: arrays in, arrays out.
GraphFn = Callable[..., list[np.ndarray]]
# compile(path, precision, threads) → a GraphFn
Compile = Callable[[Path, str, int | None], GraphFn]
# whole(path, precision, device, threads, scale) → the whole network's graph on float tensors
Whole = Callable[[Path, str, torch.device, int | None, int], Callable[[torch.Tensor], torch.Tensor]]


# ------------------------------------------------------------------------------------------------- the graph


def _mirror_index(n: torch.Tensor, multiple: int, minimum: int) -> torch.Tensor:
    """Source indices that mirror-pad an axis of length ``n`` (a 0-d tensor) up to the multiple/minimum."""
    target = torch.div(torch.clamp(n, min=minimum) + (multiple - 1), multiple, rounding_mode="floor") * multiple
    i = torch.arange(target, device=n.device)
    # Reflecting again and again (mirror_pad's rule) is the even periodic extension with period 2(n - 1);
    # a 1-pixel axis has period 1, i.e. replication.
    period = torch.clamp(2 * (n - 1), min=1)
    j = i % period
    return torch.where(j < n, j, period - j)


class ShapeGenericWrapper(nn.Module):
    """``model`` with its input padding done in a traceable, shape-generic way (see the module docstring)."""

    def __init__(self, model: SRNet) -> None:
        super().__init__()
        self.model = model
        self.scale = model.scale
        # The padding the network does by itself: (size multiple, minimum size), from its metadata.
        self.multiple, self.minimum = int(model.info.pad_multiple), int(model.info.min_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network on ``x`` mirror-padded to its size needs, output cropped back (sizes symbolic in a trace)."""
        shape = torch._shape_as_tensor(x)  # traced as an ONNX Shape op, so sizes stay symbolic
        h, w = shape[2], shape[3]
        x = x.index_select(2, _mirror_index(h, self.multiple, self.minimum))
        x = x.index_select(3, _mirror_index(w, self.multiple, self.minimum))
        y = self.model(x)
        return y[:, :, : h * self.scale, : w * self.scale]


def cpu_fp32(model: SRNet, copy_always: bool = False) -> SRNet:
    """``model`` in float32 eval mode on the CPU: a copy when that would change the caller's network, or always
    (``copy_always``: graphs built later from the weights as they are now, whatever becomes of the caller's)."""
    p = next(model.parameters(), None)
    if copy_always or model.training or (p is not None and (p.device.type != "cpu" or p.dtype != torch.float32)):
        model = copy.deepcopy(model)
    return model.to("cpu", torch.float32).eval()


@contextlib.contextmanager
def _stdout_to_devnull() -> Iterator[None]:
    """Silence file descriptor 1: on a failure torch's C++ exporter prints the whole traced graph there
    (hundreds of KB) before raising; the one-line error is what users need."""
    if sys.stdout is not None:
        sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1 (a service, pythonw): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def write_graph(model: SRNet, path: Path, opset: int) -> None:
    """``model`` (float32, CPU, eval mode) as an ONNX graph at ``path``: dynamic batch, height and width,
    lightsr's metadata, checked by ``onnx.checker``."""
    import onnx

    from lightsr._version import __version__

    wrapper = ShapeGenericWrapper(model).eval()
    dummy = torch.rand(1, 3, *DUMMY_SIZE, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(), torch.no_grad(), _stdout_to_devnull():
        # Tracer warnings about Python booleans come from branches the wrapper makes constant by design
        # (the padded input always has the size the network wants).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (dummy,), str(path), dynamo=False, opset_version=opset,
            input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                          "output": {0: "batch", 2: "out_height", 3: "out_width"}},
        )
    proto = onnx.load(str(path))
    info = model.info
    meta = {"arch": info.arch, "scale": str(info.scale), "config": json.dumps(info.config),
            "lightsr_version": __version__, "input": "RGB float32 in [0, 1], N×3×H×W, any H, W ≥ 1"}
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.doc_string = f"lightsr {info.arch} ×{info.scale}"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def image_like(g: torch.Generator, n: int, h: int, w: int) -> torch.Tensor:
    """Random but image-like inputs for the checks (coarse noise, bicubic-upsampled): on i.i.d. pixel noise
    windowed un-normalised attention is chaotic — PyTorch's own float32 output differs from its float64 one by
    ~100 — so no two float32 runtimes could agree there, whatever the graph."""
    coarse = torch.rand(n, 3, max(h // 4, 2), max(w // 4, 2), generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def compare_graph(model: SRNet, run: Callable[[torch.Tensor], torch.Tensor], path: Path,
                  shapes: tuple[tuple[int, int, int, int], ...] = CHECK_SHAPES, runner: str = "the graph"
                  ) -> dict[tuple[int, ...], float]:
    """Largest absolute difference between ``run`` (a runtime of the graph at ``path``) and the PyTorch network
    per input shape (:func:`image_like` inputs); an output of another size is an :class:`ExportError`."""
    g = torch.Generator().manual_seed(1)
    out = {}
    model = cpu_fp32(model)
    for shape in shapes:
        x = image_like(g, shape[0], shape[2], shape[3])
        with torch.no_grad():
            ref = model(x)
        y = run(x)
        if y.shape != ref.shape:
            raise ExportError(f"{path}: {runner} output {tuple(y.shape)} for input {shape}, "
                              f"PyTorch {tuple(ref.shape)}")
        out[shape] = float((y - ref).abs().max())
    return out


# ------------------------------------------------------------------------------------------------- the cache


def weights_key(model: SRNet, opset: int) -> str:
    """What identifies an export: the network, its config, every tensor, the lightsr version and the opset."""
    from lightsr._version import __version__

    h = hashlib.sha256()
    info = model.info
    h.update(json.dumps([info.arch, info.scale, info.config, __version__, opset], sort_keys=True,
                        default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def export_dir() -> Path:
    """Where the graph runtimes cache their exports: ``$LIGHTSR_HOME/exports``, created and checked to be
    writable (else a one-line :class:`~lightsr.errors.CacheError` naming it and the fix)."""
    from lightsr.cache import usable_folder

    return usable_folder("exports")


def built_from(model: SRNet, kind: str, opset: int) -> dict[str, Any]:
    """What a cached graph of ``model`` is made from, as its manifest records it."""
    from lightsr._version import __version__

    return {"kind": kind, "arch": model.info.arch, "scale": model.info.scale, "weights": weights_key(model, opset),
            "opset": opset, "lightsr_version": __version__}


def cached_export(model: SRNet, whole: Whole, opset: int = 17) -> Path:
    """The ONNX export of ``model`` in its spec's ``graph_form`` (the inference form, :meth:`SRNet.fuse`, or the
    training form), checked on first use by the runtime ``whole`` opens (float32, CPU) against the training form,
    then reused."""
    form = model_spec(model.info.arch).graph_form

    def build(tmp: Path) -> None:
        net = cpu_fp32(model)
        write_graph(cpu_fp32(net.fuse()) if form == "fused" else net, tmp, opset)
        run = whole(tmp, "fp32", torch.device("cpu"), None, model.scale)
        worst = max(compare_graph(model, run, tmp).values())
        if not worst <= EXPORT_ATOL:
            raise ExportError(f"{tmp}: the backend differs from PyTorch by {worst:.3g} (> {EXPORT_ATOL:g})")

    name = f"{model.info.arch}_x{model.info.scale}-{form}-{weights_key(model, opset)[:20]}.onnx"
    return artifacts.cached(export_dir() / name, built_from(model, f"{form} export", opset), build)


# ------------------------------------------------------------------------------- streamed stages as graphs

# The check of a new set of stage graphs: (image height, width, tile), sizes the export was not traced at; the
# export traces at STAGE_TRACE. Both give several tiles with edge tiles of other sizes than the inner ones.
STAGE_TRACE = (37, 29, 16)
STAGE_CHECKS = ((45, 61, 20), (26, 33, 11))


class _Stage(torch.nn.Module):
    """One stage (``owner.method``) as a module the ONNX exporter can trace."""

    def __init__(self, owner: torch.nn.Module, method: str) -> None:
        super().__init__()
        self.owner, self.method = owner, method

    def forward(self, *args: torch.Tensor) -> Any:
        return getattr(self.owner, self.method)(*args)


def _stage_names(form: torch.nn.Module) -> dict[int, str]:
    return {id(m): name or "net" for name, m in form.named_modules()}


class _StageExporter:
    """A :data:`~lightsr.models._stream.StageRunner` that exports each stage the first time it runs (traced at
    that call's tensors, height and width dynamic) and computes it in PyTorch."""

    def __init__(self, form: torch.nn.Module, folder: Path, opset: int) -> None:
        self.names, self.folder, self.opset = _stage_names(form), folder, opset
        self.done: list[str] = []

    def __call__(self, owner: torch.nn.Module, method: str, *args: torch.Tensor) -> Any:
        name = f"{self.names[id(owner)]}.{method}"
        outs = getattr(owner, method)(*args)  # the stages never write into their inputs
        if name not in self.done:
            n_out = len(outs) if isinstance(outs, tuple) else 1
            axes = {f"in{i}": {2: f"h{i}", 3: f"w{i}"} for i, a in enumerate(args) if a.ndim == 4}
            axes.update({f"out{i}": {2: f"oh{i}", 3: f"ow{i}"} for i in range(n_out)})
            with warnings.catch_warnings():
                # Tracer warnings about Python values: the check of the whole set at other sizes catches any
                # that would matter.
                warnings.simplefilter("ignore")
                torch.onnx.export(_Stage(owner, method), args, str(self.folder / f"{name}.onnx"), dynamo=False,
                                  opset_version=self.opset, input_names=[f"in{i}" for i in range(len(args))],
                                  output_names=[f"out{i}" for i in range(n_out)], dynamic_axes=axes)
            self.done.append(name)
        return outs


class StageGraphs:
    """A :data:`~lightsr.models._stream.StageRunner` running each stage's graph from ``folder`` (see
    :func:`cached_stages`) with ``compile(path)`` → a :data:`GraphFn`; graphs are compiled on first use."""

    def __init__(self, form: torch.nn.Module, folder: Path, compile: Callable[[Path], GraphFn]) -> None:
        self.names, self.folder, self.compile = _stage_names(form), folder, compile
        self.graphs: dict[str, GraphFn] = {}

    def __call__(self, owner: torch.nn.Module, method: str, *args: torch.Tensor) -> Any:
        name = f"{self.names[id(owner)]}.{method}"
        graph = self.graphs.get(name)
        if graph is None:
            graph = self.graphs[name] = self.compile(self.folder / f"{name}.onnx")
        outs = graph(*(a.detach().to("cpu", torch.float32).contiguous().numpy() for a in args))
        res = tuple(torch.from_numpy(o) for o in outs)
        return res[0] if len(res) == 1 else res


def _streamed_rows(form: torch.nn.Module, x: torch.Tensor, tile: int, run: Any) -> torch.Tensor:
    rows: list[torch.Tensor] = []
    form.forward_tiled(x, tile, lambda _y0, block: rows.append(block.clone()), run=run)
    return torch.cat(rows, 1)


def cached_stages(model: SRNet, form: torch.nn.Module, compile: Compile, runner: str = "the runtime",
                  opset: int = 17) -> Path:
    """The folder of graphs of the per-tile stages of ``form`` (``model``'s float32 CPU inference form) for the
    graph runtimes: exported on first use by tracing them on an image with several tiles, kept only once
    ``compile`` (in float32) running all of them tile by tile matches the training form on images and tiles of
    other sizes within :data:`EXPORT_ATOL`; cached like :func:`cached_export`."""
    folder = export_dir() / f"{model.info.arch}_x{model.info.scale}-stages-{weights_key(model, opset)[:20]}"

    def build(tmp: Path) -> None:
        g = torch.Generator().manual_seed(2)
        h, w, tile = STAGE_TRACE
        exporter = _StageExporter(form, tmp, opset)
        with torch.no_grad():
            _streamed_rows(form, torch.rand(1, 3, h, w, generator=g), tile, exporter)
            stages = StageGraphs(form, tmp, lambda path: compile(path, "fp32", None))
            for h, w, tile in STAGE_CHECKS:
                x = image_like(g, 1, h, w)
                err = float((_streamed_rows(form, x, tile, stages) - model(x)[0]).abs().max())
                if not err <= EXPORT_ATOL:
                    raise ExportError(f"{folder}: {runner} running the tiles' stages differs from PyTorch by "
                                      f"{err:.3g} (> {EXPORT_ATOL:g}) on {h}×{w} in tiles of {tile}")

    return artifacts.cached(folder, built_from(model, "stage graphs", opset), build, folder=True,
                            what="cached stage graphs")


# ------------------------------------------------------------------------------------ wrap-mode seams as input

# A seam index at or beyond the tile's size: no seam on that axis.
NO_SEAM = 1 << 30
# (batch, height, width, seam row, seam column) of the seamed export's check, none of them its trace's.
SEAM_TRACE = (32, 48, 16, 32)
SEAM_CHECKS = ((1, 48, 32, 32, None), (2, 32, 64, None, 16), (1, 16, 16, 0, 0))


class _Seamed(torch.nn.Module):
    """``form`` (padding its input as its export does) with wrap mode's seams as a second input, int64
    ``[row, column]``: :class:`~lightsr.seams.SeamHooks` with tensor seams, traced into the graph."""

    def __init__(self, form: torch.nn.Module) -> None:
        super().__init__()
        self.inner = ShapeGenericWrapper(form)
        self.hooks = SeamHooks(form)

    def forward(self, x: torch.Tensor, seams: torch.Tensor) -> torch.Tensor:
        self.hooks.seams = (seams[0], seams[1])
        with self.hooks:
            return self.inner(x)


def _seam_tensor(seams: tuple[int | None, int | None]) -> np.ndarray:
    return np.array([NO_SEAM if s is None else s for s in seams], dtype=np.int64)


def cached_seamed_export(model: SRNet, compile: Compile, runner: str = "the runtime", opset: int = 17) -> Path:
    """The export of ``model``'s inference form taking wrap mode's seams as a second input, built and checked
    like :func:`cached_export`: ``compile`` (float32) on tiles with and without seams, at sizes it was not traced
    at, within :data:`EXPORT_ATOL` of the PyTorch form under :class:`~lightsr.seams.SeamHooks`."""
    name = f"{model.info.arch}_x{model.info.scale}-fused-seamed-{weights_key(model, opset)[:20]}.onnx"

    def build(tmp: Path) -> None:
        form = cpu_fp32(model, copy_always=True).fuse()
        g = torch.Generator().manual_seed(3)
        h, w, row, col = SEAM_TRACE
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings: the check below runs other sizes and seams
            torch.onnx.export(_Seamed(form).eval(), (torch.rand(1, 3, h, w, generator=g),
                                                     torch.tensor([row, col])), str(tmp), dynamo=False,
                              opset_version=opset, input_names=["input", "seams"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                            "output": {0: "batch", 2: "out_height", 3: "out_width"}})
        run = compile(tmp, "fp32", None)
        hooks = SeamHooks(form)
        for n, h, w, row, col in SEAM_CHECKS:
            x = image_like(g, n, h, w)
            hooks.seams = (row, col)
            with torch.no_grad(), hooks:
                ref = form(x)
            got = torch.from_numpy(run(x.numpy(), _seam_tensor((row, col)))[0])
            err = float((got - ref).abs().max()) if got.shape == ref.shape else float("inf")
            if not err <= EXPORT_ATOL:
                raise ExportError(f"{export_dir() / name}: {runner} with seams {row}, {col} differs from PyTorch "
                                  f"by {err:.3g} (> {EXPORT_ATOL:g}) on {h}×{w}")

    return artifacts.cached(export_dir() / name, built_from(model, "seamed export", opset), build)


# ------------------------------------------------------------------------------------------------ the runtime


def _graph_seams(model: SRNet, precision: str, threads: int | None, compile: Compile, runner: str
                 ) -> Seamed | None:
    """``seamed(x, seams)`` running the seamed export (built on the first call), or None where the network's tiles
    do not wrap."""
    if not model_spec(model.info.arch).tiling.wrap:
        return None
    model = cpu_fp32(model, copy_always=True)
    graph: GraphFn | None = None

    def seamed(x: torch.Tensor, seams: tuple[int | None, int | None]) -> torch.Tensor:
        nonlocal graph
        if graph is None:
            graph = compile(cached_seamed_export(model, compile, runner), precision, threads)
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(graph(arr, _seam_tensor(seams))[0])

    return seamed


def _graph_streaming(model: SRNet, precision: str, threads: int | None, compile: Compile, runner: str
                     ) -> Callable[..., None] | None:
    """``forward_tiled`` running its stages as graphs (built on the first call), or None where the network does
    not stream (its tiles are blended)."""
    if not model_spec(model.info.arch).tiling.global_context:
        return None
    reference = cpu_fp32(model, copy_always=True)
    form = reference.fuse()
    if getattr(form, "forward_tiled", None) is None:
        return None
    stages: StageGraphs | None = None

    def forward_tiled(x: torch.Tensor, tile: int, sink: Callable, progress: Callable | None = None) -> None:
        nonlocal stages
        if stages is None:
            folder = cached_stages(reference, form, compile, runner)
            stages = StageGraphs(form, folder, lambda path: compile(path, precision, threads))
        with torch.no_grad():
            form.forward_tiled(x.to("cpu", torch.float32), tile, sink, progress, run=stages)

    return forward_tiled


def graph_runtime(model: SRNet, precision: str, device: torch.device, threads: int | None, whole: Whole,
                  compile: Compile, runner: str, tiles: bool = True) -> Runtime:
    """``model``'s cached export run by ``whole``, with exact tiles (stage graphs, the seamed export) run by
    ``compile`` where the network has them and ``tiles`` (the runtime runs such graphs on ``device``).
    ``runner`` names the runtime in the checks' errors."""
    path = cached_export(model, whole)
    forward = whole(path, precision, device, threads, model.scale)
    return Runtime(forward, model.scale, model.arch, precision, device, path=path,
                   forward_tiled=_graph_streaming(model, precision, threads, compile, runner) if tiles else None,
                   seamed=_graph_seams(model, precision, threads, compile, runner) if tiles else None)
