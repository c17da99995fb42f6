"""Precision ``auto`` and the inference runtimes (``lightsr.runtimes``): the registry, selection and equivalence.

No timing here (benchmarks/latency.py measures speed). What is checked: ``auto`` picks bf16 exactly when the
device reports native bf16 and is exact fp32 otherwise; every network's bf16 inference form stays close to the
float32 training form; OpenVINO and onnxruntime run the fused export within 1e-4 of the training form at sizes the
export never saw, tiled like the torch runtime (networks with global operators: every per-tile stage of the
layer-streamed execution as a graph, exact like torch's streamed tiles); exports are cached by the weights' hash;
errors are one line. A toy runtime registered for one test goes through everything generic — the Upscaler,
``eval``, ``profile`` and the commands' choices — by its registry record alone.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import lightsr
import lightsr.device
import lightsr.runtimes
from conftest import calibrated, registry_networks
from lightsr.cli import main
from lightsr.device import auto_precision, native_bf16
from lightsr.errors import UsageError
from lightsr.models.registry import specs
from lightsr.runtimes import RUNTIMES, build
from lightsr.upscaler import Upscaler

# Every network, the large ones with 4 of their blocks (as in test_export.py).
NETWORKS = registry_networks()
# The networks whose tiles stream layer by layer (global operators), small enough for many stage graphs.
STREAMED = [s.name for s in specs() if s.tiling.global_context]
# The installed runtimes that run the network's ONNX export.
GRAPH_BACKENDS = [name for name, spec in RUNTIMES.items()
                  if spec.graph and all(importlib.util.find_spec(m) is not None for m in spec.requires)]
HAS_OV = "openvino" in GRAPH_BACKENDS


def image_like(h: int, w: int, seed: int = 0, n: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, max(h // 4, 2), max(w // 4, 2), generator=g), size=(h, w),
                         mode="bicubic").clamp(0, 1)


def network(name: str, overrides: dict, scale: int = 4) -> lightsr.SRNet:
    torch.manual_seed(0)
    return calibrated(lightsr.create_model(name, scale=scale, **overrides))


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTSR_HOME", str(tmp_path / "home"))


def _cpu_reports(monkeypatch: pytest.MonkeyPatch, flags: set[str]) -> None:
    """Make the CPU look as if /proc/cpuinfo listed ``flags`` (PyTorch's own CPUID probes agree)."""
    monkeypatch.setattr(lightsr.device, "_cpu_flags", lambda: set(flags))
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: "amx_bf16" in flags, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: "avx512_bf16" in flags, raising=False)


# ------------------------------------------------------------------------------------------------ auto precision


@pytest.mark.parametrize(("flags", "expected"), [(set(), "fp32"), ({"avx512f", "avx2"}, "fp32"),
                                                  ({"avx512_bf16"}, "bf16"), ({"amx_bf16", "amx_tile"}, "bf16")])
def test_auto_precision_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, flags: set[str], expected: str) -> None:
    _cpu_reports(monkeypatch, flags)
    cpu = torch.device("cpu")
    assert native_bf16(cpu) is (expected == "bf16")
    assert auto_precision(cpu) == expected
    assert auto_precision(cpu, ("fp32",)) == "fp32"  # a network without bf16 stays fp32
    up = Upscaler(network("lksmn", {}), precision="auto", device="cpu")
    assert up.precision == expected and up.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)


def test_auto_on_a_cpu_without_bf16_is_exactly_fp32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_reports(monkeypatch, {"avx2", "fma"})
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((20, 26, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    model = network("hasn", {})
    weights = lightsr.save_model(model, tmp_path / "m.safetensors")
    # auto is upscale's default: no flag at all
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "auto.png"), "--weights", str(weights),
                 "-q"]) == 0
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "fp32.png"), "--weights", str(weights),
                 "--precision", "fp32", "-q"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "auto.png")), np.asarray(Image.open(tmp_path / "fp32.png")))


def test_auto_on_a_bf16_cpu_runs_bf16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_reports(monkeypatch, {"avx512_bf16"})
    img = (np.random.default_rng(1).random((20, 26, 3)) * 255).astype(np.uint8)
    model = network("hasn", {})
    auto = Upscaler(model, precision="auto").upscale(img)
    assert np.array_equal(auto, Upscaler(model, precision="bf16").upscale(img))


