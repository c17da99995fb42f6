"""The OpenVINO runtime: the network's cached ONNX export (:mod:`lightsr.runtimes.graphs`) compiled by OpenVINO for
the CPU, f32 or bf16 (its inference precision hint; bf16 where the CPU has AMX or AVX512-BF16). Compiled models are
cached as verified artifacts of lightsr's (:mod:`lightsr.runtimes.artifacts`; not OpenVINO's own ``CACHE_DIR``, which
reads its blobs unchecked): exported once compiled, recorded with the hash of the graph they were compiled from, the
precision, the OpenVINO version and the CPU, and imported only once their SHA-256 matches.
``pip install 'lightsr[openvino]'``."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightsr.device import native_bf16
from lightsr.errors import OnnxModelError, UsageError, first_line
from lightsr.models.base import SRNet
from lightsr.runtimes import artifacts, files
from lightsr.runtimes.base import Runtime
from lightsr.runtimes.graphs import export_dir, graph_runtime


@functools.cache
def _openvino_core() -> Any:
    """One OpenVINO core for the process, never freed: once the last core went (and its CPU plugin with it), the
    next signal the process handled (SIGTERM, SIGINT) crashed it with SIGSEGV."""
    import openvino as ov

    return ov.Core()


class OpenVinoGraph:
    """A graph compiled by OpenVINO for the CPU in ``precision``, with its infer request (the compiled model
    stays referenced as long as the request)."""

    def __init__(self, path: Path, precision: str, threads: int | None = None, graph: Any = None,
                 graph_sha: str | None = None, check: Callable[[Any], None] | None = None) -> None:
        config = {
            # f32 must be asked for: on CPUs with native bf16 OpenVINO otherwise picks bf16 by itself.
            "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled = _compiled(path, precision, config, graph, graph_sha, check)
        self.request = self.compiled.create_infer_request()
        self.n_outputs = len(self.compiled.outputs)

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        self.request.infer(dict(enumerate(arrays)))
        return [self.request.get_output_tensor(i).data.copy() for i in range(self.n_outputs)]


def _graph_sha256(path: Path) -> str:
    """The SHA-256 of a graph: an ONNX file, or an OpenVINO IR, whose weights are in the ``.bin`` beside its
    ``.xml`` (two IRs of one structure share their ``.xml``)."""
    if path.suffix != ".xml":
        return artifacts.sha256_file(path)
    return hashlib.sha256(b"".join(artifacts.sha256_file(p).encode() for p in (path, path.with_suffix(".bin")))
                          ).hexdigest()


def ov_message(e: BaseException, limit: int = 200) -> str:
    """What an OpenVINO exception says, for a one-line error: its first line that is neither one of the
    ``Exception from <source file>:<line>:`` lines OpenVINO stacks before it nor the ``Check '<condition>' failed
    at <source file>:<line>:`` line before the explanation (that line where nothing follows it)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    said = [ln for ln in lines if not re.fullmatch(r"Exception from \S+:\d+:?", ln)]
    plain = [ln for ln in said if not re.fullmatch(r"Check '.*' failed at \S+:\d+:?", ln)]
    return ((plain or said)[0] if said else first_line(e))[:limit]


