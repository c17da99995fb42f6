"""ONNX export with dynamic batch, height and width, verified by onnxruntime; and running exported models.

The networks pad internally in data-dependent ways (to a multiple of their attention window, with a loop for
tiny inputs; or up to a minimum size; see ``ModelInfo.pad_multiple``/``min_input``), which tracing would freeze
at the dummy input's size. The exported graph therefore wraps the network: the wrapper pads the input itself
with a gather whose indices are computed from the input's shape (the same mirror rule as
:func:`lightsr.models._common.mirror_pad`: periodic reflection, replication for a 1-pixel side), so the traced
network always receives a size it needs no padding for, and the output is cropped with shape-derived bounds.
The network's own code is unchanged; outputs are identical.

``onnx`` and ``onnxruntime`` are optional (``pip install 'lightsr[onnx]'``) and imported only when used.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightsr._files import atomic_temporary, check_creatable, default_permissions, write_error
from lightsr.errors import LightSRError, UsageError, first_line
from lightsr.models.base import SRNet

MIN_OPSET = 17  # LayerNormalization became an ONNX operator in opset 17
# Input sizes the export check runs at: neither the dummy's size nor a multiple of 16-pixel attention windows,
# one below a 15-pixel minimum input, and a batch of two.
DUMMY_SIZE = (37, 45)
CHECK_SHAPES = ((1, 3, 29, 53), (2, 3, 12, 20))


class ExportError(LightSRError, RuntimeError):
    """An export that failed or whose ONNX graph does not reproduce the PyTorch network."""


class OnnxModelError(LightSRError, ValueError):
    """An ONNX file that cannot be run as a lightsr model (unreadable, bad metadata, wrong output size); the
    message names the file."""


# The largest scale factor an ONNX file's metadata may state (the networks are ×2–×4; ×16 leaves room).
MAX_SCALE = 16
# The input the load-time check runs: odd, non-square, below every network's window and minimum size.
PROBE_SIZE = (7, 9)


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise LightSRError(f"ONNX support needs the optional package {module!r}: "
                           "pip install 'lightsr[onnx]' (onnx and onnxruntime)") from None


def _padding_of(model: nn.Module) -> tuple[int, int]:
    """The padding the network does by itself: (size multiple, minimum size), from its metadata."""
    info = model.info
    return int(info.pad_multiple), int(info.min_input)


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
        self.multiple, self.minimum = _padding_of(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = torch._shape_as_tensor(x)  # traced as an ONNX Shape op, so sizes stay symbolic
        h, w = shape[2], shape[3]
        x = x.index_select(2, _mirror_index(h, self.multiple, self.minimum))
        x = x.index_select(3, _mirror_index(w, self.multiple, self.minimum))
        y = self.model(x)
        return y[:, :, : h * self.scale, : w * self.scale]


def _cpu_eval_copy(model: SRNet) -> SRNet:
    """``model`` in float32 eval mode on CPU, copied when that would change the caller's network."""
    p = next(model.parameters(), None)
    if model.training or (p is not None and (p.device.type != "cpu" or p.dtype != torch.float32)):
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


def export_onnx(model: SRNet, path: str | os.PathLike, opset: int = 17, check: bool = True,
                atol: float = 1e-4, overwrite: bool = True) -> Path:
    """Export ``model`` to ONNX at ``path`` with dynamic batch/height/width; returns the path.

    With ``check`` the file is loaded by onnxruntime and compared with PyTorch at input sizes other than the
    export dummy's (:data:`CHECK_SHAPES`); a difference above ``atol`` is an :class:`ExportError` and nothing
    is written. The graph carries metadata (``arch``, ``scale``, ``config``, ``lightsr_version``) that
    ``lightsr upscale --onnx`` reads.
    """
    onnx = _require("onnx")
    if opset < MIN_OPSET:
        raise UsageError(f"--opset {opset}: lightsr exports need opset {MIN_OPSET} or newer")
    from lightsr._version import __version__

    path = Path(path)
    if path.exists() and not overwrite:
        raise UsageError(f"{path}: exists (use --overwrite)")
    model = _cpu_eval_copy(model)
    wrapper = ShapeGenericWrapper(model).eval()
    dummy = torch.rand(1, 3, *DUMMY_SIZE, generator=torch.Generator().manual_seed(0))
    check_creatable(path)
    tmp = atomic_temporary(path)
    try:
        with warnings.catch_warnings(), torch.no_grad(), _stdout_to_devnull():
            # Tracer warnings about Python booleans come from branches the wrapper makes constant by design
            # (the padded input always has the size the network wants).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, (dummy,), str(tmp), dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                              "output": {0: "batch", 2: "out_height", 3: "out_width"}},
            )
        proto = onnx.load(str(tmp))
        info = model.info
        meta = {"arch": info.arch, "scale": str(info.scale), "config": json.dumps(info.config),
                "lightsr_version": __version__, "input": "RGB float32 in [0, 1], N×3×H×W, any H, W ≥ 1"}
        del proto.metadata_props[:]
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        proto.doc_string = f"lightsr {info.arch} ×{info.scale}"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
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
    per input shape (random images).

    The images are random but image-like (coarse noise, bicubic-upsampled): on i.i.d. pixel noise windowed
    un-normalised attention is chaotic — PyTorch's own float32 output differs from its float64 one by ~100 —
    so no two float32 runtimes could agree there, whatever the graph.
    """
    session = run if run is not None else OnnxModel(path)
    g = torch.Generator().manual_seed(1)
    out = {}
    model = _cpu_eval_copy(model)
    for shape in shapes:
        n, c, h, w = shape
        coarse = torch.rand(n, c, max(h // 4, 2), max(w // 4, 2), generator=g)
        x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
        with torch.no_grad():
            ref = model(x)
        y = session(x)
        if y.shape != ref.shape:
            raise ExportError(f"{path}: onnxruntime output {tuple(y.shape)} for input {shape}, "
                              f"PyTorch {tuple(ref.shape)}")
        out[shape] = float((y - ref).abs().max())
    return out


class OnnxModel:
    """An exported lightsr model run by onnxruntime: ``model(x)`` maps ``N×3×H×W`` float to ``N×3×sH×sW``."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu",
                 threads: int | None = None) -> None:
        ort = _require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxModelError(f"{self.path}: no such ONNX file")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
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
                config = json.loads(meta["config"])
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