@pytest.mark.parametrize(("name", "overrides"), NETWORKS, ids=[n for n, _ in NETWORKS])
def test_bf16_inference_form_stays_close_to_the_fp32_training_form(name: str, overrides: dict) -> None:
    """bf16 keeps 8 bits of mantissa: on [0, 1] images the output may move by a few 1e-3, never by a level's
    worth on average; the float32-sensitive steps (softmax, normalisation, MDTA's Gram matrix) stay float32."""
    model = network(name, overrides)
    x = image_like(37, 45, seed=2)
    with torch.no_grad():
        ref = model(x)
        y = model.fuse().to(torch.bfloat16)(x.bfloat16()).float()
    assert torch.isfinite(y).all()
    err = (y - ref).abs()
    print(f"{name}: bf16 max {err.max():.2e}, mean {err.mean():.2e}")
    assert err.mean() < 2e-3 and err.max() < 0.05


# ------------------------------------------------------------------------------------------------ backends


@pytest.mark.skipif(not HAS_OV, reason="openvino not installed (pip install 'lightsr[openvino]')")
@pytest.mark.parametrize(("name", "overrides"), NETWORKS, ids=[n for n, _ in NETWORKS])
def test_openvino_fp32_matches_the_training_form_at_unseen_sizes(name: str, overrides: dict) -> None:
    model = network(name, overrides, scale=3)
    rt = build(model, "openvino", "fp32")
    assert (rt.runtime, rt.precision, rt.scale) == ("openvino", "fp32", 3)
    for shape in ((1, 23, 41), (2, 9, 6)):  # neither the export dummy nor its check; batch of 2
        x = image_like(shape[1], shape[2], seed=shape[1], n=shape[0])
        with torch.no_grad():
            ref = model(x)
        err = float((rt(x) - ref).abs().max())
        print(f"{name} {shape}: max |openvino - torch| = {err:.2e}")
        assert err <= 1e-4


