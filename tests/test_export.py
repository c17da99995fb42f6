"""ONNX export: dynamic shapes, agreement with PyTorch, metadata, the ``export`` command and ``upscale --onnx``."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightsr
from conftest import calibrated, registry_networks
from lightsr.cli import main
from lightsr.errors import LightSRError
from lightsr.models.registry import model_spec
from lightsr.runtimes import RUNTIMES, build, file_runtimes
from lightsr.runtimes.base import OnnxFile

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from lightsr.export import CHECK_SHAPES, DUMMY_SIZE, OnnxModel, export_onnx  # noqa: E402

# (name, scale, config overrides): every registered network at one of its scales (each scale in turn), the large
# ones exported with 4 of their blocks (same block structure, attention computed in every block) to keep it fast.
NETWORKS = [(name, model_spec(name).scales[-1 - i % len(model_spec(name).scales)], overrides)
            for i, (name, overrides) in enumerate(registry_networks())]
# Input sizes used neither by the export dummy nor by the export-time check: odd, tiny (below HASN's 15-pixel
# minimum and ELAN's 16-pixel window), non-square, batch of 3.
SIZES = [(1, 3, 23, 41), (3, 3, 9, 6)]

# The installed runtimes that run exported files, as the registry lists them.
FILE_RUNTIMES = [name for name in file_runtimes()
                 if all(importlib.util.find_spec(m) is not None for m in RUNTIMES[name].requires)]


@pytest.mark.parametrize("form", ["training", "fused"])
@pytest.mark.parametrize(("name", "scale", "overrides"), NETWORKS, ids=[n for n, _, _ in NETWORKS])
def test_onnx_matches_pytorch_at_unseen_sizes(tmp_path: Path, name: str, scale: int, overrides: dict,
                                              form: str) -> None:
    torch.manual_seed(0)
    model = calibrated(lightsr.create_model(name, scale=scale, **overrides))
    # The reference is always the training form: the fused export must compute its function too.
    path = export_onnx(model.fuse() if form == "fused" else model, tmp_path / f"{name}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["arch"] == name and meta["scale"] == str(scale) and meta["lightsr_version"] == lightsr.__version__
    inp = session.get_inputs()[0]
    assert inp.shape[0] == "batch" and inp.shape[2:] == ["height", "width"]  # dynamic, not frozen
    g = torch.Generator().manual_seed(3)
    for shape in SIZES:
        assert shape[2:] != DUMMY_SIZE and shape not in CHECK_SHAPES
        x = torch.rand(*shape, generator=g)
        with torch.no_grad():
            ref = model(x).numpy()
        out = session.run(None, {inp.name: x.numpy()})[0]
        assert out.shape == ref.shape == (shape[0], 3, shape[2] * scale, shape[3] * scale)
        err = float(np.abs(out - ref).max())
        print(f"{name} {shape}: max |onnx - torch| = {err:.2e}")
        assert err <= 1e-4


def test_export_leaves_the_network_as_it_was(tmp_path: Path) -> None:
    model = lightsr.create_model("hasn", scale=2).train()
    export_onnx(model, tmp_path / "h.onnx", check=False)
    assert model.training and next(model.parameters()).dtype == torch.float32


def test_export_refuses_low_opset_and_existing_file(tmp_path: Path) -> None:
    model = lightsr.create_model("lksmn", scale=2, channels=12, num_blocks=1)
    with pytest.raises(LightSRError, match="opset 17"):
        export_onnx(model, tmp_path / "a.onnx", opset=13)
    (tmp_path / "b.onnx").write_bytes(b"keep")
    with pytest.raises(LightSRError, match="exists"):
        export_onnx(model, tmp_path / "b.onnx", overwrite=False)
    assert (tmp_path / "b.onnx").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.onnx"]  # nothing partial left behind


def test_failed_export_is_one_line_not_a_graph_dump(tmp_path: Path, capfd) -> None:
    model = lightsr.create_model("lksmn", scale=2, channels=12, num_blocks=1)
    with pytest.raises(LightSRError, match="export failed"):
        export_onnx(model, tmp_path / "a.onnx", opset=99, check=False)
    out, _ = capfd.readouterr()
    assert out == ""  # torch prints the traced graph to file descriptor 1 on failure
    assert list(tmp_path.iterdir()) == []


def test_export_command_and_upscale_with_onnx(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    model = lightsr.create_model("lksmn", scale=2, channels=12, num_blocks=1).eval()
    weights = lightsr.save_model(model, tmp_path / "tiny_x2.safetensors")
    onnx_path = tmp_path / "tiny.onnx"
    assert main(["export", "--weights", str(weights), "--onnx", str(onnx_path)]) == 0
    assert "checked with onnxruntime" in capsys.readouterr().out
    assert main(["export", "--weights", str(weights), "--onnx", str(onnx_path)]) == 2  # exists
    assert "exists" in capsys.readouterr().err
    assert main(["export", "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "--model NAME" in capsys.readouterr().err

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (21, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    x = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        ref = model(x)[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255
    for runtime in [None, *FILE_RUNTIMES]:  # the default, then each runtime that runs files
        out = tmp_path / f"out-{runtime}.png"
        assert main(["upscale", str(tmp_path / "in.png"), "-o", str(out), "--onnx", str(onnx_path), "--tile", "0",
                     "-q", *(["--backend", runtime] if runtime else [])]) == 0
        with Image.open(out) as im:
            got = np.asarray(im).astype(np.float64)
        assert np.abs(got - ref).max() <= 0.5 + 1e-2, runtime
    # The scale comes from the ONNX metadata: asking for another is an error.
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "o2.png"), "--onnx", str(onnx_path),
                 "--scale", "4"]) == 2
    assert "×2 model" in capsys.readouterr().err
    # Tiled through onnxruntime too.
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "o3.png"), "--onnx", str(onnx_path),
                 "--tile", "8", "-q"]) == 0


def test_onnx_model_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    for runtime in FILE_RUNTIMES:  # one line naming the file, from every runtime that runs files
        for name, message in [("bad.onnx", "cannot load ONNX model"), ("missing.onnx", "no such ONNX file")]:
            with pytest.raises(LightSRError, match=f"^{tmp_path / name}: {message}") as info:
                build(OnnxFile(tmp_path / name), runtime)
            assert "\n" not in str(info.value)
    with pytest.raises(LightSRError, match="cannot load ONNX model"):
        OnnxModel(tmp_path / "bad.onnx")
    with pytest.raises(LightSRError, match="no such ONNX file"):
        OnnxModel(tmp_path / "missing.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the optional extra were not installed
    with pytest.raises(LightSRError, match=r"pip install 'lightsr\[onnx\]'"):
        OnnxModel(tmp_path / "bad.onnx")


def _with_metadata(src: Path, dst: Path, **changes: str | None) -> Path:
    """A copy of the ONNX file ``src`` with metadata entries changed (None: removed)."""
    import onnx

    proto = onnx.load(str(src))
    meta = {p.key: p.value for p in proto.metadata_props}
    meta.update(changes)
    del proto.metadata_props[:]
    for k, v in meta.items():
        if v is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
    onnx.save(proto, str(dst))
    return dst


@pytest.mark.parametrize("runtime", FILE_RUNTIMES)
def test_onnx_metadata_and_output_size_are_validated(tmp_path: Path, capsys, runtime: str) -> None:
    torch.manual_seed(0)
    model = lightsr.create_model("lksmn", scale=2, channels=12, num_blocks=1).eval()
    good = export_onnx(model, tmp_path / "good.onnx", check=False)
    m = build(OnnxFile(good), runtime)
    assert (m.scale, m.arch, m.runtime, m.path) == (2, "lksmn", runtime, good)
    assert m.forward.config == model.info.config  # the network's keyword arguments, from the metadata
    x = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        assert torch.allclose(m(x), model(x), atol=1e-4)
    cases = [
        ({"scale": "2.5"}, "bad lightsr metadata scale='2.5' (expected an integer from 1 to 16)"),
        ({"scale": "0"}, "bad lightsr metadata scale='0' (expected an integer from 1 to 16)"),
        ({"scale": "-2"}, "bad lightsr metadata scale='-2' (expected an integer from 1 to 16)"),
        ({"scale": "100000"}, "bad lightsr metadata scale='100000' (expected an integer from 1 to 16)"),
        ({"scale": None}, "no lightsr metadata (scale); export it with `lightsr export`"),
        ({"arch": "bad name\n"}, "bad lightsr metadata arch='bad name\\n' (expected a network name)"),
        ({"config": "{not json"}, "bad lightsr metadata config='{not json' (expected a JSON object)"),
        ({"config": "[" + "1, " * 20 + "1]"},
         "bad lightsr metadata config='[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, …' (expected a JSON object)"),
        # A ×2 graph that claims ×3: its output is not ×3 of its input.
        ({"scale": "3"}, "output 1×3×14×18 for a 1×3×7×9 input is not ×3 (its metadata scale); expected 1×3×21×27"),
    ]
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in.png")
    for k, (changes, message) in enumerate(cases):
        bad = _with_metadata(good, tmp_path / f"bad{k}.onnx", **changes)
        with pytest.raises(LightSRError) as info:
            build(OnnxFile(bad), runtime)
        assert str(info.value) == f"{bad}: {message}"
        if k in (0, len(cases) - 1):  # through the command line: the same line, nothing written
            assert main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--onnx",
                         str(bad), "--backend", runtime]) == 2
            assert capsys.readouterr().err == f"lightsr: error: {bad}: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.suffix == ".onnx") == ["in.png"]


def _graph_file(path: Path, inputs: list[tuple[str, int, list]], scale: str | None = "2") -> Path:
    """An ONNX file whose graph passes its first input through (Identity), with the given inputs (name, ONNX
    element type, dims) and lightsr's scale metadata: made to fail the input checks, not to compute."""
    import onnx
    from onnx import helper

    vis = [helper.make_tensor_value_info(name, kind, dims) for name, kind, dims in inputs]
    out = helper.make_tensor_value_info("y", inputs[0][1] if inputs else onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Identity", [inputs[0][0] if inputs else "c"], ["y"])], "g", vis,
                              [out], initializer=[] if inputs else [helper.make_tensor("c", 1, [1], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if scale is not None:
        helper.set_model_props(model, {"scale": scale})
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("runtime", FILE_RUNTIMES)
def test_exported_files_are_checked_before_anything_runs_or_is_cached(tmp_path: Path, runtime: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    from lightsr.runtimes import files

    f32, f64, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16
    nchw = ["N", 3, "H", "W"]
    cases = {
        "double.onnx": ([("x", f64, nchw)], "expected one float input N×3×H×W, the graph takes x double "
                                            "['N', 3, 'H', 'W']"),
        "half.onnx": ([("x", f16, nchw)], "expected one float input N×3×H×W, the graph takes x float16 "
                                          "['N', 3, 'H', 'W']"),
        "four.onnx": ([("x", f32, ["N", 4, "H", "W"])], "expected one float input N×3×H×W, the graph takes x float "
                                                        "['N', 4, 'H', 'W']"),
        "rank.onnx": ([("x", f32, None)], "expected one float input N×3×H×W, the graph takes x float ?"),
        "two.onnx": ([("x", f32, nchw), ("", f32, nchw)],
                     "expected one float input N×3×H×W, the graph takes x float ['N', 3, 'H', 'W'], (unnamed) float "
                     "['N', 3, 'H', 'W']"),
        "none.onnx": ([], "expected one float input N×3×H×W, the graph takes no input"),
    }
    home = Path(os.environ["LIGHTSR_HOME"])
    before = sorted(home.rglob("*")) if home.exists() else []
    for name, (inputs, message) in cases.items():
        path = _graph_file(tmp_path / name, inputs)
        with pytest.raises(LightSRError) as info:
            build(OnnxFile(path), runtime)
        assert str(info.value) == f"{path}: {message}"
    # An export whose weights went to an external data file: its bytes could change under a cached compiled
    # model, and a file must not make lightsr read others.
    torch.manual_seed(0)
    model = lightsr.create_model("lksmn", scale=2, channels=12, num_blocks=1).eval()
    good = export_onnx(model, tmp_path / "good.onnx", check=False)
    external = tmp_path / "external.onnx"
    onnx.save(onnx.load(str(good)), str(external), save_as_external_data=True, size_threshold=0,
              location="external.data")
    with pytest.raises(LightSRError, match=f"^{external}: its weights are in external data files;"):
        build(OnnxFile(external), runtime)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(LightSRError, match=f"^{tmp_path / 'empty.onnx'}: cannot load ONNX model \\(no graph"):
        build(OnnxFile(tmp_path / "empty.onnx"), runtime)
    monkeypatch.setattr(files, "MAX_FILE_BYTES", good.stat().st_size - 1)  # read no further than the bound
    with pytest.raises(LightSRError, match=f"^{good}: larger than the"):
        build(OnnxFile(good), runtime)
    # None of these left anything in lightsr's cache.
    assert (sorted(home.rglob("*")) if home.exists() else []) == before


def test_export_write_errors_are_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import errno

    import onnx

    from conftest import deny_writes

    model = lightsr.create_model("lksmn", scale=2, channels=12, num_blocks=1)
    weights = lightsr.save_model(model, tmp_path / "w.safetensors")
    (tmp_path / "ro").mkdir()
    import lightsr.sources as X

    with monkeypatch.context() as m:
        deny_writes(m, tmp_path / "ro")
        m.setattr(X, "resolve", lambda *a, **k: pytest.fail("the model loaded before the check"))
        assert main(["export", "--weights", str(weights), "--onnx", str(tmp_path / "ro" / "m.onnx")]) == 2
        assert capsys.readouterr().err == (f"lightsr: error: --onnx {tmp_path / 'ro' / 'm.onnx'}: cannot write in "
                                           f"{tmp_path / 'ro'} (Permission denied)\n")
    assert list((tmp_path / "ro").iterdir()) == []

    def full(proto, path, *a, **k):  # the disk fills up while the graph is written
        Path(path).write_bytes(b"\x08partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(onnx, "save", full)
    assert main(["export", "--weights", str(weights), "--onnx", str(tmp_path / "out" / "m.onnx"), "--no-check"]) == 2
    assert capsys.readouterr().err == (f"lightsr: error: {tmp_path / 'out' / 'm.onnx'}: cannot write (No space left "
                                       "on device); nothing written\n")
    assert list((tmp_path / "out").iterdir()) == []
