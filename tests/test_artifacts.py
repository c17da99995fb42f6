"""Tampered graph caches (``lightsr.runtimes.artifacts``): never a wrong result with status 0.

The cached graphs of the graph runtimes are changed the ways a disk error, an interrupted copy or another user
change them — another network's graph put in place, one weight tensor negated inside the ``.onnx``, bytes flipped,
a stage graph removed or two swapped, an OpenVINO compiled blob changed — and the next use must give the network's
own output (independent reference: the float32 PyTorch network; the artifact rebuilt, with a one-line warning) or,
where the rebuild cannot pass its check, a one-line error. Through ``lightsr eval`` too: after a swap it reports
the requested network's PSNR (the torch backend's), not the other network's.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lightsr
from conftest import calibrated
from lightsr.cli import main
from lightsr.errors import LightSRError
from lightsr.runtimes import RUNTIMES, artifacts, build

GRAPH_BACKENDS = [name for name, spec in RUNTIMES.items()
                  if spec.graph and all(importlib.util.find_spec(m) is not None for m in spec.requires)]
HAS_OV = "openvino" in GRAPH_BACKENDS
pytestmark = pytest.mark.skipif(not GRAPH_BACKENDS, reason="no graph runtime installed")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTSR_HOME", str(tmp_path / "home"))


def _net(name: str, seed: int = 0, **cfg) -> lightsr.SRNet:
    torch.manual_seed(seed)
    return calibrated(lightsr.create_model(name, scale=2, **cfg))


def lksmn() -> lightsr.SRNet:
    return _net("lksmn", channels=12, num_blocks=2)


def hasn() -> lightsr.SRNet:
    return _net("hasn", channels=12, num_blocks=1)


def _x(h: int = 23, w: int = 30, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(1, 3, h // 4, w // 4, generator=g), size=(h, w), mode="bicubic").clamp(0, 1)


def _err(rt, model: lightsr.SRNet, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((rt.forward(x) - model(x)).abs().max())


def _negate_largest_tensor(path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    init = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)) if t.data_type == 1 else -1)
    init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), init.name))
    onnx.save(proto, str(path))


def _flip(path: Path, at: float = 0.5, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i:i + n] = bytes(b ^ 0xFF for b in data[i:i + n])
    path.write_bytes(bytes(data))


def _rebuilt(caplog: pytest.LogCaptureFixture) -> list[str]:
    msgs = [r.getMessage() for r in caplog.records if "rebuilding" in r.getMessage()]
    assert all("\n" not in m for m in msgs)
    return msgs


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
@pytest.mark.parametrize("tamper", ["swap", "negate", "flip", "truncate", "manifest"])
def test_a_tampered_whole_export_is_rebuilt(backend: str, tamper: str, caplog) -> None:
    a = lksmn()
    x = _x()
    path = build(a, backend, "fp32").path
    assert _err(build(a, backend, "fp32"), a, x) <= 1e-4
    if tamper == "swap":  # another network's checked export, same scale, put in this one's place
        other = build(hasn(), backend, "fp32").path
        shutil.copyfile(other, path)
        # The swapped graph would run and give another network's output: the check is what keeps it out.
        wrong = lightsr.runtimes.onnxruntime.OnnxModel(path) if backend == "onnxruntime" else None
        if wrong is not None:
            with torch.no_grad():
                assert float((wrong(x) - a(x)).abs().max()) > 1e-2
    elif tamper == "negate":
        _negate_largest_tensor(path)
    elif tamper == "flip":
        _flip(path)
    elif tamper == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # the manifest itself damaged
        m = artifacts.manifest_path(path)
        m.write_text(m.read_text()[:-20])
    with caplog.at_level(logging.WARNING, logger="lightsr"):
        rt = build(a, backend, "fp32")
    assert _err(rt, a, x) <= 1e-4
    assert [m for m in _rebuilt(caplog) if str(path) in m], caplog.text
    assert artifacts.verify(path, json.loads(artifacts.manifest_path(path).read_text())["built_from"]) is None


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
def test_a_missing_manifest_or_graph_is_rebuilt(backend: str, caplog) -> None:
    a = lksmn()
    path = build(a, backend, "fp32").path
    artifacts.manifest_path(path).unlink()  # an export without its record (copied in, or an older lightsr's)
    with caplog.at_level(logging.WARNING, logger="lightsr"):
        rt = build(a, backend, "fp32")
    assert _err(rt, a, _x()) <= 1e-4 and any("no manifest" in m for m in _rebuilt(caplog))
    path.unlink()  # the graph gone, its manifest left
    assert _err(build(a, backend, "fp32"), a, _x()) <= 1e-4 and path.is_file()


def test_a_rebuild_that_fails_its_check_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightsr.runtimes.graphs as graphs

    backend = GRAPH_BACKENDS[0]
    a = lksmn()
    path = build(a, backend, "fp32").path
    _negate_largest_tensor(path)
    monkeypatch.setattr(graphs, "EXPORT_ATOL", -1.0)  # no rebuild can pass
    with pytest.raises(LightSRError, match=r"differs from PyTorch") as e:
        build(a, backend, "fp32")
    assert "\n" not in str(e.value)
    assert not path.exists() and not artifacts.manifest_path(path).exists()  # the tampered graph is gone


def _stage_folder(rt) -> Path:
    rt.forward_tiled(_x(), 12, lambda *_: None)
    home = Path(rt.path).parent
    (folder,) = [p for p in home.iterdir() if "-stages-" in p.name and p.is_dir()]
    return folder


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
@pytest.mark.parametrize("tamper", ["missing", "swapped", "negated", "extra"])
def test_tampered_stage_graphs_are_rebuilt(backend: str, tamper: str, caplog) -> None:
    """Exact tiles run every per-tile stage as a graph: each of them is verified before the tiles run."""
    a = lksmn()
    folder = _stage_folder(build(a, backend, "fp32"))
    graphs = sorted(folder.glob("*.onnx"))
    if tamper == "missing":
        graphs[0].unlink()
    elif tamper == "swapped":  # two stages of the same block swapped
        one, two = [p for p in graphs if p.name.startswith("blocks.0.")][:2]
        a_bytes, b_bytes = one.read_bytes(), two.read_bytes()
        one.write_bytes(b_bytes)
        two.write_bytes(a_bytes)
    elif tamper == "negated":
        _negate_largest_tensor(max(graphs, key=lambda p: p.stat().st_size))
    else:
        (folder / "extra.onnx").write_bytes(graphs[0].read_bytes())
    x = _x(31, 40, seed=3)
    rows: list[torch.Tensor] = []
    with caplog.at_level(logging.WARNING, logger="lightsr"):
        build(a, backend, "fp32").forward_tiled(x, 12, lambda _y0, b: rows.append(b.clone()))
    with torch.no_grad():
        ref = a(x)[0]
    assert float((torch.cat(rows, 1) - ref).abs().max()) <= 1e-4
    assert [m for m in _rebuilt(caplog) if "stage graphs" in m and str(folder) in m], caplog.text


@pytest.mark.skipif(not HAS_OV, reason="openvino not installed")
@pytest.mark.parametrize("tamper", ["flip", "other", "truncate"])
def test_a_changed_openvino_compiled_model_is_rebuilt(tamper: str, caplog) -> None:
    a, b = lksmn(), hasn()
    x = _x()
    build(a, "openvino", "fp32")
    build(b, "openvino", "fp32")
    blobs = sorted((Path(build(a, "openvino", "fp32").path).parent / "openvino").glob("*.blob"))
    assert len(blobs) == 2 and all(artifacts.manifest_path(p).is_file() for p in blobs)
    for blob in blobs:
        if tamper == "flip":
            _flip(blob, 0.6, 16)
        elif tamper == "truncate":
            blob.write_bytes(blob.read_bytes()[:1000])
        else:
            shutil.copyfile(blobs[1 - blobs.index(blob)], blob) if blob == blobs[0] else None
    with caplog.at_level(logging.WARNING, logger="lightsr"):
        rt_a, rt_b = build(a, "openvino", "fp32"), build(b, "openvino", "fp32")
    assert _err(rt_a, a, x) <= 1e-4 and _err(rt_b, b, x) <= 1e-4
    assert [m for m in _rebuilt(caplog) if "OpenVINO compiled model" in m], caplog.text


def test_a_file_where_the_export_folder_must_be_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "exports").write_text("not a folder")
    with pytest.raises(LightSRError, match=r"^LIGHTSR_HOME=.*: a file stands where the folder must be .*exports\)"
                                           r"; set LIGHTSR_HOME to a writable folder$"):
        build(lksmn(), GRAPH_BACKENDS[0], "fp32")
    # on the command line: status 1, that one line, no output
    weights = lightsr.save_model(lksmn(), tmp_path / "m.safetensors")
    img = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.zeros((12, 14, 3), np.uint8)).save(img)
    capsys.readouterr()
    assert main(["upscale", str(img), "-o", str(tmp_path / "out"), "--weights", str(weights),
                 "--backend", GRAPH_BACKENDS[0]]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exports" in err and "set LIGHTSR_HOME" in err, err
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_eval_after_a_swap_scores_the_requested_network(tmp_path: Path, caplog) -> None:
    """Without verification, another network's export in this one's place made ``eval`` report that network's PSNR.
    Now the swap is rebuilt and ``eval --backend onnxruntime`` agrees with the torch backend; so does
    ``upscale``'s image."""
    if "onnxruntime" not in GRAPH_BACKENDS:
        pytest.skip("onnxruntime not installed")
    from PIL import Image

    data = tmp_path / "data" / "Tiny"
    (data / "HR").mkdir(parents=True)
    g = np.random.default_rng(0)
    for i in range(2):
        hr = F.interpolate(torch.from_numpy(g.random((1, 3, 8, 10), dtype=np.float32)), size=(32, 40),
                           mode="bicubic").clamp(0, 1)
        Image.fromarray((hr[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(data / "HR" / f"{i}.png")
    wa = lightsr.save_model(lksmn(), tmp_path / "a.safetensors")
    wb = lightsr.save_model(hasn(), tmp_path / "b.safetensors")

    def score(weights: Path, backend: str) -> float:
        out = tmp_path / f"r-{weights.stem}-{backend}"
        assert main(["eval", "--weights", str(weights), "--data", str(data.parent), "--sets", "Tiny",
                     "--backend", backend, "--output", str(out), "-q"]) == 0
        return json.loads(Path(f"{out}.json").read_text())["sets"][0]["psnr"]

    torch_a, torch_b = score(wa, "torch"), score(wb, "torch")
    assert abs(torch_a - torch_b) > 0.01  # two networks that score apart
    assert abs(score(wa, "onnxruntime") - torch_a) < 1e-3
    assert abs(score(wb, "onnxruntime") - torch_b) < 1e-3
    exports = Path(tmp_path / "home" / "exports")
    (ea,) = exports.glob("lksmn_*.onnx")
    (eb,) = exports.glob("hasn_*.onnx")
    shutil.copyfile(eb, ea)
    with caplog.at_level(logging.WARNING, logger="lightsr"):
        assert abs(score(wa, "onnxruntime") - torch_a) < 1e-3
    assert [m for m in _rebuilt(caplog) if m.startswith(f"{ea}: cached graph not used")]
    # upscale after a negated tensor: the same image as the torch backend, status 0
    _negate_largest_tensor(ea)
    img = data / "HR" / "0.png"
    outs = {}
    for backend in ("torch", "onnxruntime"):
        assert main(["upscale", str(img), "-o", str(tmp_path / backend), "--weights", str(wa),
                     "--backend", backend, "-q"]) == 0
        (outs[backend],) = (tmp_path / backend).iterdir()
    diff = np.abs(np.asarray(Image.open(outs["torch"]), np.int16) - np.asarray(Image.open(outs["onnxruntime"]),
                                                                                 np.int16))
    assert diff.max() <= 1
