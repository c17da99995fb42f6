"""The inference form computes the training form's function (and so the official code's)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lightsr
from conftest import require_shared, shared_root
from lightsr.models.base import calibrate_batchnorm


def _golden_cases() -> list[str]:
    path = shared_root() / "golden" / "golden.json"
    return sorted(json.loads(path.read_text())) if path.exists() else ["golden.json-missing"]


@pytest.mark.parametrize("case", _golden_cases())
def test_fused_keeps_golden_parity(case: str) -> None:
    meta = json.loads(require_shared("golden/golden.json").read_text())[case]
    rel = meta["weights"].split(" ")[0]
    key = meta["weights"].split("(key ")[1].rstrip(")") if "(key " in meta["weights"] else None
    model = lightsr.load_model(require_shared(rel), param_key=key)
    fused = model.fuse()
    data = np.load(require_shared(f"golden/{case}.npz"))
    for ab in "ab":
        x = torch.from_numpy(data[f"input_{ab}"])
        with torch.inference_mode():
            y, yf = model(x), fused(x)
        assert (yf - y).abs().max().item() <= 1e-4
        assert (yf - torch.from_numpy(data[f"output_{ab}"])).abs().max().item() <= 1e-5


def _smooth_images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Random images with natural-image-like spectra (random coarse noise, bicubic-upsampled).

    Not i.i.d. uniform noise: on that, ELAN's un-normalised q·qᵀ logits reach thousands and the training form
    itself differs from its own float64 evaluation by ~100 (the function is chaotic there), so no float32
    rearrangement could be compared at 1e-4.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(h // 4, 2), max(w // 4, 2), generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)



@pytest.mark.parametrize("name", lightsr.list_models())
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_fused_matches_training_form_on_random_images(name: str, scale: int) -> None:
    torch.manual_seed(scale)
    model = calibrate_batchnorm(lightsr.create_model(name, scale=scale), _smooth_images(2, 32, 32, seed=1))
    fused = model.fuse()
    assert fused.info == model.info
    for h, w in ((37, 45), (7, 5)):
        x = _smooth_images(2, h, w, seed=h * w)
        with torch.inference_mode():
            y, yf = model(x), fused(x)
        assert yf.shape == y.shape
        assert (yf - y).abs().max().item() <= 1e-4, (h, w)


def test_fused_leaves_the_training_form_untouched() -> None:
    model = lightsr.create_model("hasn", scale=2).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = model.fuse()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in fused.parameters())
