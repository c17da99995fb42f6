"""Process-group setup for ``torchrun``: gloo on CPU, NCCL on CUDA, one process without ``WORLD_SIZE``.

``torchrun --nproc-per-node N -m lightsr train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address; :func:`setup` reads them (``env://``). Rank 0 is the only one that logs, validates and
writes files; the others train and wait for it (:func:`on_main`).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from lightsr.device import resolve_device
from lightsr.errors import LightSRError

T = TypeVar("T")


class DistributedError(LightSRError, RuntimeError):
    """A torchrun environment that cannot be used (e.g. more CUDA processes than GPUs)."""


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: single process, no process group

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """How many processes the launcher started (torchrun's ``WORLD_SIZE``; 1 without one), known before any
    connection is made."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device_pref: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Initialise the process group when launched by torchrun with more than one process."""
    world = launched_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 1:
        device = resolve_device(device_pref, "train.device", local_rank=0, auto_picks=("cuda",))
        return DistContext(0, 1, 0, device, None)
    if device_pref.startswith("cuda:"):
        raise DistributedError(f"train.device: {device_pref!r} would put all {world} torchrun processes on one GPU; "
                               "use 'cuda' or 'auto' (each process takes its local rank's GPU)")
    # `cuda`: this rank's GPU; `auto` never picks MPS or XPU, which this DDP set-up does not handle
    device = resolve_device(device_pref, "train.device", local_rank=local_rank, auto_picks=("cuda",))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return DistContext(rank, world, local_rank, device, backend)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def on_main(ctx: DistContext, fn: Callable[[], T], what: str) -> T | None:
    """``fn()`` on rank 0 while the other ranks wait for its outcome (its result there, ``None`` elsewhere).

    If it raises, every rank stops — rank 0 with its own error, the others with a :class:`DistributedError`
    (which ``lightsr train`` leaves unprinted: rank 0's error says it all) — instead of the others failing at a
    barrier with the backend's connection error (gloo) or waiting there until the group's timeout (NCCL):
    launchers other than torchrun do not stop them when rank 0 exits.
    """
    if not ctx.enabled:
        return fn()
    result, error = None, None
    if ctx.is_main:
        try:
            result = fn()
        except BaseException as e:  # Ctrl-C or SIGTERM on rank 0 stops the others too
            error = e
    ok = broadcast_int(0 if error is not None else 1, ctx)
    if not ok:
        # Every rank finishes the broadcast before any tears the group down and exits: otherwise a process could
        # abort at exit (gloo: "terminate called without an active exception") instead of exiting with its status.
        barrier(ctx)
    if error is not None:
        raise error
    if not ok:
        raise DistributedError(f"rank {ctx.rank}: rank 0 failed while {what} (its error says why); stopped")
    return result


def all_reduce_mean(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean over ranks (in place when distributed); every rank gets the same value."""
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= ctx.world_size
    return t


def broadcast_int(value: int, ctx: DistContext) -> int:
    """Rank 0's integer on every rank (e.g. the checkpoint to resume from, as rank 0 sees the directory)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=ctx.device)
    dist.broadcast(t, src=0)
    return int(t.item())


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
