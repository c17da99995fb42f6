"""CUDA-only checks, skipped without a GPU (CI has none; ``benchmarks/gpu_check.py`` is the timed counterpart).

Every network's inference form on the GPU agrees with the CPU float32 training form: fp32 within TF32 rounding, bf16 and
fp16 within 16-bit rounding (or, for fp16, a clear overflow error, never silent NaN output); ``auto`` picks bf16
exactly when the GPU reports native bf16.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lightsr
from conftest import calibrated
from lightsr.device import auto_precision
from lightsr.upscaler import NonFiniteOutputError, Upscaler

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

NETWORKS = [(n, {"num_blocks": 4} if n == "elan" else {}) for n in lightsr.list_models()]


def test_auto_precision_on_the_gpu() -> None:
    gpu = torch.device("cuda")
    assert auto_precision(gpu) == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")


@pytest.mark.parametrize(("name", "overrides"), NETWORKS, ids=[n for n, _ in NETWORKS])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_gpu_inference_matches_the_cpu_training_form(name: str, overrides: dict, precision: str) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    torch.manual_seed(0)
    model = calibrated(lightsr.create_model(name, scale=4, **overrides))
    g = torch.Generator().manual_seed(1)
    x = F.interpolate(torch.rand(1, 3, 12, 16, generator=g), size=(48, 64), mode="bicubic").clamp(0, 1)
    with torch.no_grad():
        ref = model(x)
    up = Upscaler(model, device="cuda", precision=precision, tile=0)
    try:
        y = up(x)
    except NonFiniteOutputError:
        assert precision == "fp16"  # fp16 overflow is reported, not written
        return
    err = float((y.float().cpu() - ref).abs().max())
    # fp32: cuDNN may run convolutions in TF32 (PyTorch's default for them), ~1e-3 on [0, 1] images.
    assert np.isfinite(err) and err <= (2e-3 if precision == "fp32" else 0.05), err
