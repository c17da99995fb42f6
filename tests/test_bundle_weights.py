"""scripts/bundle_weights.py: a training run becomes a shipped file, and never replaces a better one.

A tiny run is bundled against three tiny benchmark folders; the file must carry the scores of the run's newest
EMA weights (evaluated here independently of the script), the record the model cards read, and a file already in
place must be replaced only when the new one scores higher everywhere both were scored.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lightsr
from conftest import REPO_ROOT, require_shared
from lightsr.bundled import bundled_metadata, run_record
from lightsr.checkpoints import save_model
from lightsr.evaluate import evaluate
from lightsr.train.config import config_from_dict
from lightsr.train.trainer import train
from test_trainer import tiny_config

SETS = ("Set5", "Set14", "B100")


def _script():
    spec = importlib.util.spec_from_file_location("bundle_weights", REPO_ROOT / "scripts" / "bundle_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    """A 4-iteration tiny run, three benchmark folders of two 48×48 crops each (plain HR: the LR is made by
    MATLAB bicubic), and the script's first bundle of the run."""
    tmp = tmp_path_factory.mktemp("bundle")
    train(config_from_dict(tiny_config(tmp, "tiny", train={"max_iters": 4, "ema_decay": 0.5})))
    sources = sorted(require_shared("data/train/BSD200").glob("*.png"))
    rng = np.random.default_rng(0)
    for i, name in enumerate(SETS):
        (tmp / "bench" / name).mkdir(parents=True)
        for j in range(2):
            img = np.asarray(Image.open(sources[2 * i + j]).convert("RGB"))
            y, x = rng.integers(0, img.shape[0] - 48), rng.integers(0, img.shape[1] - 48)
            Image.fromarray(img[y:y + 48, x:x + 48]).save(tmp / "bench" / name / f"{name}_{j}.png")
    mod = _script()
    run = tmp / "runs" / "tiny"
    args = [str(run), "--hardware", "a test", "--data", str(tmp / "bench"), "--out", str(tmp / "out"),
            "--scores", str(tmp / "scores.json"), "--threads", "1"]
    _bundle(mod, args)
    return mod, run, args, tmp / "out" / "hasn_x4.safetensors", tmp / "scores.json", tmp / "bench"


def _bundle(mod, args: list[str]) -> None:
    old = sys.argv
    sys.argv = ["bundle_weights.py", *args]
    try:
        mod.main()
    finally:
        sys.argv = old


def _with_scores(path: Path, psnr_ssim: str) -> None:
    """Rewrite the bundled file at ``path`` with other recorded scores (a stand-in for a file bundled earlier)."""
    meta = bundled_metadata(path)
    save_model(lightsr.load_model(path), path, extra={k: v for k, v in meta.items() if k not in ("arch", "scale")}
               | {"psnr_ssim": psnr_ssim})


def test_the_file_carries_the_newest_ema_weights_and_their_scores(bundled) -> None:
    _, run, _, path, scores, bench = bundled
    meta = bundled_metadata(path)
    rec = run_record(meta)
    assert (rec["run"], rec["checkpoint"], rec["iterations"], rec["hardware"]) == ("tiny", "iter_00000004", 4,
                                                                                  "a test")
    assert meta["weights"] == "EMA" and rec["train_data"] == "T91" and rec["train_images"] > 0
    ema = lightsr.load_model(run / "checkpoints" / "iter_00000004" / "ema.safetensors")
    raw = lightsr.load_model(run / "checkpoints" / "iter_00000004" / "model.safetensors")
    shipped = lightsr.load_model(path)
    assert (shipped.arch, shipped.scale) == ("hasn", 4)
    for a, b in zip(shipped.state_dict().values(), ema.state_dict().values(), strict=True):
        assert (a == b).all()
    recorded = json.loads(meta["psnr_ssim"])
    for r, r_raw in zip(evaluate(ema.fuse(), bench, list(SETS), 4, progress=False),
                        evaluate(raw.fuse(), bench, list(SETS), 4, progress=False), strict=True):
        assert recorded[r.set] == [round(r.psnr, 4), round(r.ssim, 4)]
        assert abs(r.psnr - r_raw.psnr) > 1e-4  # the EMA weights, not the raw ones, were scored
    bicubic = {r.set: r.psnr for r in evaluate(None, bench, list(SETS), 4, progress=False)}
    assert {s: v[0] for s, v in json.loads(meta["bicubic_psnr_ssim"]).items()} == pytest.approx(bicubic, abs=1e-4)
    written = json.loads(scores.read_text())  # what the model cards read: the file's own record
    assert written["psnr_ssim"] == recorded and written["checkpoint"] == "iter_00000004"
    assert not Path(written["init_from"]).is_absolute() and "previous" not in written


def test_a_better_file_is_not_replaced_and_nothing_is_written(bundled, capsys) -> None:
    mod, _, args, path, scores, _ = bundled
    true = json.loads(bundled_metadata(path)["psnr_ssim"])
    better = {s: [v[0] + (1.0 if s == "B100" else -1.0), v[1]] for s, v in true.items()}
    _with_scores(path, json.dumps(better))
    before = path.read_bytes()
    scores.write_text('{"mark": 1}')
    with pytest.raises(SystemExit) as e:
        _bundle(mod, args)
    msg = str(e.value.code)
    assert "\n" not in msg and msg.startswith(f"{path}: not replaced") and "B100:" in msg
    assert "Set5" not in msg and "--allow-worse" in msg
    assert path.read_bytes() == before and scores.read_text() == '{"mark": 1}'
    capsys.readouterr()
    _bundle(mod, [*args, "--allow-worse"])  # a deliberate change of recipe
    assert json.loads(bundled_metadata(path)["psnr_ssim"]) == true
    assert json.loads(scores.read_text())["psnr_ssim"] == true


def test_a_worse_file_is_replaced_and_the_steps_printed(bundled, capsys) -> None:
    mod, _, args, path, _, _ = bundled
    true = json.loads(bundled_metadata(path)["psnr_ssim"])
    _with_scores(path, json.dumps({s: [v[0] - 0.001, v[1]] for s, v in true.items()}))
    capsys.readouterr()
    _bundle(mod, args)
    out = capsys.readouterr().out
    assert json.loads(bundled_metadata(path)["psnr_ssim"]) == true
    for s in SETS:
        assert f"replaced: {s} {true[s][0] - 0.001:.4f} -> {true[s][0]:.4f} (+0.0010 dB)" in out


@pytest.mark.parametrize("damage", ["scores", "file"])
def test_an_unreadable_file_in_place_is_a_one_line_refusal(bundled, damage) -> None:
    mod, _, args, path, _, _ = bundled
    if damage == "scores":
        _with_scores(path, '{"Set5": [')
    else:
        path.write_bytes(b"\x00" * 64)
    before = path.read_bytes()
    with pytest.raises(SystemExit) as e:
        _bundle(mod, args)
    msg = str(e.value.code)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and "not " in msg
    assert path.read_bytes() == before
    _bundle(mod, [*args, "--allow-worse"])  # and the next bundle puts a good file back
    assert bundled_metadata(path)["checkpoint"] == "iter_00000004"
