"""Where and in what precision networks run: one resolver for every command, the Python API and the trainer.

A runtime's record (:data:`lightsr.runtimes.RUNTIMES`) says which devices and precisions it offers; the runtime
factory hands them to :func:`resolve_device` (``auto_picks``) and :func:`choose_precision` (``offered``).
torch is imported by the functions, not here: the command-line parsers read :data:`PRECISION_NAMES` and
``lightsr upscale --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightsr.errors import UsageError

if TYPE_CHECKING:
    import torch

# int8: the network's weights and activations quantized to 8 bits (OpenVINO's int8 graphs, lightsr.runtimes.int8);
# it changes results more than bf16 does, so auto never picks it.
PRECISION_NAMES = ("fp32", "bf16", "fp16", "int8")
# What --precision accepts: a precision, or "auto" (bf16 where the device computes it natively, else fp32).
PRECISION_CHOICES = ("auto", *PRECISION_NAMES)
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps, xpu or xpu:N"


def precision_dtype(name: str) -> torch.dtype:
    """The torch dtype of a floating-point precision name (``fp32``, ``bf16``, ``fp16``)."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _named(option: str, value: str) -> str:
    # A command-line option reads "--device cuda"; a config key reads as it is set ("train.device=cuda").
    return f"{option} {value}" if option.startswith("-") else f"{option}={value}"


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _xpu_count() -> int:
    import torch

    xpu = getattr(torch, "xpu", None)
    return xpu.device_count() if xpu is not None and xpu.is_available() else 0


def resolve_device(pref: str | torch.device | None = "auto", option: str = "--device",
                   local_rank: int | None = None, auto_picks: tuple[str, ...] = ("cuda", "mps", "xpu")
                   ) -> torch.device:
    """The device ``pref`` names: ``auto``/None → CUDA, else Apple's MPS, else Intel's XPU when available, else the
    CPU; ``cuda``, ``cuda:N``, ``mps``, ``xpu``, ``xpu:N``, ``cpu``.

    ``local_rank``: the GPU a bare ``cuda`` (or ``auto``) means — a torchrun process's own; None keeps PyTorch's
    current device. ``auto_picks``: the accelerators ``auto`` may choose, in order (the trainer, whose DDP set-up
    knows CUDA only, passes ``("cuda",)``). A device that cannot be parsed or is not available is a one-line
    :class:`UsageError` that names ``option`` (``--device`` on the command line, ``train.device`` in a config).
    """
    import torch

    if pref is None or str(pref) == "auto":
        available = {"cuda": torch.cuda.is_available, "mps": _mps_available, "xpu": lambda: _xpu_count() > 0}
        pref = next((kind for kind in auto_picks if available[kind]()), "cpu")
    try:
        dev = torch.device(pref)
    except (RuntimeError, TypeError):
        raise UsageError(f"{_named(option, repr(pref))}: expected {DEVICE_CHOICES}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise UsageError(f"{_named(option, str(pref))}: Apple's MPS backend is not available in this PyTorch "
                             f"build/machine; use {_named(option, 'cpu')}")
        return dev
    if dev.type == "xpu":
        n = _xpu_count()
        if not n:
            raise UsageError(f"{_named(option, str(pref))}: no Intel XPU is available in this PyTorch build/machine; "
                             f"use {_named(option, 'cpu')}")
        if dev.index is not None and dev.index >= n:
            raise UsageError(f"{_named(option, str(pref))}: no such XPU ({n} visible)")
        return dev
    if dev.type != "cuda":
        raise UsageError(f"{_named(option, str(pref))}: lightsr runs on {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise UsageError(f"{_named(option, str(pref))}: CUDA is not available in this PyTorch build/machine; "
                         f"use {_named(option, 'cpu')}")
    visible = torch.cuda.device_count()
    if dev.index is None and local_rank is not None:
        if local_rank >= visible:
            raise UsageError(f"{_named(option, str(pref))}: local rank {local_rank} has no GPU ({visible} visible)")
        return torch.device("cuda", local_rank)
    if dev.index is not None and dev.index >= visible:
        raise UsageError(f"{_named(option, str(pref))}: no such GPU ({visible} visible)")
    return dev


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it (Ampere and newer), or a CPU
    with AMX or AVX512-BF16 (recent Xeons, AMD Zen 4 and newer). Elsewhere bf16 is emulated and gains little
    or nothing, so ``auto`` stays fp32 there."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):  # PyTorch's own CPUID checks
        fn = getattr(cpu, probe, None)
        if fn is not None and fn():
            return True
    return bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())


def auto_precision(device: torch.device, supported: tuple[str, ...] = PRECISION_NAMES) -> str:
    """``auto``'s choice on ``device`` for a network supporting ``supported``: bf16 where native, else fp32."""
    return "bf16" if "bf16" in supported and native_bf16(device) else "fp32"


def resolve_precision(precision: str, device: torch.device, supported: tuple[str, ...] = PRECISION_NAMES
                      ) -> torch.dtype:
    """The dtype of ``precision`` (one of :data:`PRECISION_CHOICES`, floating-point) on ``device`` for a network
    supporting ``supported``; one-line :class:`UsageError` naming ``--precision`` otherwise."""
    precision = check_precision(precision, device, supported)
    if precision == "int8":
        raise UsageError("--precision int8 runs int8 graphs on OpenVINO (--backend openvino), not in PyTorch")
    return precision_dtype(precision)


def check_precision(precision: str, device: torch.device, supported: tuple[str, ...] = PRECISION_NAMES) -> str:
    """``precision`` (``auto`` resolved) if ``device`` and a network supporting ``supported`` can run it at all;
    one-line :class:`UsageError` naming ``--precision`` otherwise."""
    if precision == "auto":
        precision = auto_precision(device, supported)
    if precision not in PRECISION_NAMES:
        raise UsageError(f"--precision {precision!r}: choose one of {', '.join(PRECISION_CHOICES)}")
    if precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision fp16 needs a CUDA device (CPU kernels for fp16 are missing or very slow); "
                         "use --precision bf16 or fp32 on CPU")
    if precision == "int8" and device.type != "cpu":
        raise UsageError(f"--precision int8 runs on the CPU (OpenVINO), not --device {device}")
    if precision not in supported:
        raise UsageError(f"--precision {precision}: this network supports {', '.join(supported)}")
    return precision


def choose_precision(precision: str, device: torch.device, supported: tuple[str, ...] = PRECISION_NAMES,
                     offered: tuple[str, ...] = PRECISION_NAMES, offered_by: str = "the runtime") -> str:
    """The precision name ``precision`` (one of :data:`PRECISION_CHOICES`) comes to for a network supporting
    ``supported`` on a runtime offering ``offered`` (``offered_by`` names it in errors, e.g. ``--backend
    openvino``): ``auto`` resolved over both; one-line :class:`UsageError` otherwise."""
    both = tuple(p for p in offered if p in supported)
    if precision == "auto":
        return auto_precision(device, both)
    check_precision(precision, device, supported)  # the generic errors first (unknown name, fp16 on CPU)
    if precision not in both:
        raise UsageError(f"--precision {precision}: {offered_by} runs {', '.join(both)}")
    return precision
