"""lightsr's networks through spandrel's own loader: detection, descriptors and outputs.

spandrel imports torchvision, which needs a torch build it was made for; CI runs this file in its own environment
(``.ci/run``, with ``LIGHTSR_REQUIRE_SPANDREL=1`` so that a missing spandrel fails there). Elsewhere it skips when
spandrel cannot be imported.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import lightsr
from conftest import require_shared
from lightsr.bundled import bundled_path
from lightsr.models.registry import list_models, model_spec

try:
    import spandrel
except Exception as e:  # ImportError, or torchvision failing to load against this torch
    if os.environ.get("LIGHTSR_REQUIRE_SPANDREL") == "1":
        raise
    pytest.skip(f"spandrel not importable: {e}", allow_module_level=True)

import lightsr.spandrel


@pytest.fixture(scope="module")
def registry():
    reg = spandrel.MAIN_REGISTRY.copy()
    added = lightsr.spandrel.install(reg)
    assert {a.architecture.id for a in added} == {f"lightsr.{n}" for n in list_models()}
    assert lightsr.spandrel.install(reg) == []  # idempotent
    return reg


def _files() -> list[tuple[str, str, object]]:
    out = [("hasn", "official HASN ×4", lambda: require_shared("weights/HASN_x4_official.pth")),
           ("elan_light", "FriedRiceLab ELAN-light ×4",
            lambda: require_shared("weights/ELAN-light_x4_FriedRiceLab.pth"))]
    out += [(n, f"bundled {n} ×4", lambda n=n: bundled_path(n, 4)) for n in list_models() if bundled_path(n, 4)]
    return out


@pytest.mark.parametrize("name, label, path", _files(), ids=[f[1] for f in _files()])
def test_spandrel_loads_the_file_and_matches_lightsr(registry, name, label, path):
    path = path()
    desc = spandrel.ModelLoader(registry=registry).load_from_file(str(path))
    spec = model_spec(name)
    assert isinstance(desc, spandrel.ImageModelDescriptor)
    assert desc.architecture.id == f"lightsr.{name}" and desc.architecture.name == spec.title
    assert desc.scale == 4 and desc.input_channels == 3 and desc.output_channels == 3 and desc.purpose == "SR"
    assert desc.supports_half == ("fp16" in spec.precisions) and desc.supports_bfloat16 == ("bf16" in spec.precisions)
    expected_tiling = spandrel.ModelTiling.DISCOURAGED if spec.tiling.global_context else spandrel.ModelTiling.SUPPORTED
    assert desc.tiling == expected_tiling
    ours = lightsr.load_model(path)
    assert desc.size_requirements.multiple_of == ours.info.pad_multiple
    assert desc.size_requirements.minimum >= ours.info.min_input
    # A crop of a real LR image whose size is no multiple of anything: spandrel pads, the network pads.
    from lightsr.imageio import array_to_tensor, read_image

    lr = read_image(require_shared("data/benchmark/Set14/LR_bicubic/X4/baboonx4.png"), "RGB")[5:42, 7:36]
    x = array_to_tensor(lr).unsqueeze(0)
    with torch.inference_mode():
        want = ours(x).clamp(0, 1)
    got = desc(x)
    assert got.shape == want.shape == (1, 3, 37 * 4, 29 * 4)
    assert float((got - want).abs().max()) <= 1e-5


def test_other_architectures_are_left_to_spandrel(registry):
    # An ESRGAN (RRDBNet) state dict: spandrel's own detector takes it, none of lightsr's claims it.
    torch.manual_seed(0)
    sd = {"conv_first.weight": torch.rand(8, 3, 3, 3), "conv_first.bias": torch.rand(8),
          "body.0.rdb1.conv1.weight": torch.rand(4, 8, 3, 3)}
    for support in registry.architectures():
        if str(support.architecture.id).startswith("lightsr."):
            assert not support.detect(sd)
    assert not any(a.detect({"x": np.zeros(3)}) for a in lightsr.spandrel.architectures())
    # A lightsr layout that does not fit its network (an extra key) is not claimed: spandrel may try others.
    ours = dict(lightsr.create_model(list_models()[0], scale=2).state_dict())
    ours["extra.weight"] = torch.zeros(1)
    assert not any(a.detect(ours) for a in lightsr.spandrel.architectures())
    del ours["extra.weight"]
    assert sum(a.detect(ours) for a in lightsr.spandrel.architectures()) == 1
