"""The networks: parity with the official code, the papers' parameter counts, shapes, gradients."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lightsr
from conftest import calibrated, require_shared

# The papers' trainable parameter counts (ELAN Table 1/3, HASN Table 2), and LKSMN's target (253K ± 2%).
PAPER_COUNTS = {
    "elan_light": {2: 582_012, 3: 590_127, 4: 601_488},
    "elan": {2: 8_254_092, 3: 8_278_407, 4: 8_312_448},
    "hasn": {2: 418_388, 3: 425_423, 4: 435_272},
}
SCALES = (2, 3, 4)


def _golden_cases() -> list[str]:
    from conftest import shared_root

    path = shared_root() / "golden" / "golden.json"
    return sorted(json.loads(path.read_text())) if path.exists() else ["golden.json-missing"]


def _golden_weights(case: dict) -> tuple[str, str | None]:
    text = case["weights"]
    rel = text.split(" ")[0]
    key = text.split("(key ")[1].rstrip(")") if "(key " in text else None
    return rel, key


@pytest.mark.parametrize("case", _golden_cases())
def test_golden_parity_with_official_code(case: str) -> None:
    """Loading the official weights without hints reproduces the official outputs within 1e-5."""
    meta = json.loads(require_shared("golden/golden.json").read_text())[case]
    rel, key = _golden_weights(meta)
    model = lightsr.load_model(require_shared(rel), param_key=key)
    assert model.scale == meta["config"]["scale"]
    assert model.num_trainable_params() == meta["params_trainable"]
    data = np.load(require_shared(f"golden/{case}.npz"))
    for ab in "ab":
        with torch.no_grad():
            y = model(torch.from_numpy(data[f"input_{ab}"]))
        ref = torch.from_numpy(data[f"output_{ab}"])
        assert y.shape == ref.shape
        assert (y - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
@pytest.mark.parametrize("scale", SCALES)
def test_trainable_parameters_equal_paper(name: str, scale: int) -> None:
    assert lightsr.create_model(name, scale=scale).num_trainable_params() == PAPER_COUNTS[name][scale]


def test_lksmn_parameter_target() -> None:
    n = lightsr.create_model("lksmn", scale=4).num_trainable_params()
    assert abs(n - 253_000) <= 0.02 * 253_000


def test_registry_lists_all_and_rejects_unknown() -> None:
    """Every architecture folder (``models/<arch>/`` with its ``SPECS``) is registered, and nothing else is."""
    import importlib

    from conftest import REPO_ROOT

    folders = sorted(p.name for p in (REPO_ROOT / "src" / "lightsr" / "models").iterdir()
                     if (p / "__init__.py").is_file() and not p.name.startswith("_"))
    names = [s.name for f in folders for s in importlib.import_module(f"lightsr.models.{f}").SPECS]
    assert folders and lightsr.list_models() == sorted(names)
    with pytest.raises(ValueError, match="unknown model 'edsr'"):
        lightsr.create_model("edsr")



@pytest.mark.parametrize("name", lightsr.list_models())
@pytest.mark.parametrize("scale", SCALES)
def test_any_size_and_batch_consistency(name: str, scale: int) -> None:
    """Odd and tiny sizes work; a batch of 3 gives the same outputs as three single calls."""
    torch.manual_seed(0)
    model = calibrated(lightsr.create_model(name, scale=scale))
    with torch.no_grad():
        for h, w in ((1, 1), (7, 5), (37, 45)):
            x = torch.rand(1, 3, h, w)
            assert model(x).shape == (1, 3, h * scale, w * scale)
        xb = torch.rand(3, 3, 7, 5)
        yb = model(xb)
        assert yb.shape == (3, 3, 7 * scale, 5 * scale)
        singles = torch.cat([model(xb[i : i + 1]) for i in range(3)])
    assert torch.allclose(yb, singles, atol=1e-5)


@pytest.mark.parametrize("name", lightsr.list_models())
def test_gradient_step_updates_every_parameter(name: str) -> None:
    """Every parameter receives a gradient and moves, except where the architecture itself blocks it."""
    from lightsr.models.hasn.network import ChannelAttention

    torch.manual_seed(0)
    model = lightsr.create_model(name, scale=2).train()
    # HASN squeezes 52 channels to ONE ReLU unit in each channel attention (52 // 30); when that unit is
    # inactive for the whole batch (seed-dependent, also in the official code), the squeeze conv and the
    # excitation weight get exactly zero gradient. Record each unit's state to check that precisely.
    dead: set[str] = set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, ChannelAttention):
            def hook(_m, _i, out, prefix=f"{mod_name}.attention"):
                if not (out > 0).any():
                    dead.update({f"{prefix}.1.weight", f"{prefix}.1.bias", f"{prefix}.3.weight"})
            mod.attention[1].register_forward_hook(hook)
    # A bias just before a train-mode BatchNorm (ELAN's q/v projection) is cancelled by the batch mean: its
    # gradient is zero by construction, in the official code too. It matters only in eval mode.
    before_bn = {k for k, _ in model.named_parameters() if k.endswith("project_inp.0.bias")}
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    # Adam, not SGD: at random init HASN's gradients in early blocks are ~1e-9 (no residual around its CAB),
    # too small for a plain SGD step to move a float32 weight; Adam's normalised step shows connectivity.
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, target = torch.rand(2, 3, 20, 24), torch.rand(2, 3, 40, 48)
    torch.nn.functional.l1_loss(model(x), target).backward()
    for k, p in model.named_parameters():
        if k in before_bn:
            assert p.grad.abs().max().item() < 1e-4 * max(1.0, p.abs().max().item()), k
        elif k in dead:
            assert p.grad.abs().max().item() == 0.0, k
    exempt = before_bn | dead
    assert len(dead) < len(before) // 10
    no_grad = [k for k, p in model.named_parameters() if k not in exempt and not p.grad.abs().max() > 0]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    opt.step()
    unchanged = [k for k, p in model.named_parameters() if k not in exempt and torch.equal(p.detach(), before[k])]
    assert not unchanged, f"parameters not updated: {unchanged[:5]}"


def test_mirror_pad_matches_reflect_where_defined_and_extends_it() -> None:
    from lightsr.models._common import mirror_pad

    x = torch.arange(35.0).view(1, 1, 7, 5)
    ref = torch.nn.functional.pad(x, (0, 4, 0, 6), mode="reflect")
    assert torch.equal(mirror_pad(x, 6, 4), ref)
    big = mirror_pad(x, 9, 11)  # pads larger than the image: reflect again, periodically
    assert big.shape == (1, 1, 16, 16)
    assert torch.equal(big[..., :13, :9], ref)  # first reflection is plain reflect
    col = big[0, 0, :, 0]
    # Mirror rows 0..6 → 6,5,...,0 → 1,2,... : period 12 along the padded column.
    assert torch.equal(col[:12], torch.tensor([0, 5, 10, 15, 20, 25, 30, 25, 20, 15, 10, 5.0]))
    assert torch.equal(mirror_pad(torch.ones(1, 1, 1, 1) * 3, 15, 15), torch.full((1, 1, 16, 16), 3.0))


def test_calibrate_batchnorm_sets_the_batch_statistics() -> None:
    """After calibration each BatchNorm's running mean/variance are its input's batch statistics (unbiased
    variance, as PyTorch keeps), the momentum is restored and the model is in eval mode."""
    from lightsr.models.base import calibrate_batchnorm

    torch.manual_seed(0)
    model = lightsr.create_model("elan_light", scale=2)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)][:3]
    seen: dict[torch.nn.Module, torch.Tensor] = {}
    hooks = [bn.register_forward_pre_hook(lambda mod, args: seen.__setitem__(mod, args[0].detach().double()))
             for bn in bns]
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8), size=(32, 32), mode="bicubic")
    assert calibrate_batchnorm(model, x) is model and not model.training
    for h in hooks:
        h.remove()
    for bn in bns:
        inp = seen[bn]
        assert torch.allclose(bn.running_mean.double(), inp.mean(dim=(0, 2, 3)), atol=1e-5)
        assert torch.allclose(bn.running_var.double(), inp.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6)
        assert bn.momentum == 0.1
