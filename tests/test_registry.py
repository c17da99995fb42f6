"""The registry and the specs: every architecture through generic code by its spec alone.

* A toy fifth network (two convs and a pixel shuffle), registered for one test, goes through creation,
  save/load with layout detection, tiling, ONNX export and the upscaler: adding a network is its own code plus
  one registration.
* Like spandrel's architecture tests: every registered family over a small grid of non-default
  configurations, saved as lightsr safetensors and as a plain state dict, comes back with the same outputs —
  except the settings the weights cannot show, which only lightsr's metadata carries: a plain state dict
  gets the defaults for them, and the log says so.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import lightsr
from conftest import calibrated
from lightsr.models import Layout, ModelSpec, SRNet, TilingSpec, model_spec
from lightsr.models.registry import registered, specs

# ------------------------------------------------------------------------------------------- a toy network


class ToySR(SRNet):
    """Two 3×3 convs and a pixel shuffle: the smallest network with a head, a body and a scale."""

    def __init__(self, scale: int = 4, channels: int = 8) -> None:
        super().__init__()
        self._remember(scale=scale, channels=channels)
        self.features = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU())
        self.upsample = nn.Sequential(nn.Conv2d(channels, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.features(x))

    def fuse(self) -> SRNet:
        return self.unfused()


def _toy_config(sd: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    return {"scale": math.isqrt(sd["upsample.0.weight"].shape[0] // 3), "channels": sd["features.0.weight"].shape[0]}


TOY = ModelSpec(
    name="toy_sr",
    network=ToySR,
    paper="a test network",
    config_from_weights=_toy_config,
    defaults={"channels": 8},
    layouts=(Layout("lightsr", "features.0."),),
    tiling=TilingSpec(overlap=4, align=1, bytes_per_pixel=2_000),
    output_prefixes=("upsample.",),
)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    coarse = g.integers(0, 256, (h // 4 + 2, w // 4 + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC))


def test_a_toy_network_goes_through_every_generic_part_by_its_spec(tmp_path) -> None:
    from lightsr.export import OnnxModel, export_onnx
    from lightsr.upscaler import Upscaler

    with registered(TOY):
        assert "toy_sr" in lightsr.list_models()
        torch.manual_seed(0)
        net = lightsr.create_model("toy_sr", scale=3, channels=6)
        assert net.info.arch == "toy_sr" and net.info.scale == 3 and net.info.config["channels"] == 6
        x = torch.rand(1, 3, 19, 23)
        with torch.no_grad():
            ref = net(x)

        # save/load: lightsr's file (metadata) and a plain state dict (detected by the layout's marker)
        again = lightsr.load_model(lightsr.save_model(net, tmp_path / "toy.safetensors"))
        torch.save({"params": net.state_dict()}, tmp_path / "toy.pth")
        plain = lightsr.load_model(tmp_path / "toy.pth")
        for loaded in (again, plain):
            assert loaded.info == net.info
            with torch.no_grad():
                assert torch.equal(loaded(x), ref)

        # tiling: the spec's overlap (4) exceeds the two 3×3 convs' reach, so tiles compute the whole image
        img = _image(40, 52)
        whole = Upscaler(net, tile=0).upscale(img)
        up = Upscaler(net, tile=16)
        assert up.plan(40, 52).n_tiles == 12 and up.plan(40, 52).overlap == 4
        assert np.abs(up.upscale(img).astype(int) - whole.astype(int)).max() <= 1  # blend weights: float32

        # ONNX export checked by onnxruntime, and the upscaler runs the exported graph (an optional extra)
        if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
            path = export_onnx(net.fuse(), tmp_path / "toy.onnx")
            assert OnnxModel(path).arch == "toy_sr"
            assert np.abs(Upscaler(str(path)).upscale(img).astype(int) - whole.astype(int)).max() <= 1

        # warm start from another scale skips exactly the spec's output layers
        from lightsr.train.state import warm_start

        loaded_keys, skipped = warm_start(lightsr.create_model("toy_sr", scale=2, channels=6), tmp_path / "toy.pth")
        assert skipped == ["upsample.0.weight", "upsample.0.bias"] and loaded_keys == ["features.0.weight",
                                                                                       "features.0.bias"]
    assert "toy_sr" not in lightsr.list_models()


def test_a_network_without_fuse_is_an_error_not_a_silent_fallback() -> None:
    class NoFuse(ToySR):
        fuse = SRNet.fuse

    with pytest.raises(NotImplementedError, match="NoFuse does not define fuse"):
        NoFuse(scale=2).fuse()


def test_registering_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        with registered(ModelSpec("hasn", ToySR, "x", _toy_config)):
            pass
    assert model_spec("hasn").network.__name__ == "HASN"


# ------------------------------------------------------------------------ non-default configurations

# Small non-default configurations per family; the first of each changes a setting the weights cannot show.
GRID: dict[str, list[dict[str, Any]]] = {
    "elan": [
        {"num_blocks": 4, "channels": 30, "n_share": 1, "exp_ratio": 1, "window_sizes": [2, 4, 8]},
        {"num_blocks": 3, "channels": 24, "n_share": 2, "exp_ratio": 2},
        {"num_blocks": 2, "channels": 36, "n_share": 0, "exp_ratio": 3},
    ],
    "hasn": [
        {"channels": 20, "num_blocks": 2, "mlp_ratio": 2},
        {"channels": 32, "num_blocks": 1, "mlp_ratio": 3},
    ],
    "lksmn": [
        {"channels": 16, "num_blocks": 2, "heads": 2, "mlp_ratio": 1.5, "kernels": [[3, 5, 3], [5, 7, 2]]},
        {"channels": 24, "num_blocks": 1, "heads": 3, "mlp_ratio": 2.0, "kernels": [[3, 5, 2], [5, 7, 3]]},
    ],
}
_FIRST_OF_FAMILY = {s.family: s for s in reversed(specs())}  # one registry name per family
CASES = [(s.name, i) for s in _FIRST_OF_FAMILY.values() for i in range(len(GRID.get(s.family, [])))]


def test_every_family_has_a_grid() -> None:
    assert {s.family for s in specs()} <= set(GRID)


@pytest.mark.parametrize(("name", "index"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
@pytest.mark.parametrize("scale", [2, 3])
def test_non_default_configurations_round_trip(tmp_path, caplog, name: str, index: int, scale: int) -> None:
    spec = model_spec(name)
    config = GRID[spec.family][index]
    torch.manual_seed(index)
    net = calibrated(lightsr.create_model(name, scale=scale, **config))
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 5, 6), size=(21, 26), mode="bicubic").clamp(0, 1)
    with torch.no_grad():
        ref = net(x)

    own = lightsr.load_model(lightsr.save_model(net, tmp_path / "net.safetensors"))
    assert own.info == net.info
    with torch.no_grad():
        assert torch.equal(own(x), ref)

    torch.save(net.state_dict(), tmp_path / "net.pth")
    with caplog.at_level(logging.INFO, logger="lightsr"):
        plain = lightsr.load_model(tmp_path / "net.pth")
    differs = {k for k, v in net.info.config.items() if plain.info.config.get(k) != v}
    assert differs <= set(spec.undetectable)  # everything else is read from the weights …
    if spec.undetectable:  # … and the log says which settings were filled in from the defaults
        assert any(", ".join(spec.undetectable) in r.getMessage() for r in caplog.records)
    if not differs:
        with torch.no_grad():
            assert torch.equal(plain(x), ref)
    # Each family's first grid entry is the case where only the metadata can tell.
    assert bool(differs) == (index == 0 and bool(spec.undetectable))


def test_docs_list_every_layout_and_undetectable_setting() -> None:
    """The layout table of docs/models.md names each family's layouts and the settings its weights cannot show."""
    from conftest import REPO_ROOT

    text = (REPO_ROOT / "docs" / "models.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `") and line.count("|") == 4]  # 3 columns
    for spec in _FIRST_OF_FAMILY.values():
        row = next((r for r in rows if f"`{spec.family}`" in r.split("|")[1]), None)
        assert row is not None, spec.family
        cells = [c.strip() for c in row.split("|")[1:-1]]
        for layout in spec.layouts:
            assert layout.name.replace(" (BasicSR)", "") in cells[1], (spec.family, layout.name)
        for key in spec.undetectable:
            assert key in cells[2], (spec.family, key)
        if not spec.undetectable:
            assert cells[2] == "none"


@pytest.mark.parametrize("name", list(_FIRST_OF_FAMILY.values()), ids=lambda s: s.family)
def test_a_safetensors_header_length_starting_with_a_pickle_byte_keeps_its_metadata(tmp_path, name) -> None:
    """About one file in 32 has a header length whose first byte is 0x80, a pickle's first byte: it must still
    be read as safetensors, with its metadata (a non-default setting the weights cannot show survives)."""
    spec = name
    config = GRID[spec.family][0]
    torch.manual_seed(0)
    net = calibrated(lightsr.create_model(spec.name, scale=2, **config))
    path = tmp_path / "net.safetensors"
    for n in range(512):
        lightsr.save_model(net, path, extra={"pad": "x" * n})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no padding gave a header length starting with 0x80")
    loaded = lightsr.load_model(path)
    assert loaded.info == net.info
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 5), size=(17, 19), mode="bicubic").clamp(0, 1)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
