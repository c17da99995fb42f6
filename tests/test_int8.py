"""int8 on OpenVINO (``lightsr.runtimes.int8``): the calibration, every network's recipe, the cache and its check,
the precision's place among the others, and the quality bound on a small set.

No timing here (benchmarks/int8.py measures speed and the full quality table). The quality bound is checked where
it is cheapest and hardest: the bundled LKSMN ×4 (the default network; NNCF's default quantization lost 1.5 dB on
it) on Set5, against the float32 torch runtime, with eval's protocol.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightsr
from conftest import calibrated, require_shared
from lightsr.cli import main
from lightsr.device import auto_precision, choose_precision
from lightsr.errors import UsageError
from lightsr.models.registry import model_spec, specs
from lightsr.runtimes import RUNTIMES, artifacts, build, runtime_for
from lightsr.runtimes import int8 as int8_mod
from lightsr.runtimes.int8 import QuantizationError, calibration_set, quantize_graph
from lightsr.upscaler import Upscaler

pytestmark = pytest.mark.skipif(not int8_mod.available(), reason="nncf, openvino or scikit-image not installed")

INT8 = [s.name for s in specs() if s.int8 is not None]
# Small networks of each recipe's architecture: a recipe's patterns name layers every configuration has.
TINY = {"lksmn": {"channels": 12, "num_blocks": 1}, "hasn": {"channels": 12, "num_blocks": 1},
        # six blocks: the ELAN recipe keeps the first four f32, and the test needs quantized ones too
        "elan_light": {"channels": 12, "num_blocks": 6}, "elan": {"channels": 12, "num_blocks": 6}}


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTSR_HOME", str(tmp_path / "home"))


def tiny(name: str, scale: int = 2) -> lightsr.SRNet:
    torch.manual_seed(0)
    return calibrated(lightsr.create_model(name, scale=scale, **TINY.get(name, {})))


def photo_folder(folder: Path, n: int = 3, size: int = 48) -> Path:
    """``n`` smooth colour images (gradients with a disc), written as PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size] / size
    for i in range(n):
        img = np.stack([xx, yy, (xx + yy) / 2], axis=2) * (0.5 + 0.1 * i)
        img[(yy - 0.5) ** 2 + (xx - 0.4) ** 2 < 0.05 + 0.02 * i] = [0.9, 0.2 * i, 0.1]
        Image.fromarray((img.clip(0, 1) * 255).round().astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


# ---------------------------------------------------------------------------------------------- calibration


def test_default_calibration_is_crops_of_the_public_domain_photos_downscaled() -> None:
    from skimage import data

    from lightsr.resize import imresize, modcrop

    cal = calibration_set(4)
    assert len(cal.inputs) == int8_mod.PATCHES and cal.identity == calibration_set(4).identity
    assert cal.identity != calibration_set(2).identity
    lrs = []
    for name in int8_mod.CALIBRATION_PHOTOS:
        img = getattr(data, name)()
        img = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3]
        lrs.append(imresize(modcrop(img, 4), 0.25))
    # Every input is, to the last bit, a 64×64 window of one photo's MATLAB-bicubic ×1/4 downscale.
    def found(patch: np.ndarray) -> bool:
        for lr in lrs:
            for y, x in zip(*np.nonzero((lr[:-63, :-63] == patch[0, 0]).all(axis=2)), strict=True):
                if np.array_equal(lr[y:y + 64, x:x + 64], patch):
                    return True
        return False

    for x in cal.inputs[:16]:
        assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
        assert found(np.round(x[0].transpose(1, 2, 0) * 255).astype(np.uint8))
    # The check pairs: each photo's centre and its downscale.
    for lr, hr in cal.pairs:
        assert np.array_equal(lr, imresize(hr, 0.25)) and hr.shape[0] % 4 == 0


