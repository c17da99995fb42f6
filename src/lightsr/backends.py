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
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lightsr.device import (
    BACKEND_PRECISIONS,
    BACKENDS,
    auto_precision,
    native_bf16,
    resolve_device,
    resolve_precision,
)
from lightsr.errors import UsageError
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
    folder = export_dir()
    path = folder / f"{model.info.arch}_x{model.info.scale}-{form}-{weights_key(model, opset)[:20]}.onnx"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    # Built and checked under a name of this process, then renamed: a killed build or a concurrent one never
    # leaves an unchecked file where the next run would trust it.
    tmp = folder / f".{path.stem}.{os.getpid()}.onnx"
    try:
        export_onnx(model.fuse() if form == "fused" else model, tmp, opset=opset, check=False)
        # Checked by the runtime that will run it (onnxruntime when run is None), against the training form.
        _check(model, None if backend == "onnxruntime" else OpenVinoModel(tmp, "fp32", model.scale), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check(model: SRNet, run: Callable[[torch.Tensor], torch.Tensor] | None, path: Path) -> None:
    from lightsr.export import ExportError, check_onnx

    errors = check_onnx(model, path, run=run)
    worst = max(errors.values())
    if not worst <= EXPORT_ATOL:
        raise ExportError(f"{path}: the backend differs from PyTorch by {worst:.3g} (> {EXPORT_ATOL:g})")


class OpenVinoModel:
    """An ONNX export compiled by OpenVINO for the CPU: ``model(x)`` maps float ``N×3×H×W`` to ``N×3×sH×sW``."""

    def __init__(self, path: str | os.PathLike, precision: str, scale: int, threads: int | None = None) -> None:
        import openvino as ov

        from lightsr.export import OnnxModelError

        self.path, self.scale = Path(path), scale
        core = ov.Core()
        core.set_property({"CACHE_DIR": str(export_dir() / "openvino")})
        config = {
            # f32 must be asked for: on CPUs with native bf16 OpenVINO otherwise picks bf16 by itself.
            "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
        }
        try:
            self.compiled = core.compile_model(str(self.path), "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError subclasses of its own for unreadable graphs
            raise OnnxModelError(f"{self.path}: OpenVINO cannot compile it ({str(e).splitlines()[0][:200]})"
                                 ) from None
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        self.request.infer({0: arr})
        out = torch.from_numpy(self.request.get_output_tensor(0).data.copy())
        n, _, h, w = arr.shape
        if tuple(out.shape) != (n, 3, h * self.scale, w * self.scale):
            raise RuntimeError(f"{self.path}: OpenVINO returned {tuple(out.shape)} for {tuple(arr.shape)}")
        return out


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
        return Runtime(session, session.scale, model.arch, backend, prec, dev, path=path)
    ov_model = OpenVinoModel(path, prec, model.scale, threads)
    return Runtime(ov_model, model.scale, model.arch, backend, prec, dev, path=path)
