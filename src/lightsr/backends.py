"""Inference runtimes: PyTorch, and onnxruntime or OpenVINO running the network's ONNX export.

:func:`build` turns a network into a :class:`Runtime` — float32 ``N×3×H×W`` in [0, 1] in, ``N×3×sH×sW`` out —
on the backend and precision asked for; :class:`~lightsr.upscaler.Upscaler` (``backend=``), ``lightsr eval`` and
``lightsr profile`` run it.

* ``torch``: the inference form (:meth:`SRNet.fuse`) in the chosen dtype.
* ``onnxruntime``: the export, float32 (its CPU kernels have no bf16 path for these graphs).
* ``openvino``: the export compiled by OpenVINO for the CPU, f32 or bf16 (its inference precision hint;
  bf16 where the CPU has AMX or AVX512-BF16). Compiled blobs are cached by OpenVINO itself (``CACHE_DIR``), per
  graph and precision.

The export is of the form the network's spec names (``graph_form``: the inference form, or the training form
where the graph runtimes run that faster), built on first use and cached in ``$LIGHTSR_HOME/exports`` (default
``~/.cache/lightsr``) under a key made of the weights' SHA-256, the network's config, the lightsr version and the
opset: other weights, a fine-tuned file or a new lightsr get their own export. A new export is checked against
the PyTorch network on image-like inputs at sizes it was not traced at before it is kept (above 1e-4 it is an
error and nothing is kept). ``onnx``/``onnxruntime`` (``lightsr[onnx]``) and ``openvino`` (``lightsr[openvino]``)
are optional; a missing one is a one-line error naming the extra.

Networks that pool or attend over the whole image tile exactly by layer-streamed execution
(:mod:`lightsr.models._stream`). On the graph backends every per-tile stage of it is exported as a graph of its
own (:func:`cached_stages`: built, checked against the PyTorch network at tile sizes and image sizes it was not
traced at, then cached like the whole export) and :class:`StageGraphs` runs them, so tiled output matches the
whole image there as on the torch backend. Networks whose tiles wrap around the image border
(``TilingSpec.wrap``) get a second export taking the seams as an input (:func:`cached_seamed_export`), which
places :class:`~lightsr.seams.SeamHooks`' zero gaps inside the graph.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightsr.device import (
    BACKEND_PRECISIONS,
    BACKENDS,
    auto_precision,
    native_bf16,
    resolve_device,
    resolve_precision,
)
from lightsr.errors import UsageError, first_line
from lightsr.models.base import SRNet

EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}
EXPORT_ATOL = 1e-4


@dataclass
class Runtime:
    """A network ready to run; ``runtime(x)`` maps float32 ``N×3×H×W`` to float32 ``N×3×sH×sW`` on the CPU
    (torch: on :attr:`device`)."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    scale: int
    arch: str | None
    backend: str
    precision: str
    device: torch.device
    module: torch.nn.Module | None = None  # the PyTorch network (torch backend only)
    path: Path | None = None  # the ONNX file (other backends)
    # The layer-streamed execution (InferenceForm.forward_tiled's signature) where the network has one
    forward_tiled: Callable[..., None] | None = None
    # seamed(x, (row, column)): a wrap-mode tile with its seams (None: none on that axis), where the network wraps
    seamed: Callable[[torch.Tensor, tuple[int | None, int | None]], torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


def _require_backend(backend: str) -> None:
    import importlib.util

    module = {"onnxruntime": "onnxruntime", "openvino": "openvino"}[backend]
    needs = [m for m in (module, "onnx") if importlib.util.find_spec(m) is None]
    if needs:
        raise UsageError(f"--backend {backend} needs {' and '.join(needs)}: pip install 'lightsr[{EXTRAS[backend]}]'")


def check_backend(backend: str) -> None:
    """One-line :class:`UsageError` for an unknown backend or one whose packages are missing."""
    if backend not in BACKENDS:
        raise UsageError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend != "torch":
        _require_backend(backend)


def backend_precision(backend: str, precision: str, device: torch.device,
                      supported: tuple[str, ...] = ("fp32", "bf16", "fp16")) -> str:
    """The precision ``backend`` runs ``precision`` in (``auto`` resolved), or a one-line error."""
    have = tuple(p for p in BACKEND_PRECISIONS[backend] if p in supported)
    if precision == "auto":
        return auto_precision(device, have)
    resolve_precision(precision, device, supported)  # the generic errors first (unknown name, fp16 on CPU)
    if precision not in have:
        raise UsageError(f"--precision {precision}: --backend {backend} runs {', '.join(have)}")
    return precision


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
    from lightsr.cache import home

    return home() / "exports"


def cached_export(model: SRNet, backend: str, opset: int = 17) -> Path:
    """The ONNX export of ``model`` in its spec's ``graph_form`` (the inference form, :meth:`SRNet.fuse`, or the
    training form), built and checked by ``backend`` against the training form on first use, then reused."""
    from lightsr.export import export_onnx
    from lightsr.models.registry import model_spec

    form = model_spec(model.info.arch).graph_form

    def build(tmp: Path) -> None:
        export_onnx(model.fuse() if form == "fused" else model, tmp, opset=opset, check=False)
        # Checked by the runtime that will run it (onnxruntime when run is None), against the training form.
        _check(model, None if backend == "onnxruntime" else OpenVinoModel(tmp, "fp32", model.scale), tmp)

    return _cached_file(f"{model.info.arch}_x{model.info.scale}-{form}-{weights_key(model, opset)[:20]}.onnx",
                        build)


def _cached_file(name: str, build: Callable[[Path], None]) -> Path:
    """``export_dir() / name``, made by ``build(tmp)`` first if it is not there yet.

    Built and checked under a name of this process, then renamed: a killed build or a concurrent one never
    leaves an unchecked file where the next run would trust it.
    """
    folder = export_dir()
    path = folder / name
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{path.stem}.{os.getpid()}{path.suffix}"
    try:
        build(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _image_like(g: torch.Generator, n: int, h: int, w: int) -> torch.Tensor:
    """Random but image-like inputs for the checks (see :func:`lightsr.export.check_onnx` for why)."""
    coarse = torch.rand(n, 3, max(h // 4, 2), max(w // 4, 2), generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic").clamp(0, 1)


def _check(model: SRNet, run: Callable[[torch.Tensor], torch.Tensor] | None, path: Path) -> None:
    from lightsr.export import ExportError, check_onnx

    errors = check_onnx(model, path, run=run)
    worst = max(errors.values())
    if not worst <= EXPORT_ATOL:
        raise ExportError(f"{path}: the backend differs from PyTorch by {worst:.3g} (> {EXPORT_ATOL:g})")


class OpenVinoModel:
    """An ONNX export compiled by OpenVINO for the CPU: ``model(x)`` maps float ``N×3×H×W`` to ``N×3×sH×sW``."""

    def __init__(self, path: str | os.PathLike, precision: str, scale: int, threads: int | None = None) -> None:
        self.path, self.scale = Path(path), scale
        self.graph = OpenVinoGraph(self.path, precision, threads)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = torch.from_numpy(self.graph(arr)[0])
        n, _, h, w = arr.shape
        if tuple(out.shape) != (n, 3, h * self.scale, w * self.scale):
            raise RuntimeError(f"{self.path}: OpenVINO returned {tuple(out.shape)} for {tuple(arr.shape)}")
        return out


@functools.cache
def _openvino_core() -> Any:
    """One OpenVINO core for the process, never freed: once the last core went (and its CPU plugin with it), the
    next signal the process handled (SIGTERM, SIGINT) crashed it with SIGSEGV."""
    import openvino as ov

    return ov.Core()


class OpenVinoGraph:
    """A graph compiled by OpenVINO for the CPU in ``precision``, with its infer request (the compiled model
    stays referenced as long as the request)."""

    def __init__(self, path: Path, precision: str, threads: int | None = None) -> None:
        from lightsr.export import OnnxModelError

        config = {
            # f32 must be asked for: on CPUs with native bf16 OpenVINO otherwise picks bf16 by itself.
            "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
            "CACHE_DIR": str(export_dir() / "openvino"),  # compiled blobs, reused by later runs
        }
        try:
            self.compiled = _openvino_core().compile_model(str(path), "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError subclasses of its own for unreadable graphs
            raise OnnxModelError(f"{path}: OpenVINO cannot compile it ({first_line(e, 200)})") from None
        self.request = self.compiled.create_infer_request()
        self.n_outputs = len(self.compiled.outputs)

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        self.request.infer(dict(enumerate(arrays)))
        return [self.request.get_output_tensor(i).data.copy() for i in range(self.n_outputs)]


# ------------------------------------------------------------------------------- streamed stages as graphs

# Graph runner of one stage file: arrays in, arrays out.
GraphFn = Callable[..., list[np.ndarray]]
# The check of a new set of stage graphs: (image height, width, tile), sizes the export was not traced at; the
# export traces at STAGE_TRACE. Both give several tiles with edge tiles of other sizes than the inner ones.
STAGE_TRACE = (37, 29, 16)
STAGE_CHECKS = ((45, 61, 20), (26, 33, 11))
STAGES_MANIFEST = "stages.json"


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


def _graph_fn(backend: str, precision: str, threads: int | None) -> Callable[[Path], GraphFn]:
    """How ``backend`` compiles one stage file."""
    if backend == "openvino":
        return lambda path: OpenVinoGraph(path, precision, threads)

    def compile_ort(path: Path) -> GraphFn:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        # Many sessions take turns here (one per stage, or beside the whole graph's): threads that spin after
        # their work kept the cores from the next session (benchmarks/README.md).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run(*arrays: np.ndarray) -> list[np.ndarray]:
            return session.run(None, dict(zip(names, arrays, strict=True)))

        return run

    return compile_ort


def _streamed_rows(form: torch.nn.Module, x: torch.Tensor, tile: int, run: Any) -> torch.Tensor:
    rows: list[torch.Tensor] = []
    form.forward_tiled(x, tile, lambda _y0, block: rows.append(block.clone()), run=run)
    return torch.cat(rows, 1)


def cached_stages(model: SRNet, form: torch.nn.Module, backend: str, opset: int = 17) -> Path:
    """The folder of graphs of the per-tile stages of ``form`` (``model``'s float32 CPU inference form) for the
    graph backends: exported on first use by tracing them on an image with several tiles, kept only once
    ``backend`` (in float32) running all of them tile by tile matches the training form on images and tiles of
    other sizes within :data:`EXPORT_ATOL`; cached like :func:`cached_export`."""
    from lightsr.export import ExportError

    folder = export_dir() / f"{model.info.arch}_x{model.info.scale}-stages-{weights_key(model, opset)[:20]}"
    if (folder / STAGES_MANIFEST).is_file():
        return folder
    tmp = folder.parent / f".{folder.name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        g = torch.Generator().manual_seed(2)
        h, w, tile = STAGE_TRACE
        exporter = _StageExporter(form, tmp, opset)
        with torch.no_grad():
            _streamed_rows(form, torch.rand(1, 3, h, w, generator=g), tile, exporter)
            runner = StageGraphs(form, tmp, _graph_fn(backend, "fp32", None))
            for h, w, tile in STAGE_CHECKS:
                x = _image_like(g, 1, h, w)
                err = float((_streamed_rows(form, x, tile, runner) - model(x)[0]).abs().max())
                if not err <= EXPORT_ATOL:
                    raise ExportError(f"{folder}: {backend} running the tiles' stages differs from PyTorch by "
                                      f"{err:.3g} (> {EXPORT_ATOL:g}) on {h}×{w} in tiles of {tile}")
        (tmp / STAGES_MANIFEST).write_text(json.dumps({"stages": exporter.done}))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same folder first: its graphs are the same
            if not (folder / STAGES_MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


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
        from lightsr.export import ShapeGenericWrapper
        from lightsr.seams import SeamHooks

        super().__init__()
        self.inner = ShapeGenericWrapper(form)
        self.hooks = SeamHooks(form)

    def forward(self, x: torch.Tensor, seams: torch.Tensor) -> torch.Tensor:
        self.hooks.seams = (seams[0], seams[1])
        with self.hooks:
            return self.inner(x)


def _seam_tensor(seams: tuple[int | None, int | None]) -> np.ndarray:
    return np.array([NO_SEAM if s is None else s for s in seams], dtype=np.int64)


def cached_seamed_export(model: SRNet, backend: str, opset: int = 17) -> Path:
    """The export of ``model``'s inference form taking wrap mode's seams as a second input, built and checked
    like :func:`cached_export`: ``backend`` (float32) on tiles with and without seams, at sizes it was not traced
    at, within :data:`EXPORT_ATOL` of the PyTorch form under :class:`~lightsr.seams.SeamHooks`."""
    from lightsr.export import ExportError
    from lightsr.seams import SeamHooks

    name = f"{model.info.arch}_x{model.info.scale}-fused-seamed-{weights_key(model, opset)[:20]}.onnx"

    def build(tmp: Path) -> None:
        form = _cpu_fp32_copy(model).fuse()
        g = torch.Generator().manual_seed(3)
        h, w, row, col = SEAM_TRACE
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings: the check below runs other sizes and seams
            torch.onnx.export(_Seamed(form).eval(), (torch.rand(1, 3, h, w, generator=g),
                                                     torch.tensor([row, col])), str(tmp), dynamo=False,
                              opset_version=opset, input_names=["input", "seams"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                            "output": {0: "batch", 2: "out_height", 3: "out_width"}})
        run = _graph_fn(backend, "fp32", None)(tmp)
        hooks = SeamHooks(form)
        for n, h, w, row, col in SEAM_CHECKS:
            x = _image_like(g, n, h, w)
            hooks.seams = (row, col)
            with torch.no_grad(), hooks:
                ref = form(x)
            got = torch.from_numpy(run(x.numpy(), _seam_tensor((row, col)))[0])
            err = float((got - ref).abs().max()) if got.shape == ref.shape else float("inf")
            if not err <= EXPORT_ATOL:
                raise ExportError(f"{export_dir() / name}: {backend} with seams {row}, {col} differs from PyTorch "
                                  f"by {err:.3g} (> {EXPORT_ATOL:g}) on {h}×{w}")

    return _cached_file(name, build)


def _graph_seams(model: SRNet, backend: str, precision: str, threads: int | None
                 ) -> Callable[[torch.Tensor, tuple[int | None, int | None]], torch.Tensor] | None:
    """``seamed(x, seams)`` running the seamed export on ``backend`` (built on the first call), or None where
    the network's tiles do not wrap."""
    from lightsr.models.registry import model_spec

    if not model_spec(model.info.arch).tiling.wrap:
        return None
    model = _cpu_fp32_copy(model)
    graph: GraphFn | None = None

    def seamed(x: torch.Tensor, seams: tuple[int | None, int | None]) -> torch.Tensor:
        nonlocal graph
        if graph is None:
            graph = _graph_fn(backend, precision, threads)(cached_seamed_export(model, backend))
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(graph(arr, _seam_tensor(seams))[0])

    return seamed


def _graph_streaming(model: SRNet, backend: str, precision: str, threads: int | None
                     ) -> Callable[..., None] | None:
    """``forward_tiled`` running its stages on ``backend`` (built on the first call), or None where the
    network does not stream (its tiles are blended)."""
    from lightsr.models.registry import model_spec

    if not model_spec(model.info.arch).tiling.global_context:
        return None
    reference = _cpu_fp32_copy(model)
    form = reference.fuse()
    if getattr(form, "forward_tiled", None) is None:
        return None
    runner: StageGraphs | None = None

    def forward_tiled(x: torch.Tensor, tile: int, sink: Callable, progress: Callable | None = None) -> None:
        nonlocal runner
        if runner is None:
            folder = cached_stages(reference, form, backend)
            runner = StageGraphs(form, folder, _graph_fn(backend, precision, threads))
        with torch.no_grad():
            form.forward_tiled(x.to("cpu", torch.float32), tile, sink, progress, run=runner)

    return forward_tiled


def _cpu_fp32_copy(model: SRNet) -> SRNet:
    """A float32 CPU copy in eval mode: the graphs are built later, from the weights as they were now, whatever
    becomes of the caller's network."""
    import copy

    return copy.deepcopy(model).to("cpu", torch.float32).eval()


def build(model: SRNet, backend: str = "torch", precision: str = "fp32", device: str | torch.device = "cpu",
          threads: int | None = None, fuse: bool = True) -> Runtime:
    """``model`` on ``backend`` in ``precision`` (``auto``: bf16 where the device has it natively and the backend
    runs it, else fp32). Non-torch backends run the export (:func:`cached_export`) on the CPU (onnxruntime: or
    CUDA)."""
    check_backend(backend)
    dev = resolve_device(device)
    supported = tuple(model.info.precisions)
    prec = backend_precision(backend, precision, dev, supported)
    if backend == "torch":
        import copy

        dtype = resolve_precision(prec, dev, supported)
        module = copy.deepcopy(model).to(dev).eval()
        module = (module.fuse() if fuse else module).to(dtype)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return module(x.to(dev, dtype)).float()

        return Runtime(run, model.scale, model.arch, backend, prec, dev, module=module)
    if not fuse:
        raise UsageError(f"--no-fuse applies to --backend torch (--backend {backend} runs the exported graph)")
    if backend == "openvino" and dev.type != "cpu":
        raise UsageError(f"--backend openvino runs on the CPU, not --device {dev}")
    if backend == "openvino" and prec == "bf16" and not native_bf16(torch.device("cpu")):
        raise UsageError("--precision bf16 with --backend openvino needs a CPU with AMX or AVX512-BF16")
    path = cached_export(model, backend)
    if backend == "onnxruntime":
        from lightsr.export import OnnxModel

        session = OnnxModel(path, device=dev, threads=threads)
        on_cpu = dev.type == "cpu"  # the stage and seam graphs run on onnxruntime's CPU provider
        return Runtime(session, session.scale, model.arch, backend, prec, dev, path=path,
                       forward_tiled=_graph_streaming(model, backend, prec, threads) if on_cpu else None,
                       seamed=_graph_seams(model, backend, prec, threads) if on_cpu else None)
    ov_model = OpenVinoModel(path, prec, model.scale, threads)
    return Runtime(ov_model, model.scale, model.arch, backend, prec, dev, path=path,
                   forward_tiled=_graph_streaming(model, backend, prec, threads),
                   seamed=_graph_seams(model, backend, prec, threads))