WRAPPED = [s.name for s in specs() if s.tiling.wrap]


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
@pytest.mark.parametrize("name", WRAPPED)
def test_graph_backends_tile_wrapped_networks_exactly_like_torch(name: str, backend: str) -> None:
    """Networks whose tiles wrap around the image border (ELAN's cyclic shifts): the torch backend places zero
    gaps at the seams inside the network (SeamHooks); the graph backends run an export that takes the seams as
    an input, so their tiles are exact too — tiled against whole-image output, > 90 dB and at most 1 level,
    as for torch (blended tiles without the seams: ~55 dB, 3 levels). The seamed graph itself against the
    PyTorch form under SeamHooks at seams and sizes its check did not use."""
    from lightsr.runtimes.graphs import SEAM_CHECKS, SEAM_TRACE
    from lightsr.seams import SeamHooks

    torch.manual_seed(0)
    model = calibrated(lightsr.create_model(name, scale=3, num_blocks=2))
    rt = build(model, backend, "fp32")
    assert rt.seamed is not None
    form = model.fuse()
    hooks = SeamHooks(form)
    for h, w, row, col in ((48, 80, 16, None), (32, 32, None, 16), (64, 48, 48, 32)):
        assert (h, w, row, col) != SEAM_TRACE and (1, h, w, row, col) not in SEAM_CHECKS
        x = image_like(h, w, seed=h + w)
        hooks.seams = (row, col)
        with torch.no_grad(), hooks:
            ref = form(x)
        err = float((rt.seamed(x, (row, col)) - ref).abs().max())
        print(f"{name} {backend} {h}×{w} seams {row}, {col}: max |graph - torch| = {err:.2e}")
        assert err <= 1e-4
    img = (image_like(70, 90, seed=5)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    def tiled_vs_whole(backend: str) -> tuple[float, float]:
        whole = Upscaler(model, backend=backend, precision="fp32", tile=0).upscale(img)
        up = Upscaler(model, backend=backend, precision="fp32", tile=32)
        assert up.plan(70, 90).wrap and up.plan(70, 90).n_tiles > 1
        return _levels_psnr(up.upscale(img), whole)

    (g_psnr, g_max), (pt_psnr, pt_max) = tiled_vs_whole(backend), tiled_vs_whole("torch")
    print(f"tiled vs whole: {backend} {g_psnr:.1f} dB / {g_max:.0f} levels, torch {pt_psnr:.1f} dB / {pt_max:.0f}")
    assert pt_psnr > 90 and pt_max <= 1
    assert g_psnr > 90 and g_max <= 1


def _tiny_streamed(name: str) -> lightsr.SRNet:
    torch.manual_seed(0)
    return calibrated(lightsr.create_model(name, scale=3, channels=12, num_blocks=2))


def _levels_psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = float(np.mean(diff**2))
    return (10 * np.log10(255**2 / mse) if mse else np.inf), float(np.abs(diff).max())


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
@pytest.mark.parametrize("name", STREAMED)
def test_graph_backends_tile_exactly_like_the_torch_backend(name: str, backend: str) -> None:
    """Networks with global operators: the graph backends stream the tiles layer by layer as torch does, each
    per-tile stage a graph of its own, so tiled output is the whole-image output (independent reference: the
    float32 training form), at image and tile sizes the stage graphs were neither traced nor checked at."""
    import copy

    from lightsr.runtimes.graphs import STAGE_CHECKS, STAGE_TRACE

    model = _tiny_streamed(name)
    rt = build(model, backend, "fp32")
    assert rt.forward_tiled is not None
    # The stage graphs are made from the weights as they were at build(), whatever the caller does later.
    caller = model
    model = copy.deepcopy(model)
    with torch.no_grad():
        next(caller.parameters()).add_(0.5)
    for h, w, tile in ((31, 50, 13), (40, 23, 17)):
        assert (h, w, tile) != STAGE_TRACE and (h, w, tile) not in STAGE_CHECKS
        x = image_like(h, w, seed=h)
        rows: list[tuple[int, torch.Tensor]] = []
        rt.forward_tiled(x, tile, lambda y0, b, rows=rows: rows.append((y0, b.clone())))
        assert [y0 for y0, _ in rows] == sorted({y0 for y0, _ in rows}) and len(rows) > 1
        with torch.no_grad():
            ref = model(x)[0]
        err = float((torch.cat([b for _, b in rows], 1) - ref).abs().max())
        print(f"{name} {backend} {h}×{w} tile {tile}: max |streamed graphs - torch| = {err:.2e}")
        assert err <= 1e-4
    # Through the Upscaler, as `upscale --tile` runs it: tiled against whole-image output on uint8 images.
    img = (image_like(44, 57, seed=5)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    whole = Upscaler(model, backend=backend, tile=0).upscale(img)
    up = Upscaler(model, backend=backend, tile=20)
    assert up.plan(44, 57).streamed and up.plan(44, 57).n_tiles > 1
    psnr, worst = _levels_psnr(up.upscale(img), whole)
    print(f"{name} {backend} tiled vs whole: {psnr:.1f} dB / {worst:.0f} levels")
    assert psnr > 90 and worst <= 1


@pytest.mark.skipif(not HAS_OV, reason="openvino not installed")
def test_stage_graphs_are_cached_and_a_failed_check_keeps_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightsr.runtimes.graphs as graphs
    from lightsr.export import ExportError

    model = _tiny_streamed("lksmn")
    x = image_like(30, 30)
    exports = []
    real = graphs._StageExporter.__call__
    monkeypatch.setattr(graphs._StageExporter, "__call__", lambda s, *a: exports.append(a[:2]) or real(s, *a))
    rt = build(model, "openvino", "fp32")
    monkeypatch.setattr(graphs, "EXPORT_ATOL", -1.0)  # no runtime can pass the stages' check
    with pytest.raises(ExportError, match="openvino running the tiles' stages differs from PyTorch"):
        rt.forward_tiled(x, 12, lambda *_: None)
    assert not [p.name for p in graphs.export_dir().iterdir() if "-stages-" in p.name]  # nor a temporary
    monkeypatch.setattr(graphs, "EXPORT_ATOL", 1e-4)
    exports.clear()
    build(model, "openvino", "fp32").forward_tiled(x, 12, lambda *_: None)
    first = len(exports)
    assert first > 0
    build(model, "openvino", "fp32").forward_tiled(x, 12, lambda *_: None)
    assert len(exports) == first  # the second runtime reads the cached graphs
    stages = {f"{type(owner).__name__}.{method}" for owner, method in exports}
    assert stages == {"Conv2d.forward", "FusedLKSMB.msma", "FusedLKSMB.qk_map", "FusedLKSMB.after_mdta",
                      "FusedLKSMN.output_stage"}
    folders = [p for p in graphs.export_dir().iterdir() if "-stages-" in p.name and p.is_dir()]
    assert len(folders) == 1 and not folders[0].name.startswith(".")
    # One graph per stage of each block (2 blocks), the shallow features and the output stage.
    assert len(list(folders[0].glob("*.onnx"))) == 2 * 3 + 2


@pytest.mark.skipif(not HAS_OV, reason="openvino not installed")
def test_a_signal_after_openvino_graphs_were_freed_is_handled(tmp_path: Path) -> None:
    """A process that ran and freed OpenVINO graphs still handles SIGTERM in Python (as `lightsr` and servers
    do): with a core per graph the freed CPU plugin made the handler crash the process with SIGSEGV."""
    import subprocess
    import sys

    code = (
        "import os, signal, torch, lightsr\n"
        "from lightsr.runtimes import build\n"
        "torch.manual_seed(0)\n"
        "m = lightsr.create_model('lksmn', scale=2, channels=12, num_blocks=1).eval()\n"
        "def run():\n"
        "    build(m, 'openvino', 'fp32').forward_tiled(torch.rand(1, 3, 20, 20), 8, lambda *a: None)\n"
        "run()\n"
        "def handler(*a):\n"
        "    raise KeyboardInterrupt\n"
        "signal.signal(signal.SIGTERM, handler)\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    signal.pause()\n"
        "except KeyboardInterrupt:\n"
        "    print('handled')\n"
    )
    env = {**os.environ, "LIGHTSR_HOME": str(tmp_path / "home")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert (res.returncode, res.stdout) == (0, "handled\n"), res.stderr[-500:]


@pytest.mark.skipif(not HAS_OV, reason="openvino not installed")
def test_exports_are_cached_by_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightsr.runtimes.graphs as graphs
    from lightsr.runtimes.graphs import export_dir

    calls = []
    real = graphs.write_graph
    monkeypatch.setattr(graphs, "write_graph", lambda m, *a, **k: calls.append(type(m).__name__) or real(m, *a, **k))
    a = network("lksmn", {"channels": 12, "num_blocks": 1}, scale=2)
    build(a, "openvino", "fp32")
    build(a, "openvino", "fp32")
    # One export, of the form the spec names, and no temporary left beside it.
    from lightsr.models.registry import model_spec

    form = model_spec("lksmn").graph_form
    assert calls == [type(a.fuse() if form == "fused" else a).__name__]
    assert sorted(p.name.startswith(".") for p in export_dir().iterdir() if p.is_file()) == [False, False]
    assert len(list(export_dir().glob("*.onnx.manifest.json"))) == 1
    b = network("lksmn", {"channels": 12, "num_blocks": 1}, scale=2)
    with torch.no_grad():
        next(b.parameters()).add_(1e-3)  # other weights: another export
    build(b, "openvino", "fp32")
    assert len(calls) == 2 and len(list(export_dir().glob("*.onnx"))) == 2


def test_runtime_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    model = network("lksmn", {"channels": 12, "num_blocks": 1}, scale=2)
    with pytest.raises(UsageError, match=r"^--precision bf16: --backend onnxruntime runs fp32$"):
        build(model, "onnxruntime", "bf16")
    with pytest.raises(UsageError, match=r"^--backend 'tensorrt': choose one of torch, onnxruntime, openvino$"):
        build(model, "tensorrt", "fp32")
    with pytest.raises(UsageError, match=r"^--no-fuse applies to --backend torch \(--backend onnxruntime runs"):
        build(model, "onnxruntime", "fp32", fuse=False)
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else real_find(n, *a))
    with pytest.raises(UsageError, match=r"lightsr\[openvino\]"):
        build(model, "openvino", "fp32")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--backend", "openvino"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lightsr[openvino]" in err[0] and not (tmp_path / "b.png").exists()


def test_onnxruntime_backend_and_eval_precision(tmp_path: Path, capsys) -> None:
    """``eval --backend onnxruntime`` scores what the torch backend scores (fp32, within rounding), and
    ``--precision`` is reported; bf16 scores move by little."""
    pytest.importorskip("onnxruntime")
    import json

    from conftest import require_shared

    root = require_shared("data/benchmark/Set5").parent
    weights = lightsr.save_model(network("lksmn", {}, scale=4), tmp_path / "m.safetensors")
    scores = {}
    for backend, precision in (("torch", "fp32"), ("onnxruntime", "fp32"), ("torch", "bf16")):
        out = tmp_path / f"{backend}-{precision}"
        assert main(["eval", "--weights", str(weights), "--data", str(root), "--sets", "Set5", "--backend", backend,
                     "--precision", precision, "--output", str(out), "-q"]) == 0
        report = json.loads(Path(f"{out}.json").read_text())
        assert (report["backend"], report["precision"]) == (backend, precision)
        scores[backend, precision] = report["sets"][0]["psnr"]
    capsys.readouterr()
    assert abs(scores["onnxruntime", "fp32"] - scores["torch", "fp32"]) < 1e-3
    # upscale's summary line names the backend when it is not torch
    img = tmp_path / "a.png"
    Image.fromarray((image_like(20, 24)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(img)
    assert main(["upscale", str(img), "-o", str(tmp_path / "up"), "--weights", str(weights),
                 "--backend", "onnxruntime"]) == 0
    assert "(lksmn, cpu, fp32, onnxruntime)" in capsys.readouterr().err
    assert abs(scores["torch", "bf16"] - scores["torch", "fp32"]) < 0.05


# ------------------------------------------------------------------------------------------------ the registry


def _toy_build(model: lightsr.SRNet, precision: str, device: torch.device, threads: int | None,
               fuse: bool) -> lightsr.runtimes.Runtime:
    """A toy runtime: the inference form computed in float64 (a plugin would wrap another engine the same way),
    counting its calls."""
    form = (model.fuse() if fuse else model).to(device, torch.float64).eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        _TOY_CALLS.append(tuple(x.shape))
        with torch.inference_mode():
            return form(x.to(device, torch.float64)).float()

    return lightsr.runtimes.Runtime(forward, model.scale, model.arch, precision, device, module=form)


_TOY_CALLS: list[tuple[int, ...]] = []
TOY = lightsr.runtimes.RuntimeSpec("toy", _toy_build, "float64 PyTorch (a test's toy)", precisions=("fp32",),
                                   devices=("cpu",))


def test_a_toy_runtime_goes_through_every_generic_part_by_its_record(tmp_path: Path, capsys) -> None:
    """Registered for one test, a runtime is a --backend choice of every command that takes one, runs in the
    Upscaler, eval and profile, and is held to its record (precisions, devices); afterwards it is gone."""
    import json

    from lightsr.runtimes import registered

    net = network("lksmn", {"channels": 12, "num_blocks": 1}, scale=2)
    weights = lightsr.save_model(net, tmp_path / "toy_net.safetensors")
    img = (image_like(20, 26, seed=4)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    sets = tmp_path / "data" / "Mini" / "HR"
    sets.mkdir(parents=True)
    Image.fromarray((image_like(24, 32, seed=5)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(
        sets / "a.png")
    Image.fromarray(img).save(tmp_path / "in.png")
    with registered(TOY):
        assert list(RUNTIMES)[-1] == "toy"
        for command in ("upscale", "eval", "profile"):
            with pytest.raises(SystemExit):
                main([command, "--help"])
            assert "toy: float64 PyTorch (a test's toy)" in " ".join(capsys.readouterr().out.split())
        # The Upscaler: float64 against the float32 torch runtime, whole and tiled (blended: the toy has no
        # streamed execution, so the plan says so).
        _TOY_CALLS.clear()
        up = Upscaler(net, backend="toy", precision="auto", tile=0)
        assert (up.backend, up.precision, up.device.type) == ("toy", "fp32", "cpu")
        got = up.upscale(img)
        ref = Upscaler(net, precision="fp32", tile=0).upscale(img)
        assert _TOY_CALLS == [(1, 3, 20, 26)] and np.abs(got.astype(int) - ref).max() <= 1
        tiled = Upscaler(net, backend="toy", tile=8)
        assert not tiled.plan(20, 26).streamed and tiled.plan(20, 26).n_tiles > 1
        assert np.abs(tiled.upscale(img).astype(int) - ref).max() <= 3
        with pytest.raises(UsageError, match=r"^--precision bf16: --backend toy runs fp32$"):
            Upscaler(net, backend="toy", precision="bf16")
        with pytest.raises(UsageError, match=r"^--backend toy runs on cpu, not --device cuda:0$"):
            build(net, "toy", device="cuda:0")
        # The command line: upscale, eval and profile by name.
        assert main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--weights",
                     str(weights), "--backend", "toy", "--tile", "0"]) == 0
        assert "(lksmn, cpu, fp32, toy)" in capsys.readouterr().err
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), got)
        assert main(["eval", "--weights", str(weights), "--data", str(tmp_path / "data"), "--sets", "Mini",
                     "--backend", "toy", "--output", str(tmp_path / "r"), "-q"]) == 0
        toy_report = json.loads((tmp_path / "r.json").read_text())
        assert main(["eval", "--weights", str(weights), "--data", str(tmp_path / "data"), "--sets", "Mini",
                     "--output", str(tmp_path / "t"), "-q"]) == 0
        torch_report = json.loads((tmp_path / "t.json").read_text())
        assert (toy_report["backend"], toy_report["precision"], torch_report["backend"]) == ("toy", "fp32", "torch")
        assert abs(toy_report["sets"][0]["psnr"] - torch_report["sets"][0]["psnr"]) < 0.01
        capsys.readouterr()
        _TOY_CALLS.clear()
        assert main(["profile", "--weights", str(weights), "--latency", "16x12", "--runs", "2", "--backend", "toy",
                     "--json"]) == 0
        prof = json.loads(capsys.readouterr().out)
        assert (prof["backend"], prof["precision"]) == ("toy", "fp32") and _TOY_CALLS == [(1, 3, 12, 16)] * 3
    assert "toy" not in RUNTIMES
    with pytest.raises(SystemExit):
        main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "x.png"), "--backend", "toy"])
    assert "invalid choice: 'toy'" in capsys.readouterr().err


