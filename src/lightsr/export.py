"""``lightsr export``: a network as an ONNX file with dynamic batch, height and width, verified by onnxruntime.

The graph is the one the graph runtimes cache (:func:`lightsr.runtimes.graphs.write_graph`: the network wrapped so
that its input padding is traced shape-generically, with lightsr's metadata); this module writes it where the user
asked, atomically, and checks it. ``onnx`` and ``onnxruntime`` are optional (``pip install 'lightsr[onnx]'``) and
imported only when used; exported files run with ``lightsr upscale --onnx`` (:class:`OnnxModel`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightsr import _optional
from lightsr._files import atomic_temporary, check_creatable, default_permissions, write_error
from lightsr.errors import ExportError, LightSRError, OnnxModelError, UsageError, first_line
from lightsr.models.base import SRNet
from lightsr.runtimes.graphs import CHECK_SHAPES, DUMMY_SIZE, ShapeGenericWrapper, compare_graph, cpu_fp32, write_graph
from lightsr.runtimes.onnxruntime import OnnxModel

__all__ = ["CHECK_SHAPES", "DUMMY_SIZE", "MIN_OPSET", "ExportError", "OnnxModel", "OnnxModelError",
           "ShapeGenericWrapper", "check_onnx", "export_onnx"]

MIN_OPSET = 17  # LayerNormalization became an ONNX operator in opset 17


def export_onnx(model: SRNet, path: str | os.PathLike, opset: int = 17, check: bool = True,
                atol: float = 1e-4, overwrite: bool = True) -> Path:
    """Export ``model`` to ONNX at ``path`` with dynamic batch/height/width; returns the path.

    With ``check`` the file is loaded by onnxruntime and compared with PyTorch at input sizes other than the
    export dummy's (:data:`CHECK_SHAPES`); a difference above ``atol`` is an :class:`ExportError` and nothing
    is written. The graph carries metadata (``arch``, ``scale``, ``config``, ``lightsr_version``) that
    ``lightsr upscale --onnx`` reads.
    """
    _optional.require("ONNX export", ("onnx",), "onnx")
    if opset < MIN_OPSET:
        raise UsageError(f"--opset {opset}: lightsr exports need opset {MIN_OPSET} or newer")
    path = Path(path)
    if path.exists() and not overwrite:
        raise UsageError(f"{path}: exists (use --overwrite)")
    model = cpu_fp32(model)
    check_creatable(path)
    tmp = atomic_temporary(path)
    try:
        write_graph(model, tmp, opset)
        if check:
            errors = check_onnx(model, tmp)
            worst = max(errors.values())
            if not worst <= atol:
                raise ExportError(f"{path}: onnxruntime differs from PyTorch by {worst:.3g} (> {atol:g}) at "
                                  + ", ".join(f"{'×'.join(map(str, s))}: {e:.3g}" for s, e in errors.items()))
        default_permissions(tmp, path)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, (LightSRError, KeyboardInterrupt)):
            raise
        if isinstance(e, OSError):  # a full disk, a folder that turned read-only
            raise write_error(path, e) from None
        if isinstance(e, Exception):
            raise ExportError(f"{path}: export failed ({type(e).__name__}: {first_line(e, 300)})") from e
        raise
    return path


def check_onnx(model: SRNet, path: str | os.PathLike,
               shapes: tuple[tuple[int, int, int, int], ...] = CHECK_SHAPES,
               run: Any = None) -> dict[tuple[int, ...], float]:
    """Largest absolute difference between onnxruntime (or ``run``, another runtime of the file) and PyTorch
    per input shape (image-like random inputs: :func:`lightsr.runtimes.graphs.image_like`)."""
    return compare_graph(model, run if run is not None else OnnxModel(path), Path(path), shapes,
                         "onnxruntime" if run is None else "the runtime")
