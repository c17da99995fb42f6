"""OpenMP threads that sleep while they wait, for command-line runs.

PyTorch's CPU kernels (and MKL's) run on an OpenMP team that, between parallel regions, spins: a waiting thread
keeps its core busy for a while (GNU OpenMP: up to 300,000 spins, about a millisecond, whenever the team fits
the cores) so that the next region starts a few microseconds sooner. On a machine where other processes want
the cores, the spinning threads take CPU time those processes (and this one's own stragglers) need, and each of
the hundreds of regions of a forward pass can wait out a scheduler time slice: upscaling beside one busy process
took several times as long as the cores it lost would explain (benchmarks/README.md, "Threads beside other
work"). With ``OMP_WAIT_POLICY=PASSIVE`` waiting threads sleep at once; results are unchanged (the same work,
split the same way).

OpenMP reads the variable once, when the library loads (with ``import torch``): :func:`passive_waits` must run
before that, so only command-line entry points and the worker processes lightsr starts call it. A value the
user set is kept.
"""

from __future__ import annotations

import os

PASSIVE_WAITS = {"OMP_WAIT_POLICY": "PASSIVE"}


def passive_waits() -> None:
    """Ask OpenMP for sleeping waits (unless the user chose a policy); call before torch is imported."""
    for key, value in PASSIVE_WAITS.items():
        os.environ.setdefault(key, value)