def test_calibration_folder_identity_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = photo_folder(tmp_path / "cal", n=5)
    cal = calibration_set(2, folder)
    assert str(folder) in cal.source and all(x.shape[-2:] == (48, 48) for x in cal.inputs)
    # The identity is the inputs': one pixel changed, another identity.
    img = np.asarray(Image.open(folder / "p1.png")).copy()
    img[0, 0, 0] ^= 1
    Image.fromarray(img).save(folder / "p1.png")
    assert calibration_set(2, folder).identity != cal.identity
    # Beyond MAX_IMAGES, images evenly spaced in name order.
    monkeypatch.setattr(int8_mod, "MAX_IMAGES", 3)
    assert calibration_set(2, folder).source.startswith("3 images")
    for bad, message in ((tmp_path / "none", "no such folder"), (tmp_path, "no images")):
        with pytest.raises(UsageError, match=message):
            calibration_set(2, bad)
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UsageError, match=r"broken\.png"):
        calibration_set(2, folder)


# ------------------------------------------------------------------------------------------------ recipes


@pytest.mark.parametrize("name", INT8)
def test_every_int8_recipe_names_layers_of_its_graph_and_leaves_them_float(name: str) -> None:
    model = tiny(name)
    export = build(model, "openvino", "fp32").path
    spec = model_spec(name).int8
    inputs = [np.random.default_rng(i).random((1, 3, 24, 24), dtype=np.float32) for i in range(4)]
    graph = quantize_graph(export, spec, inputs)  # validate: every keep_f32 pattern must match a node
    import re

    quantized, kept = set(), set()
    for op in graph.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize":
            for target in op.output(0).get_target_inputs():
                node = target.get_node().get_friendly_name()
                (kept if any(re.match(p, node) for p in spec.keep_f32) else quantized).add(node)
    assert quantized and not kept


# --------------------------------------------------------------------------------------------- the cache


def test_int8_graph_is_built_once_verified_and_a_failed_check_keeps_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    folder = photo_folder(tmp_path / "cal")
    model = tiny("lksmn")
    calls = []
    real = int8_mod.quantize_graph
    monkeypatch.setattr(int8_mod, "quantize_graph", lambda *a, **k: calls.append(1) or real(*a, **k))

    def graphs() -> list[Path]:
        return [p for p in (tmp_path / "home" / "exports").iterdir() if "-int8-" in p.name]

    monkeypatch.setattr(int8_mod, "MAX_DROP_DB", -1e9)  # no int8 graph can pass
    with pytest.raises(QuantizationError, match="nothing was kept"):
        build(model, "openvino", "int8", calibration=folder)
    assert graphs() == [] and len(calls) == 1
    monkeypatch.setattr(int8_mod, "MAX_DROP_DB", 1e9)  # a random network: the bound is the quality test's
    rt = build(model, "openvino", "int8", calibration=folder)
    assert (rt.runtime, rt.precision, rt.path.name) == ("openvino", "int8", "model.xml")
    x = torch.rand(1, 3, 20, 22)
    y = rt(x)
    assert y.shape == (1, 3, 40, 44) and torch.isfinite(y).all()
    check = rt.path.parent / "check.json"
    assert check.is_file() and len(calls) == 2
    [artifact] = [p for p in graphs() if p.is_dir()]
    assert artifacts.verify(artifact, _recorded(artifact)) is None
    # Reused: no new quantization, the same output.
    assert torch.equal(build(model, "openvino", "int8", calibration=folder)(x), y) and len(calls) == 2
    # A changed file is not used: rebuilt, with a warning.
    (artifact / "model.bin").write_bytes((artifact / "model.bin").read_bytes()[::-1])
    with caplog.at_level(logging.WARNING, logger="lightsr"):
        build(model, "openvino", "int8", calibration=folder)
    assert len(calls) == 3 and "model.bin changed" in caplog.text
    # Another calibration: another graph beside it.
    build(model, "openvino", "int8", calibration=photo_folder(tmp_path / "other", n=2))
    assert len(calls) == 4 and len([p for p in graphs() if p.is_dir()]) == 2


