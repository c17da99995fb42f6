"""Building a :class:`~lightsr.runtimes.Runtime`: the registry's record says what a runtime takes, the factory checks
the request against it (installed, device, precision, what it runs) and calls the runtime's own ``build``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lightsr.device import choose_precision, resolve_device
from lightsr.errors import UsageError
from lightsr.models.base import SRNet
from lightsr.runtimes.base import OnnxFile, Runtime
from lightsr.runtimes.registry import (
    DEFAULT_RUNTIME,
    RUNTIMES,
    check_runtime,
    entry_point,
    file_runtimes,
    option_runtimes,
    runtime_for,
)


def default_runtime(source: SRNet | OnnxFile | None = None, precision: str = "fp32") -> str:
    """The runtime that runs ``source`` in ``precision`` when none is named: for networks
    :data:`DEFAULT_RUNTIME`, or the first registered runtime offering ``precision`` where it does not
    (:func:`~lightsr.runtimes.registry.runtime_for`: int8 runs on OpenVINO); the first registered runtime that runs
    exported files for an ``.onnx`` file."""
    if isinstance(source, OnnxFile):
        return next(iter(file_runtimes()), DEFAULT_RUNTIME)
    return runtime_for(precision)


def build(source: SRNet | OnnxFile, runtime: str | None = None, precision: str = "fp32",
          device: str | torch.device = "cpu", threads: int | None = None, fuse: bool = True,
          calibration: str | os.PathLike | None = None) -> Runtime:
    """``source`` (a network, or an exported ``.onnx`` file: :func:`lightsr.sources.resolve`) on ``runtime``
    (None: :func:`default_runtime`) in ``precision`` (``auto``: bf16 where the device computes it natively and
    both the runtime and the network run it, else fp32) on ``device`` (``auto``: the first of the runtime's
    accelerators that is available, else the CPU). ``calibration``: a folder of images an int8 graph is calibrated
    on (the runtimes whose record lists the option). Every refusal is a one-line :class:`UsageError` naming the
    option (``--backend``, ``--device``, ``--precision``, ``--no-fuse``, ``--calibration``)."""
    name = runtime or default_runtime(source, precision)
    spec = check_runtime(name)
    options = {} if calibration is None else {"calibration": calibration}
    if options and ("calibration" not in spec.options or isinstance(source, OnnxFile)):
        takers = " or ".join(option_runtimes("calibration"))
        what = "an exported .onnx file" if isinstance(source, OnnxFile) else f"--backend {name}"
        raise UsageError(f"--calibration applies to --precision int8 (--backend {takers}), not to {what}")
    try:  # the kind of device first: whether one is available here is resolve_device's to say
        kind = None if device is None or str(device) == "auto" else torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None  # not a device at all: resolve_device's one-line error
    if kind is not None and kind not in spec.devices:
        raise UsageError(f"--backend {name} runs on {' or '.join(spec.devices)}, not --device {device}")
    dev = resolve_device(device, auto_picks=tuple(d for d in ("cuda", "mps", "xpu") if d in spec.devices))
    if isinstance(source, OnnxFile):
        if spec.open_file is None:
            raise UsageError(f"--backend {name}: an exported .onnx file runs with {' or '.join(file_runtimes())}; "
                             "give the checkpoint instead and the export is made and cached for this backend")
        if precision not in ("fp32", "auto"):
            raise UsageError(f"--precision {precision}: ONNX models run in the precision they were exported in "
                             "(fp32)")
        rt = entry_point(spec.open_file)(Path(source.path), "fp32", dev, threads)
    else:
        if not fuse and spec.graph:
            eager = " or ".join(n for n, s in RUNTIMES.items() if not s.graph)
            raise UsageError(f"--no-fuse applies to --backend {eager} (--backend {name} runs the exported graph)")
        prec = choose_precision(precision, dev, tuple(source.info.precisions), spec.precisions,
                                f"--backend {name}")
        rt = entry_point(spec.build)(source, prec, dev, threads, fuse, **options)
    rt.runtime = name
    return rt
