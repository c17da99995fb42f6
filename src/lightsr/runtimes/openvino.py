"""The OpenVINO runtime: the network's cached ONNX export (:mod:`lightsr.runtimes.graphs`) compiled by OpenVINO for
the CPU, f32 or bf16 (its inference precision hint; bf16 where the CPU has AMX or AVX512-BF16). Compiled blobs are
cached by OpenVINO itself (``CACHE_DIR``), per graph and precision. ``pip install 'lightsr[openvino]'``."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightsr.device import native_bf16
from lightsr.errors import OnnxModelError, UsageError, first_line
from lightsr.models.base import SRNet
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

    def __init__(self, path: Path, precision: str, threads: int | None = None) -> None:
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


def _whole(path: Path, precision: str, device: torch.device, threads: int | None, scale: int) -> OpenVinoModel:
    return OpenVinoModel(path, precision, scale, threads)


def build(model: SRNet, precision: str, device: torch.device, threads: int | None, fuse: bool) -> Runtime:
    """The network's cached, checked ONNX export compiled by OpenVINO in f32 or bf16 (the record's ``build``)."""
    if precision == "bf16" and not native_bf16(torch.device("cpu")):
        raise UsageError("--precision bf16 with --backend openvino needs a CPU with AMX or AVX512-BF16")
    return graph_runtime(model, precision, device, threads, _whole, OpenVinoGraph, "openvino")