def _recorded(artifact: Path) -> dict:
    import json

    return json.loads(artifacts.manifest_path(artifact).read_text())["built_from"]


# ------------------------------------------------------------------------------------ the precision's place


def test_auto_never_picks_int8_and_int8_runs_on_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightsr.device

    cpu = torch.device("cpu")
    for flags in (set(), {"avx512_vnni"}, {"amx_int8", "amx_bf16", "avx512_bf16", "avx512_vnni"}):
        monkeypatch.setattr(lightsr.device, "_cpu_flags", lambda f=flags: set(f))
        for spec in RUNTIMES.values():
            assert choose_precision("auto", cpu, ("fp32", "bf16", "fp16", "int8"), spec.precisions) != "int8"
        assert auto_precision(cpu, ("fp32", "int8")) == "fp32"
    assert runtime_for("int8") == "openvino" and runtime_for("fp32") == runtime_for("auto") == "torch"
    assert [n for n, s in RUNTIMES.items() if "int8" in s.precisions] == ["openvino"]


def test_int8_refusals_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import importlib.util

    model = tiny("lksmn")
    with pytest.raises(UsageError, match="--backend torch runs fp32, bf16, fp16"):
        build(model, "torch", "int8")
    with pytest.raises(UsageError, match="--backend onnxruntime runs fp32"):
        build(model, "onnxruntime", "int8")
    with pytest.raises(UsageError, match="--calibration applies to --precision int8"):
        build(model, "openvino", "fp32", calibration=tmp_path)
    with pytest.raises(UsageError, match="--calibration applies to --precision int8"):
        build(model, "torch", "fp32", calibration=tmp_path)
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "nncf" else real_find(n, *a))
    with pytest.raises(UsageError, match=r"needs nncf: pip install 'lightsr\[int8\]'"):
        build(model, "openvino", "int8")
    monkeypatch.undo()
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    out = tmp_path / "b.png"
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(out), "--model", "lksmn", "--precision", "int8",
                 "--calibration", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--calibration" in err[0] and "no such folder" in err[0] and not out.exists()


def test_upscaler_int8_picks_openvino_and_warns_once_when_tiles_blend(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(int8_mod, "MAX_DROP_DB", 1e9)  # a random network: the bound is the quality test's
    folder = photo_folder(tmp_path / "cal")
    up = Upscaler(tiny("lksmn"), precision="int8", calibration=folder, tile=16)
    assert (up.backend, up.precision) == ("openvino", "int8")
    x = torch.rand(3, 40, 36)
    with caplog.at_level(logging.WARNING, logger="lightsr"):
        tiled = up.upscale_tensor(x)
        up.upscale_tensor(x)
    assert caplog.text.count("blended, not exact (int8 has no exact tiling)") == 1
    whole = Upscaler(tiny("lksmn"), precision="int8", calibration=folder, tile=0).upscale_tensor(x)
    assert tiled.shape == whole.shape == (3, 80, 72)


# --------------------------------------------------------------------------------------------- quality


def test_int8_quality_bound_on_set5(capsys) -> None:
    """The bundled LKSMN ×4 in int8 (the recipe in its spec, the default calibration) against fp32 on Set5 with
    eval's protocol: within 0.05 dB (Y-PSNR) — and not identical, so int8 did run."""
    data = require_shared("data/benchmark")
    from lightsr.evaluate import evaluate

    model = lightsr.load_model("lksmn_x4")
    fp32 = evaluate(build(model, "torch", "fp32"), data, ["Set5"], 4, progress=False)[0]
    int8 = evaluate(build(model, "openvino", "int8"), data, ["Set5"], 4, progress=False)[0]
    print(f"Set5 ×4 lksmn_x4: fp32 {fp32.psnr:.4f}, int8 {int8.psnr:.4f}")
    assert abs(int8.psnr - fp32.psnr) <= 0.05 and int8.psnr != fp32.psnr