def _compiled(path: Path, precision: str, config: dict[str, Any], graph: Any = None, graph_sha: str | None = None,
              check: Callable[[Any], None] | None = None) -> Any:
    """The graph at ``path`` (or ``graph``, a model OpenVINO read from it, whose SHA-256 is ``graph_sha``) compiled
    for the CPU: imported from lightsr's verified blob cache, or compiled, checked by ``check(compiled)`` where
    given, and exported into it. The blob is read once, hashed and imported from the same bytes."""
    import openvino as ov

    core = _openvino_core()
    try:
        graph_sha = graph_sha or _graph_sha256(path)
    except OSError as e:
        raise OnnxModelError(f"{path}: cannot read it ({e.strerror or e})") from None
    built_from = {"kind": "openvino compiled model", "graph_sha256": graph_sha, "precision": precision,
                  "openvino": ov.__version__, "cpu": str(core.get_property("CPU", "FULL_DEVICE_NAME"))}
    blob = export_dir() / "openvino" / f"{graph_sha[:24]}-{precision}.blob"
    fresh: list[Any] = []

    def build(tmp: Path) -> None:
        try:
            compiled = core.compile_model(str(path) if graph is None else graph, "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError subclasses of its own for unreadable graphs
            raise OnnxModelError(f"{path}: OpenVINO cannot compile it ({ov_message(e)})") from None
        if check is not None:  # before anything is cached
            check(compiled)
        exported = compiled.export_model()  # a BytesIO or bytes, by OpenVINO version
        tmp.write_bytes(exported.getvalue() if hasattr(exported, "getvalue") else exported)
        fresh.append(compiled)

    for _attempt in range(2):
        artifacts.cached(blob, built_from, build, what="cached OpenVINO compiled model")
        if fresh:
            return fresh[0]
        data = blob.read_bytes()
        if hashlib.sha256(data).hexdigest() == artifacts.recorded_sha256(blob):
            try:
                return core.import_model(data, "CPU", config)
            except Exception as e:  # a blob that verifies but that this OpenVINO cannot read: rebuild it
                problem = f"OpenVINO cannot import it ({first_line(e, 120)})"
        else:
            problem = "it changed while being read"
        artifacts.log.warning(f"{blob}: cached OpenVINO compiled model not used, {problem}; rebuilding it")
        artifacts.remove(blob)
    raise OnnxModelError(f"{blob}: OpenVINO cannot import the model it just compiled from {path}")


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


class OpenVinoFile:
    """An exported ``.onnx`` file a user named, checked (:func:`lightsr.runtimes.files.open_exported`) and
    compiled by OpenVINO for the CPU in f32 from the bytes that were checked; the compiled model is cached only
    once a probe run gave ×scale of its input: ``model(x)`` maps float ``N×3×H×W`` to ``N×3×sH×sW``."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        self.path = Path(path)
        exported = files.open_exported(self.path)
        meta = exported.metadata
        self.scale, self.arch, self.config, self.metadata = meta.scale, meta.arch, meta.config, meta.entries
        try:
            graph = _openvino_core().read_model(exported.data)
        except Exception as e:  # OpenVINO's own exception types
            raise OnnxModelError(f"{self.path}: OpenVINO cannot read it ({ov_message(e)})") from None
        self.graph = OpenVinoGraph(self.path, "fp32", threads, graph, exported.sha256, self._probe)
        self._probe(self.graph.compiled)  # a blob from the cache too: it was compiled from these bytes

    def _probe(self, compiled: Any) -> None:
        """One tiny run: a graph whose output is not ×scale of its input fails here, before any image."""
        arr = np.zeros((1, 3, *files.PROBE_SIZE), np.float32)
        try:
            out = compiled.create_infer_request().infer({0: arr})[0]
        except Exception as e:  # OpenVINO's own exception types
            raise OnnxModelError(f"{self.path}: OpenVINO failed on a {'×'.join(map(str, arr.shape))} input "
                                 f"({ov_message(e)})") from None
        files.check_output(self.path, out.shape, arr.shape, self.scale)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            out = self.graph(arr)[0]
        except Exception as e:  # OpenVINO's own exception types
            raise OnnxModelError(f"{self.path}: OpenVINO failed on a {'×'.join(map(str, arr.shape))} input "
                                 f"({ov_message(e)})") from None
        files.check_output(self.path, out.shape, arr.shape, self.scale)
        return torch.from_numpy(out)


def open_file(path: Path, precision: str, device: torch.device, threads: int | None) -> Runtime:
    """An exported ``.onnx`` file as it is, compiled in f32 (no exact tiles: its stages and seams are not known) —
    the record's ``open_file``."""
    model = OpenVinoFile(path, threads)
    return Runtime(model, model.scale, model.arch, precision, device, path=model.path)


def _whole(path: Path, precision: str, device: torch.device, threads: int | None, scale: int) -> OpenVinoModel:
    return OpenVinoModel(path, precision, scale, threads)


def build(model: SRNet, precision: str, device: torch.device, threads: int | None, fuse: bool,
          calibration: str | os.PathLike | None = None) -> Runtime:
    """The network's cached, checked ONNX export compiled by OpenVINO in f32 or bf16, or its int8 graph
    (:mod:`lightsr.runtimes.int8`, calibrated on ``calibration``, a folder, or the default photos) — the record's
    ``build``."""
    if precision == "bf16" and not native_bf16(torch.device("cpu")):
        raise UsageError("--precision bf16 with --backend openvino needs a CPU with AMX or AVX512-BF16")
    if precision == "int8":
        from lightsr.runtimes.int8 import build_int8

        return build_int8(model, device, threads, _whole, calibration)
    if calibration is not None:
        raise UsageError(f"--calibration applies to --precision int8, not {precision}")
    return graph_runtime(model, precision, device, threads, _whole, OpenVinoGraph, "openvino")
