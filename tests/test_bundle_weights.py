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
from types import ModuleType

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
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two 4-iteration tiny runs, one on the bicubic track and one on the real-photo track, and three benchmark
    folders of two 48×48 crops each (plain HR: the LR is made by MATLAB bicubic)."""
    tmp = tmp_path_factory.mktemp("bundle")
    train(config_from_dict(tiny_config(tmp, "tiny", train={"max_iters": 4, "ema_decay": 0.5})))
    train(config_from_dict(tiny_config(tmp, "real", data={"degradation": {"type": "real"}},
                                       train={"max_iters": 4, "ema_decay": 0.5})))
    sources = sorted(require_shared("data/train/BSD200").glob("*.png"))
    rng = np.random.default_rng(0)
    for i, name in enumerate(SETS):
        (tmp / "bench" / name).mkdir(parents=True)
        for j in range(2):
            img = np.asarray(Image.open(sources[2 * i + j]).convert("RGB"))
            y, x = rng.integers(0, img.shape[0] - 48), rng.integers(0, img.shape[1] - 48)
            Image.fromarray(img[y:y + 48, x:x + 48]).save(tmp / "bench" / name / f"{name}_{j}.png")
    return {"tiny": tmp / "runs" / "tiny", "real": tmp / "runs" / "real", "bench": tmp / "bench"}


class Bundler:
    """The script, run on one of the tiny runs into a test's own folder (``out/hasn_x4.safetensors``)."""

    def __init__(self, runs: dict[str, Path], tmp: Path, run: str = "tiny") -> None:
        self.mod, self.run, self.bench = _script(), runs[run], runs["bench"]
        self.path, self.scores = tmp / "out" / "hasn_x4.safetensors", tmp / "scores.json"
        self.args = [str(self.run), "--hardware", "a test", "--data", str(self.bench), "--out", str(tmp / "out"),
                     "--scores", str(self.scores), "--threads", "1"]

    def __call__(self, *extra: str) -> None:
        old = sys.argv
        sys.argv = ["bundle_weights.py", *self.args, *extra]
        try:
            self.mod.main()
        finally:
            sys.argv = old

    def refused(self, *extra: str) -> str:
        """The one-line refusal, after checking that neither the file nor scores.json changed."""
        before = self.path.read_bytes() if self.path.exists() else None
        self.scores.write_text('{"mark": 1}')
        with pytest.raises(SystemExit) as e:
            self(*extra)
        assert (self.path.read_bytes() if self.path.exists() else None) == before
        assert self.scores.read_text() == '{"mark": 1}'
        msg = str(e.value.code)
        assert "\n" not in msg and msg.startswith(f"{self.path}: "), msg
        return msg


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bundle_weights", REPO_ROOT / "scripts" / "bundle_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rewrite(path: Path, **scores: object) -> None:
    """Rewrite the bundled file at ``path`` with other recorded scores (a stand-in for a file bundled earlier)."""
    meta = {k: v for k, v in bundled_metadata(path).items() if k not in ("arch", "scale")}
    meta |= {k: v if isinstance(v, str) else json.dumps(v) for k, v in scores.items()}
    save_model(lightsr.load_model(path), path, extra=meta)


def _recorded(path: Path, key: str = "psnr_ssim") -> dict:
    return json.loads(bundled_metadata(path)[key])


def test_the_file_carries_the_newest_ema_weights_and_their_scores(runs, tmp_path) -> None:
    bundle = Bundler(runs, tmp_path)
    bundle()
    meta = bundled_metadata(bundle.path)
    rec = run_record(meta)
    assert (rec["run"], rec["checkpoint"], rec["iterations"], rec["hardware"]) == ("tiny", "iter_00000004", 4,
                                                                                  "a test")
    assert meta["weights"] == "EMA" and rec["train_data"] == "T91" and rec["train_images"] > 0
    ckpt = bundle.run / "checkpoints" / "iter_00000004"
    ema, raw = lightsr.load_model(ckpt / "ema.safetensors"), lightsr.load_model(ckpt / "model.safetensors")
    shipped = lightsr.load_model(bundle.path)
    assert (shipped.arch, shipped.scale) == ("hasn", 4)
    for a, b in zip(shipped.state_dict().values(), ema.state_dict().values(), strict=True):
        assert (a == b).all()
    recorded = _recorded(bundle.path)
    for r, r_raw in zip(evaluate(ema.fuse(), bundle.bench, list(SETS), 4, progress=False),
                        evaluate(raw.fuse(), bundle.bench, list(SETS), 4, progress=False), strict=True):
        assert recorded[r.set] == [round(r.psnr, 4), round(r.ssim, 4)]
        assert abs(r.psnr - r_raw.psnr) > 1e-4  # the EMA weights, not the raw ones, were scored
    bicubic = {r.set: r.psnr for r in evaluate(None, bundle.bench, list(SETS), 4, progress=False)}
    assert {s: v[0] for s, v in _recorded(bundle.path, "bicubic_psnr_ssim").items()} == pytest.approx(
        bicubic, abs=1e-4)
    written = json.loads(bundle.scores.read_text())  # what the model cards read: the file's own record
    assert written["psnr_ssim"] == recorded and written["checkpoint"] == "iter_00000004"
    assert "degraded_psnr_ssim" not in written and "previous" not in written


