"""The onnxruntime runtime: the network's cached ONNX export (:mod:`lightsr.runtimes.graphs`), float32, on the CPU
or CUDA; and exported ``.onnx`` files (``lightsr upscale --onnx``), with their lightsr metadata.

``onnx`` and ``onnxruntime`` are optional (``pip install 'lightsr[onnx]'``) and imported only when used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightsr import _optional
from lightsr.errors import OnnxModelError, first_line
from lightsr.models.base import SRNet
from lightsr.runtimes import files
from lightsr.runtimes.base import Runtime
from lightsr.runtimes.graphs import GraphFn, graph_runtime


def _ort() -> Any:
    return _optional.load("onnxruntime", "ONNX support", "onnx")


class OnnxModel:
    """An exported lightsr model run by onnxruntime: ``model(x)`` maps ``N×3×H×W`` float to ``N×3×sH×sW``."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu",
                 threads: int | None = None) -> None:
        ort = _ort()
        self.path = Path(path)
        exported = files.open_exported(self.path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        # Waiting threads sleep instead of spinning, as lightsr.threads asks of OpenMP: beside other work (or this
        # process's own reader and writer threads) spinning threads hold the cores others need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:  # from the bytes that were checked
            self.session = ort.InferenceSession(exported.data, opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable/invalid graphs
            raise OnnxModelError(f"{self.path}: cannot load ONNX model ({first_line(e, 200)})") from None
        meta = exported.metadata
        self.scale, self.arch, self.config, self.metadata = meta.scale, meta.arch, meta.config, meta.entries
        self.input_name = exported.input_name
        # One tiny run now: a graph whose output is not ×scale of its input fails here, before any image.
        self(torch.zeros(1, 3, *files.PROBE_SIZE))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            out = self.session.run(None, {self.input_name: arr})[0]
        except Exception as e:  # onnxruntime's own exception types
            raise OnnxModelError(f"{self.path}: onnxruntime failed on a {'×'.join(map(str, arr.shape))} input "
                                 f"({first_line(e, 200)})") from None
        files.check_output(self.path, out.shape, arr.shape, self.scale)
        return torch.from_numpy(out)


def _whole(path: Path, precision: str, device: torch.device, threads: int | None, scale: int) -> OnnxModel:
    return OnnxModel(path, device=device, threads=threads)


def compile_graph(path: Path, precision: str, threads: int | None) -> GraphFn:
    """One graph (a tile's stage, the seamed export) in a CPU session of its own: arrays in, arrays out."""
    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    # Many sessions take turns here (one per stage, or beside the whole graph's): threads that spin after
    # their work kept the cores from the next session (benchmarks/README.md).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types: a graph gone or changed since it was verified
        raise OnnxModelError(f"{path}: cannot load ONNX graph ({first_line(e, 200)})") from None
    names = [i.name for i in session.get_inputs()]

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        return session.run(None, dict(zip(names, arrays, strict=True)))

    return run


def build(model: SRNet, precision: str, device: torch.device, threads: int | None, fuse: bool) -> Runtime:
    """The network's cached, checked ONNX export in onnxruntime sessions (the record's ``build``)."""
    # The stage and seam graphs run on onnxruntime's CPU provider: exact tiles on the CPU only.
    return graph_runtime(model, precision, device, threads, _whole, compile_graph, "onnxruntime",
                         tiles=device.type == "cpu")


def open_file(path: Path, precision: str, device: torch.device, threads: int | None) -> Runtime:
    """An exported ``.onnx`` file as it is (no exact tiles: its stages and seams are not known)."""
    session = OnnxModel(path, device=device, threads=threads)
    return Runtime(session, session.scale, session.arch, precision, device, path=session.path)
