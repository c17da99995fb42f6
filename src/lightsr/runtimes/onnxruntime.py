"""The onnxruntime runtime: the network's cached ONNX export (:mod:`lightsr.runtimes.graphs`), float32, on the CPU
or CUDA; and exported ``.onnx`` files (``lightsr upscale --onnx``), with their lightsr metadata.

``onnx`` and ``onnxruntime`` are optional (``pip install 'lightsr[onnx]'``) and imported only when used.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightsr import _json, _optional
from lightsr.errors import OnnxModelError, first_line
from lightsr.models.base import SRNet
from lightsr.runtimes.base import Runtime
from lightsr.runtimes.graphs import GraphFn, graph_runtime

# The largest scale factor an ONNX file's metadata may state (the networks are ×2–×4; ×16 leaves room).
MAX_SCALE = 16
# The input the load-time check runs: odd, non-square, below every network's window and minimum size.
PROBE_SIZE = (7, 9)


def _ort() -> Any:
    return _optional.load("onnxruntime", "ONNX support", "onnx")


class OnnxModel:
    """An exported lightsr model run by onnxruntime: ``model(x)`` maps ``N×3×H×W`` float to ``N×3×sH×sW``."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu",
                 threads: int | None = None) -> None:
        ort = _ort()
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxModelError(f"{self.path}: no such ONNX file")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        # Waiting threads sleep instead of spinning, as lightsr.threads asks of OpenMP: beside other work (or this
        # process's own reader and writer threads) spinning threads hold the cores others need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable/invalid graphs
            raise OnnxModelError(f"{self.path}: cannot load ONNX model ({first_line(e, 200)})") from None
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.scale, self.arch, self.config = self._read_metadata(meta)
        self.metadata = meta
        inputs = self.session.get_inputs()
        shape = inputs[0].shape if len(inputs) == 1 else []
        rgb = len(shape) == 4 and (shape[1] in (3, None) or isinstance(shape[1], str))  # 3 or symbolic
        if not rgb or inputs[0].type != "tensor(float)":
            got = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            raise OnnxModelError(f"{self.path}: expected one float input N×3×H×W, the graph takes {got}")
        self.input_name = inputs[0].name
        # One tiny run now: a graph whose output is not ×scale of its input fails here, before any image.
        self(torch.zeros(1, 3, *PROBE_SIZE))

    def _read_metadata(self, meta: dict[str, str]) -> tuple[int, str | None, dict | None]:
        """``scale`` (required), ``arch`` and ``config`` (JSON) as lightsr wrote them; anything else is an error
        naming the file and the entry."""
        def bad(key: str, expected: str) -> OnnxModelError:
            value = meta[key]
            shown = repr(value if len(value) <= 40 else value[:40] + "…")
            return OnnxModelError(f"{self.path}: bad lightsr metadata {key}={shown} (expected {expected})")

        if "scale" not in meta:
            raise OnnxModelError(f"{self.path}: no lightsr metadata (scale); export it with `lightsr export`")
        text = meta["scale"].strip()
        if not re.fullmatch(r"[0-9]{1,3}", text) or not 1 <= int(text) <= MAX_SCALE:
            raise bad("scale", f"an integer from 1 to {MAX_SCALE}")
        arch = meta.get("arch")
        if arch is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", arch):
            raise bad("arch", "a network name")
        config = None
        if "config" in meta:
            try:
                config = _json.loads(meta["config"])
            except ValueError:
                config = None
            if not isinstance(config, dict):
                raise bad("config", "a JSON object")
        return int(text), arch, config

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            out = self.session.run(None, {self.input_name: arr})[0]
        except Exception as e:  # onnxruntime's own exception types
            raise OnnxModelError(f"{self.path}: onnxruntime failed on a {'×'.join(map(str, arr.shape))} input "
                                 f"({first_line(e, 200)})") from None
        n, _, h, w = arr.shape
        expected = (n, 3, h * self.scale, w * self.scale)
        if tuple(out.shape) != expected:
            raise OnnxModelError(f"{self.path}: output {'×'.join(map(str, out.shape))} for a "
                                 f"{'×'.join(map(str, arr.shape))} input is not ×{self.scale} (its metadata "
                                 f"scale); expected {'×'.join(map(str, expected))}")
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