def test_a_better_file_is_not_replaced_unless_asked(runs, tmp_path) -> None:
    bundle = Bundler(runs, tmp_path)
    bundle()
    true = _recorded(bundle.path)
    _rewrite(bundle.path, psnr_ssim={s: [v[0] + (1.0 if s == "B100" else -1.0), v[1]] for s, v in true.items()})
    msg = bundle.refused()
    assert msg.startswith(f"{bundle.path}: not replaced") and "B100 " in msg and "--allow-worse" in msg
    assert "Set5" not in msg and "Set14" not in msg
    bundle("--allow-worse")  # a deliberate change of recipe
    assert _recorded(bundle.path) == true and json.loads(bundle.scores.read_text())["psnr_ssim"] == true


def test_a_worse_file_is_replaced_and_the_steps_printed(runs, tmp_path, capsys) -> None:
    bundle = Bundler(runs, tmp_path)
    bundle()
    true = _recorded(bundle.path)
    _rewrite(bundle.path, psnr_ssim={s: [v[0] - 0.001, v[1]] for s, v in true.items()})
    capsys.readouterr()
    bundle()
    out = capsys.readouterr().out
    assert _recorded(bundle.path) == true
    for s in SETS:
        assert f"replaced: {s} {true[s][0] - 0.001:.4f} -> {true[s][0]:.4f} (+0.0010 dB)" in out


def test_a_real_photo_file_is_judged_under_every_degradation_it_records(runs, tmp_path) -> None:
    """A real-track run is scored under each --degrade condition; one condition where the file in place is
    better refuses the whole file, and so does a condition the new run was not scored under."""
    bundle = Bundler(runs, tmp_path, "real")
    bundle("--degrade", "jpeg:40", "noise:10,jpeg:60")
    degraded = _recorded(bundle.path, "degraded_psnr_ssim")
    assert sorted(degraded) == ["jpeg:40", "noise:10,jpeg:60"] and sorted(degraded["jpeg:40"]) == sorted(SETS)
    jpeg = evaluate(lightsr.load_model(bundle.path).fuse(), bundle.bench, ["Set14"], 4, progress=False,
                    degrade="jpeg:40")[0]
    assert degraded["jpeg:40"]["Set14"][0] == round(jpeg.psnr, 4)  # scored on the degraded inputs
    worse = {d: {s: [v[0] - 1, v[1]] for s, v in t.items()} for d, t in degraded.items()}
    _rewrite(bundle.path, degraded_psnr_ssim=worse | {"noise:10,jpeg:60": {
        **worse["noise:10,jpeg:60"], "Set14": [degraded["noise:10,jpeg:60"]["Set14"][0] + 0.01, 0.5]}},
        psnr_ssim={s: [v[0] - 1, v[1]] for s, v in _recorded(bundle.path).items()})
    msg = bundle.refused("--degrade", "jpeg:40", "noise:10,jpeg:60")
    assert "Set14 noise:10,jpeg:60 " in msg and msg.count(" against ") == 1
    msg = bundle.refused("--degrade", "jpeg:40")  # the other condition is not scored, so cannot be judged
    assert "Set14 noise:10,jpeg:60 not scored" in msg and msg.count(" against ") == msg.count("not scored") == 3
    _rewrite(bundle.path, degraded_psnr_ssim=worse)
    bundle("--degrade", "jpeg:40", "noise:10,jpeg:60")
    assert _recorded(bundle.path, "degraded_psnr_ssim") == degraded


@pytest.mark.parametrize("damage", ["truncated", "a string", "an empty condition", "not safetensors"])
def test_an_unreadable_file_in_place_is_a_one_line_refusal(runs, tmp_path, damage) -> None:
    bundle = Bundler(runs, tmp_path)
    bundle()
    true = _recorded(bundle.path)
    if damage == "truncated":
        _rewrite(bundle.path, psnr_ssim='{"Set5": [')
    elif damage == "a string":  # a PSNR as text would compare as text
        _rewrite(bundle.path, psnr_ssim={s: [str(v[0]), v[1]] for s, v in true.items()})
    elif damage == "an empty condition":  # a degradation named "" would stand in for the clean scores
        _rewrite(bundle.path, degraded_psnr_ssim={"": {s: [0.0, 0.0] for s in SETS}})
    else:
        bundle.path.write_bytes(b"\x00" * 64)
    msg = bundle.refused()
    assert "not comparing" in msg or "not replacing" in msg
    bundle("--allow-worse")  # and a deliberate bundle puts a good file back
    assert _recorded(bundle.path) == true
