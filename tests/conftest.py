"""Shared fixtures: where ../shared lives, and how a missing file behaves.

Tests read research data (benchmark images, official weights, golden outputs of the official code) from
``LIGHTSR_SHARED`` (default: ``../shared`` beside the repo root). Locally a missing file skips the test;
with ``LIGHTSR_REQUIRE_SHARED=1`` (as CI sets) it fails instead, so data loss can never pass silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n auto``, the README's command) the workers share the cores: each gets its part
    of them for torch's threads instead of every worker starting one thread per core."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if os.environ.get("PYTEST_XDIST_WORKER") and workers > 1:
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // workers))


def shared_root() -> Path:
    env = os.environ.get("LIGHTSR_SHARED")
    return Path(env).resolve() if env else (REPO_ROOT.parent / "shared").resolve()


def require_shared(rel: str) -> Path:
    """Path of ``rel`` under the shared folder; skip (or fail under LIGHTSR_REQUIRE_SHARED=1) if absent."""
    path = shared_root() / rel
    if not path.exists():
        msg = f"shared file missing: {path}"
        if os.environ.get("LIGHTSR_REQUIRE_SHARED") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return shared_root()


def chain_totals(meta: dict[str, str]) -> tuple[int, float]:
    """Iterations and hours of every run a bundled file records, walking its nested ``previous`` records by hand
    (the reference for what ``lightsr.bundled.training_runs`` decodes)."""
    import json

    its, hours = int(meta["iterations"]), float(meta["train_hours"])
    prev = json.loads(meta.get("previous", "null"))
    while prev:
        its, hours = its + int(prev["iterations"]), hours + float(prev["train_hours"])
        prev = prev.get("previous")
    return its, hours


def registry_networks(max_params: int = 2_000_000) -> list[tuple[str, dict]]:
    """Every registered network with the overrides that keep a test fast: one of more than ``max_params``
    parameters keeps its structure with 4 of its blocks (the large ELAN: 36 blocks of 180 channels)."""
    import torch

    from lightsr.models.registry import create_model, list_models, model_spec

    out = []
    for name in list_models():
        with torch.device("meta"):
            params = create_model(name).num_trainable_params()
        big = params > max_params and "num_blocks" in model_spec(name).defaults
        out.append((name, {"num_blocks": 4} if big else {}))
    return out


def calibrated(model):
    """An untrained network in eval mode with BatchNorm statistics from image-like data (bicubic-upsampled noise,
    drawn from torch's global generator), as after training: see :func:`lightsr.models.base.calibrate_batchnorm`."""
    import torch
    import torch.nn.functional as F

    from lightsr.models.base import calibrate_batchnorm

    return calibrate_batchnorm(model, F.interpolate(torch.rand(2, 3, 8, 8), size=(32, 32), mode="bicubic"))


def deny_writes(monkeypatch, folder) -> None:
    """Make ``folder`` (and everything below it) refuse new files, folders and writes with EACCES, as a read-only
    folder does for an ordinary user. Tests run as root, for whom permission bits stop nothing, so the calls that
    create or open files for writing (``os.open``, ``open``, ``os.mkdir``) are the ones that refuse."""
    import builtins
    import errno
    import io

    folder = Path(folder).resolve()

    def inside(path) -> bool:
        try:
            p = Path(os.fsdecode(path)).resolve()
        except (TypeError, ValueError):
            return False
        return p == folder or folder in p.parents

    def refuse(path):
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    real_os_open, real_open, real_mkdir = os.open, builtins.open, os.mkdir

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            raise refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and inside(file):
            raise refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if inside(path):
            raise refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir)


@pytest.fixture(autouse=True)
def _cpu_without_native_bf16(monkeypatch):
    """Every test sees a CPU without native bf16, so that ``--precision auto`` (upscale's default) is exact fp32
    whatever machine runs the suite; tests of ``auto`` itself report other CPUs explicitly."""
    import torch

    import lightsr.device

    monkeypatch.setattr(lightsr.device, "_cpu_flags", lambda: set())
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)


@pytest.fixture(autouse=True, scope="session")
def _private_lightsr_home(tmp_path_factory):
    """Exports and downloads of the suite go to a temporary folder of this pytest run (one per worker when tests
    run in parallel), never into the user's cache, and no two processes write one cache file at once."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LIGHTSR_HOME", str(tmp_path_factory.mktemp("lightsr_home")))
    yield
    mp.undo()