def test_the_registry_refuses_what_its_records_rule_out(tmp_path: Path) -> None:
    from lightsr.runtimes import check_runtime, default_runtime, register, registered, runtime_spec
    from lightsr.runtimes.base import OnnxFile

    with pytest.raises(ValueError, match="already registered"):
        register(dataclasses.replace(TOY, name="torch"))
    needs = lightsr.runtimes.RuntimeSpec("needy", _toy_build, "", ("fp32",), ("cpu",), extra="needy",
                                         requires=("lightsr_no_such_module",))
    with registered(needs):
        assert runtime_spec("needy") is needs
        with pytest.raises(UsageError, match=r"^--backend needy needs lightsr_no_such_module: pip install "
                                             r"'lightsr\[needy\]'$"):
            check_runtime("needy")
    with pytest.raises(UsageError, match=r"^--backend 'needy': choose one of"):
        runtime_spec("needy")
    # What runs a network or an exported file when no runtime is named: the registry says.
    assert default_runtime(None) == "torch"
    assert default_runtime(OnnxFile(tmp_path / "m.onnx")) == next(n for n, s in RUNTIMES.items() if s.open_file)
    # A runtime that does not run exported files says which do.
    with pytest.raises(UsageError, match=r"^--backend toy: an exported \.onnx file runs with onnxruntime or "
                                         r"openvino;"), registered(TOY):
        build(OnnxFile(tmp_path / "m.onnx"), "toy")
