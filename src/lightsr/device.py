"""Where and in what precision networks run: one resolver for every command, the Python API and the trainer."""

from __future__ import annotations

import torch

from lightsr.errors import UsageError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _named(option: str, value: str) -> str:
    # A command-line option reads "--device cuda"; a config key reads as it is set ("train.device=cuda").
    return f"{option} {value}" if option.startswith("-") else f"{option}={value}"


def resolve_device(pref: str | torch.device | None = "auto", option: str = "--device",
                   local_rank: int | None = None) -> torch.device:
    """The device ``pref`` names: ``auto``/None → CUDA when available, else CPU; ``cuda``, ``cuda:N``, ``cpu``, ….

    ``local_rank``: the GPU a bare ``cuda`` (or ``auto``) means — a torchrun process's own; None keeps PyTorch's
    current device. A device that cannot be parsed or is not available is a one-line :class:`UsageError` that
    names ``option`` (``--device`` on the command line, ``train.device`` in a training config).
    """
    if pref is None or str(pref) == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(pref)
    except (RuntimeError, TypeError):
        raise UsageError(f"{_named(option, repr(pref))}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type != "cuda":
        return dev
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


def resolve_precision(precision: str, device: torch.device, supported: tuple[str, ...] = tuple(PRECISIONS)
                      ) -> torch.dtype:
    """The dtype of ``precision`` (a key of :data:`PRECISIONS`) on ``device`` for a network supporting
    ``supported``; one-line :class:`UsageError` naming ``--precision`` otherwise."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision fp16 needs a CUDA device (CPU kernels for fp16 are missing or very slow); "
                         "use --precision bf16 or fp32 on CPU")
    if precision not in supported:
        raise UsageError(f"--precision {precision}: this network supports {', '.join(supported)}")
    return PRECISIONS[precision]
