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


def calibrated(model):
    """An untrained network in eval mode with BatchNorm statistics from image-like data (bicubic-upsampled noise,
    drawn from torch's global generator), as after training: see :func:`lightsr.models.base.calibrate_batchnorm`."""
    import torch
    import torch.nn.functional as F

    from lightsr.models.base import calibrate_batchnorm

    return calibrate_batchnorm(model, F.interpolate(torch.rand(2, 3, 8, 8), size=(32, 32), mode="bicubic"))
