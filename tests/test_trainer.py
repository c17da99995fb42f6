"""The trainer: exact resume after SIGKILL, learning on real images, checkpoints, warm start, errors, flags."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import lightsr
from conftest import REPO_ROOT, require_shared
from lightsr.checkpoints import CheckpointError
from lightsr.cli import main
from lightsr.train.config import config_from_dict
from lightsr.train.ema import ModelEMA
from lightsr.train.state import (
    latest_checkpoint,
    list_checkpoints,
    recover_atomic_dir,
    remove_stale_temporaries,
    warm_start,
)
from lightsr.train.trainer import Trainer, build_optimizer, build_scheduler, train

TINY = {"channels": 12, "num_blocks": 1}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def tiny_config(tmp_path: Path, name: str, **over) -> dict:
    """A network of ~17K parameters on 32×32 HR patches of T91: a few dozen iterations take seconds."""
    t91 = require_shared("data/train/T91")
    base = {
        "name": name, "output_dir": str(tmp_path / "runs"), "seed": 0,
        "model": {"arch": "hasn", "scale": 4, "overrides": dict(TINY)},
        "data": {"hr_dirs": [str(t91)], "patch_size": 32, "repeat": 1, "num_workers": 0},
        "val": {"every": 0},
        "train": {"max_iters": 8, "batch_size": 4, "threads": 1, "deterministic": True},
        "checkpoint": {"every": 4, "keep_last": 3},
        "log": {"every": 1, "progress": False, "tensorboard": False},
    }
    return _merge(base, over)


def _write(tmp_path: Path, raw: dict, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return p


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _losses(run_dir: Path) -> dict[int, float]:
    out = {}
    for r in _log(run_dir):
        if "loss" in r and "event" not in r:
            out[r["iter"]] = r["loss"]  # a resumed run re-logs iterations: the last record wins
    return out


def _assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = load_file(str(a)), load_file(str(b))
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{a.name}: {k} differs (max {(sa[k] - sb[k]).abs().max():.3g})"


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# ------------------------------------------------------------------------------------------ exact resume


def test_resume_after_sigkill_is_bit_exact(tmp_path):
    """2n uninterrupted iterations == n iterations, SIGKILL, --resume for n more: identical weights and EMA.

    The killed run uses a DataLoader worker and the reference none; the schedule has a warm-up and a
    milestone after the resume point; gradients are clipped; EMA with warm-up; only one checkpoint kept. The
    data are the real-world track's (blur, resize, noise and JPEG drawn per sample in the worker); the bicubic
    track's exact resumption is checked by test_auto_resume_continues_a_shorter_run_exactly. The run distils from
    the bundled HASN ×4 (knowledge distillation keeps resume exact).
    """
    n = 5
    raw = tiny_config(tmp_path, "full", data={"degradation": {"type": "real"}}, distill={"teacher": "hasn_x4"},
                      train={
        "max_iters": 2 * n, "grad_clip": 0.05, "ema_decay": 0.9, "ema_warmup": True,
        "optimizer": {"type": "adamw", "weight_decay": 1e-4},
        "scheduler": {"warmup_iters": 2, "milestones": [n + 2], "gamma": 0.5}},
        checkpoint={"every": n, "keep_last": 1})
    cfg = _write(tmp_path, raw)
    cmd = [sys.executable, "-m", "lightsr", "train", "--config", str(cfg)]
    subprocess.run([*cmd, "--set", "name=full"], check=True, env=_env(), cwd=tmp_path, timeout=300,
                   capture_output=True)

    killed = tmp_path / "runs" / "killed"
    proc = subprocess.Popen([*cmd, "--set", "name=killed", "--set", "data.num_workers=1",
                             "--set", "debug.sleep_per_iter=0.5"], env=_env(), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = killed / "checkpoints" / f"iter_{n:08d}"
    deadline = time.monotonic() + 240
    while not target.is_dir():
        assert proc.poll() is None, "the run ended before its checkpoint appeared"
        assert time.monotonic() < deadline, "checkpoint never appeared"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert [i for i, _ in list_checkpoints(killed / "checkpoints")] == [n]  # really interrupted
    assert max(_losses(killed)) < 2 * n

    r = subprocess.run([*cmd, "--set", "name=killed", "--set", "data.num_workers=1", "--resume"],
                       env=_env(), cwd=tmp_path, timeout=300, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"resuming from {target}" in r.stderr
    full_ck = tmp_path / "runs" / "full" / "checkpoints" / f"iter_{2 * n:08d}"
    res_ck = killed / "checkpoints" / f"iter_{2 * n:08d}"
    _assert_same_weights(full_ck / "model.safetensors", res_ck / "model.safetensors")
    _assert_same_weights(full_ck / "ema.safetensors", res_ck / "ema.safetensors")
    assert _losses(killed) == _losses(tmp_path / "runs" / "full")  # the same batches, the same numbers
    assert [i for i, _ in list_checkpoints(killed / "checkpoints")] == [2 * n]  # keep_last 1
    state = torch.load(res_ck / "state.pt", weights_only=True)
    assert state["iteration"] == 2 * n and state["ema"]["num_updates"] == 2 * n


def test_auto_resume_continues_a_shorter_run_exactly(tmp_path):
    raw = tiny_config(tmp_path, "a", train={"max_iters": 6, "ema_decay": 0.8, "scheduler": {"milestones": [5]}},
                      checkpoint={"every": 3})
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    train(config_from_dict(raw))
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, det)  # restored
    first = config_from_dict(_merge(raw, {"name": "b", "train": {"max_iters": 3}}))
    train(first)
    again = config_from_dict(_merge(raw, {"name": "b", "auto_resume": True}))
    result = train(again)
    assert result.iteration == 6
    a_ck, b_ck = tmp_path / "runs/a/checkpoints/iter_00000006", tmp_path / "runs/b/checkpoints/iter_00000006"
    _assert_same_weights(a_ck / "model.safetensors", b_ck / "model.safetensors")
    _assert_same_weights(a_ck / "ema.safetensors", b_ck / "ema.safetensors")
    events = [r for r in _log(tmp_path / "runs/b") if r.get("event") in ("resume", "warning")]
    assert events[-1]["event"] == "resume" and events[-1]["iter"] == 3
    assert any("train.max_iters" in r.get("message", "") for r in events)  # the config change is reported


def test_keys_added_since_a_checkpoint_compare_as_their_defaults(tmp_path):
    """A checkpoint written before a config key existed resumes without a config-change warning for that key."""
    raw = tiny_config(tmp_path, "a", train={"max_iters": 4}, checkpoint={"every": 2})
    train(config_from_dict(_merge(raw, {"train": {"max_iters": 2}})))
    state_path = tmp_path / "runs/a/checkpoints/iter_00000002/state.pt"
    state = torch.load(state_path, weights_only=True)
    del state["config"]["data"]["degradation"]["downscaled_prob"]  # as written before the key existed
    torch.save(state, state_path)
    train(config_from_dict(_merge(raw, {"auto_resume": True})))
    warnings = [r["message"] for r in _log(tmp_path / "runs/a") if r.get("event") == "warning"]
    assert any("train.max_iters" in w for w in warnings)  # a real change is still reported
    assert not any("downscaled_prob" in w for w in warnings), warnings


def test_resume_applies_a_changed_schedule_and_optimizer(tmp_path):
    """The config given on resume is the one trained with: a longer cosine run continues on the new schedule
    (its closed form, as if it had been set from the start) and new optimizer hyper-parameters apply."""
    base, eta, w = 1e-3, 1e-5, 2
    raw = tiny_config(tmp_path, "c", train={"max_iters": 4, "optimizer": {"lr": base}, "scheduler": {
        "type": "cosine", "warmup_iters": w, "eta_min": eta}}, checkpoint={"every": 4})
    train(config_from_dict(raw))
    longer = _merge(raw, {"auto_resume": True, "train": {
        "max_iters": 8, "optimizer": {"weight_decay": 0.01, "betas": [0.8, 0.9]}}})
    assert train(config_from_dict(longer)).iteration == 8
    log = _log(tmp_path / "runs/c")
    lrs = {r["iter"]: r["lr"] for r in log if "lr" in r and "event" not in r}
    assert lrs[4] == pytest.approx(eta)  # the 4-iteration schedule had ended
    cosine = [eta + (base - eta) * (1 + math.cos(math.pi * (i - w) / (8 - w))) / 2 for i in range(5, 9)]
    assert [lrs[i] for i in range(5, 9)] == pytest.approx(cosine, rel=1e-9)
    warnings_ = " ".join(r["message"] for r in log if r.get("event") == "warning")
    assert "learning-rate schedule changed (train.max_iters)" in warnings_
    assert "train.optimizer.betas" in warnings_ and "train.optimizer.weight_decay" in warnings_
    group = torch.load(tmp_path / "runs/c/checkpoints/iter_00000008/state.pt", weights_only=True)[
        "optimizer"]["param_groups"][0]
    assert group["weight_decay"] == 0.01 and tuple(group["betas"]) == (0.8, 0.9)

    # A checkpoint of an older lightsr (no stored config) behind a config.yaml rewritten since: the schedule is
    # recomputed from the config given, not trusted.
    ck = tmp_path / "runs/c/checkpoints/iter_00000008"
    state = torch.load(ck / "state.pt", weights_only=True)
    del state["config"]
    torch.save(state, ck / "state.pt")
    os.utime(ck / "state.pt", (1, 1))
    longest = _merge(longer, {"train": {"max_iters": 12}})
    Trainer(config_from_dict(longest)).close()  # a start that stopped before its first checkpoint
    assert train(config_from_dict(longest)).iteration == 12
    log = _log(tmp_path / "runs/c")
    lrs = {r["iter"]: r["lr"] for r in log if "lr" in r and "event" not in r}
    cosine = [eta + (base - eta) * (1 + math.cos(math.pi * (i - w) / (12 - w))) / 2 for i in range(9, 13)]
    assert [lrs[i] for i in range(9, 13)] == pytest.approx(cosine, rel=1e-9)
    assert any("does not record the config" in r.get("message", "") for r in log)

    # Resuming a run that is already past max_iters trains nothing and says so.
    shorter = _merge(longer, {"train": {"max_iters": 6}})
    assert train(config_from_dict(shorter)).iteration == 12
    assert "nothing to train" in _log(tmp_path / "runs/c")[-2]["message"]


def test_best_is_replaced_atomically_and_only_by_comparable_scores(tmp_path, monkeypatch):
    import types

    import lightsr.evaluate

    scores = iter([("Set5", 30.0), ("Set5", 29.0), ("Set14", 27.0), ("Set14", 27.5), ("Set14", 20.0)])
    monkeypatch.setattr(lightsr.evaluate, "evaluate", lambda *a, **k: [types.SimpleNamespace(
        set=(s := next(scores))[0], psnr=s[1], ssim=0.5)])
    trainer = Trainer(config_from_dict(tiny_config(tmp_path, "b", train={"max_iters": 1})))
    try:
        best = trainer.run_dir / "best"
        assert [trainer.validate()["best"] for _ in range(4)] == [True, False, True, True]
        assert json.loads((best / "best.json").read_text())["psnr"] == 27.5  # Set14 27.0 did not lose to 30.0
        trainer.best["val_model"] = "ema"  # a best of the EMA weights: the live weights' 20.0 does not lose to it
        assert trainer.validate()["best"] and json.loads((best / "best.json").read_text())["psnr"] == 20.0
        # Killed between moving the old best/ aside and renaming the new one in: the old copy comes back.
        best.rename(tmp_path / "runs/b/.best.old.tmp")
        (tmp_path / "runs/b/.best.tmp").mkdir()
        assert recover_atomic_dir(best) and (best / "best.json").is_file()
        assert sorted(p.name for p in best.parent.glob(".best*")) == []
    finally:
        trainer.close()


def test_a_run_directory_in_use_is_refused(tmp_path):
    from lightsr.train.trainer import RunError

    raw = tiny_config(tmp_path, "l", train={"max_iters": 1})
    first = Trainer(config_from_dict(raw))
    try:
        with pytest.raises(RunError, match=rf"another lightsr train \(pid {os.getpid()}\) is using this run"):
            Trainer(config_from_dict(_merge(raw, {"auto_resume": True})))
    finally:
        first.close()
    Trainer(config_from_dict(_merge(raw, {"auto_resume": True}))).close()  # released with the first one


def test_torchrun_config_errors_print_once_and_pinned_gpus_are_refused(tmp_path, capsys, monkeypatch):
    from lightsr.train import distributed as D

    cfg = _write(tmp_path, tiny_config(tmp_path, "r", train={"max_iters": "many"}))
    monkeypatch.setenv("RANK", "1")
    assert main(["train", "--config", str(cfg)]) == 2
    assert capsys.readouterr().err == ""  # rank 0 alone reports it
    monkeypatch.setenv("RANK", "0")
    assert main(["train", "--config", str(cfg)]) == 2
    assert "train.max_iters" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(D.DistributedError, match=r"train.device: 'cuda:1' .* one GPU"):
        D.setup("cuda:1")


def test_run_directory_protection(tmp_path, capsys):
    cfg = _write(tmp_path, tiny_config(tmp_path, "p", train={"max_iters": 2}, checkpoint={"every": 2}))
    assert main(["train", "--config", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lightsr: error: ") and "already holds checkpoints" in err and "--resume" in err
    assert main(["train", "--config", str(cfg), "--set", "name=other", "--resume"]) == 2
    assert "no complete checkpoint to resume from" in capsys.readouterr().err


def test_latest_complete_checkpoint_ignores_partial_ones(tmp_path):
    ck = tmp_path / "checkpoints"
    for it, files in ((4, ("model.safetensors", "state.pt")), (8, ("model.safetensors", "state.pt")),
                      (12, ("model.safetensors",))):  # 12 lacks its state: never committed by lightsr
        d = ck / f"iter_{it:08d}"
        d.mkdir(parents=True)
        for f in files:
            (d / f).write_bytes(b"x")
    (ck / ".iter_00000016.tmp").mkdir()
    assert latest_checkpoint(ck) == ck / "iter_00000008"
    assert [i for i, _ in list_checkpoints(ck)] == [4, 8]
    assert remove_stale_temporaries(ck) == [ck / ".iter_00000016.tmp"]
    assert not (ck / ".iter_00000016.tmp").exists()


# ------------------------------------------------------------------------------------------ it learns


def test_loss_falls_and_psnr_rises_on_real_images(tmp_path):
    from lightsr.evaluate import evaluate

    bench = require_shared("data/benchmark")
    raw = tiny_config(tmp_path, "learn", model={"overrides": {"channels": 16, "num_blocks": 1}},
                      data={"patch_size": 48, "repeat": 4},
                      train={"max_iters": 60, "batch_size": 8, "optimizer": {"lr": 2e-3}},
                      val={"every": 60, "root": str(bench), "sets": ["Set5"], "use_ema": False},
                      checkpoint={"every": 60})
    torch.manual_seed(0)  # the trainer seeds the same way: this is the network it starts from
    start = lightsr.create_model("hasn", scale=4, channels=16, num_blocks=1)
    psnr0 = evaluate(start, bench, ["Set5"], 4, progress=False)[0].psnr
    result = train(config_from_dict(raw))
    losses = [v for _, v in sorted(_losses(tmp_path / "runs/learn").items())]
    assert len(losses) == 60
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.6 * first, (first, last)
    assert result.best["psnr"] > psnr0 + 5.0, (psnr0, result.best)


# ------------------------------------------------------------------------------------------ checkpoints


def test_checkpoints_are_readable_by_load_model_and_eval(tmp_path, capsys):
    bench = require_shared("data/benchmark")
    raw = tiny_config(tmp_path, "ck", train={"max_iters": 4, "ema_decay": 0.5},
                      val={"every": 4, "root": str(bench), "sets": ["Set5"]})
    trainer = Trainer(config_from_dict(raw))
    ema_module = trainer.ema.module
    result = trainer.run()
    ck = result.checkpoint
    assert ck.name == "iter_00000004"
    net = lightsr.load_model(ck / "ema.safetensors")
    assert (net.arch, net.scale, net.info.config["channels"]) == ("hasn", 4, 12)
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        assert torch.equal(net(x), ema_module.eval()(x))
    state = torch.load(ck / "state.pt", weights_only=True)  # plain containers and tensors only
    assert state["iteration"] == 4 and set(state["rng"]) >= {"torch", "numpy", "python"}
    best = json.loads((result.run_dir / "best" / "best.json").read_text())
    assert best["iteration"] == 4 and best["val_model"] == "ema"
    capsys.readouterr()
    assert main(["eval", "--weights", str(result.run_dir / "best" / "ema.safetensors"), "--data", str(bench),
                 "--sets", "Set5", "--no-progress"]) == 0
    assert f"{best['psnr']:.4f}" in capsys.readouterr().out  # eval reproduces the validation score


def test_warm_start_from_x4_body_to_x2(tmp_path):
    raw = tiny_config(tmp_path, "x4", train={"max_iters": 2}, checkpoint={"every": 2})
    src = train(config_from_dict(raw)).checkpoint / "model.safetensors"
    x4 = load_file(str(src))
    raw2 = _merge(tiny_config(tmp_path, "x2", model={"scale": 2}), {"init_from": str(src)})
    trainer = Trainer(config_from_dict(raw2))
    try:
        sd = trainer.model.state_dict()
        assert trainer.iteration == 0 and not trainer.optimizer.state  # fresh optimizer and schedule
        assert trainer.current_lr() == pytest.approx(2e-4)
        for k, v in sd.items():
            if k.startswith("upsampler."):
                assert v.shape != x4[k].shape
            else:
                assert torch.equal(v, x4[k]), k
        assert torch.equal(trainer.ema.module.state_dict()["head.weight"] if trainer.ema else sd["head.weight"],
                           x4["head.weight"])
    finally:
        trainer.close()
    event = next(r for r in _log(tmp_path / "runs/x2") if r.get("event") == "init_from")
    assert "upsampler.0.weight" in event["message"] and "upsampler.0.bias" in event["message"]


def test_warm_start_from_the_official_hasn_layout():
    path = require_shared("weights/HASN_x4_official.pth")
    net = lightsr.create_model("hasn", scale=3)
    _, skipped = warm_start(net, path)
    assert skipped == ["upsampler.0.weight", "upsampler.0.bias"]
    ref = lightsr.load_model(path)  # ×4, params_ema (load_model's default choice)
    assert torch.equal(net.state_dict()["blocks.2.esa.conv1.weight"], ref.state_dict()["blocks.2.esa.conv1.weight"])
    with pytest.raises(CheckpointError, match="holds hasn weights; the configured network is lksmn"):
        warm_start(lightsr.create_model("lksmn", scale=4), path)
    with pytest.raises(CheckpointError, match="does not fit hasn ×4"):
        warm_start(lightsr.create_model("hasn", scale=4, channels=16), path)


# ------------------------------------------------------------------------------------------ errors


def test_nan_loss_stops_with_one_line_and_keeps_last_good_checkpoint(tmp_path, capsys):
    cfg = _write(tmp_path, tiny_config(tmp_path, "nan", debug={"nan_at_iter": 7}, train={"max_iters": 12}))
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    ck = tmp_path / "runs/nan/checkpoints/iter_00000004"
    assert err.startswith("lightsr: error: loss is nan at iteration 7")
    assert f"last good checkpoint is {ck}" in err
    assert [i for i, _ in list_checkpoints(ck.parent)] == [4]
    assert all(math.isfinite(t.float().sum()) for t in load_file(str(ck / "model.safetensors")).values())
    assert max(_losses(tmp_path / "runs/nan")) == 6
    # Resuming from the kept checkpoint works (the debug hook switched off).
    assert main(["train", "--config", str(cfg), "--resume", "--set", "debug.nan_at_iter=0"]) == 0


def test_data_errors_through_the_cli(tmp_path, capsys):
    cfg = _write(tmp_path, tiny_config(tmp_path, "e"))
    missing = tmp_path / "no_such_folder"
    assert main(["train", "--config", str(cfg), "--set", f"data.hr_dirs=[{missing}]"]) == 2
    assert capsys.readouterr().err.strip() == f"lightsr: error: {missing}: training data folder not found"
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    t91 = require_shared("data/train/T91")
    (bad_dir / "a.png").write_bytes((t91 / "t1.png").read_bytes())
    data = (t91 / "t10.png").read_bytes()
    (bad_dir / "b.png").write_bytes(data[: len(data) // 3])
    for extra in ([], ["--set", "data.cache_max_bytes=0", "--set", "data.num_workers=1"]):  # preload / worker
        assert main(["train", "--config", str(cfg), "--set", f"data.hr_dirs=[{bad_dir}]", "--set", "data.repeat=4",
                     "--set", "name=bad", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"lightsr: error: {bad_dir / 'b.png'}: cannot read image")
    assert main(["train", "--config", str(cfg), "--set", "val.every=5", "--set", f"val.root={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip() == (f"lightsr: error: {tmp_path / 'Set5'}: benchmark set not found "
                                               "(val.root, val.sets)")


# ------------------------------------------------------------------------------------------ components


def test_schedules_follow_their_closed_forms():
    def lrs(sched: dict, max_iters: int = 40) -> list[float]:
        cfg = config_from_dict({"data": {"hr_dirs": ["x"]},
                                "train": {"max_iters": max_iters, "scheduler": sched, "optimizer": {"lr": 1.0}}})
        opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
        s = build_scheduler(opt, cfg)
        out = []
        for _ in range(max_iters):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            s.step()
        return out

    got = lrs({"type": "multistep", "milestones": [10, 25, 30], "gamma": 0.5})
    assert got == pytest.approx([0.5 ** sum(i >= m for m in (10, 25, 30)) for i in range(40)])
    got = lrs({"type": "multistep", "milestones": [10, 25], "warmup_iters": 5, "warmup_start_factor": 0.1})
    expect = [0.1 + 0.9 * i / 5 if i < 5 else 0.5 ** sum(i >= m for m in (10, 25)) for i in range(40)]
    assert got == pytest.approx(expect)
    got = lrs({"type": "cosine", "eta_min": 0.01, "warmup_iters": 4, "warmup_start_factor": 0.2})
    expect = [0.2 + 0.8 * i / 4 if i < 4 else 0.01 + 0.99 * (1 + math.cos(math.pi * (i - 4) / 36)) / 2
              for i in range(40)]
    assert got == pytest.approx(expect)
    assert lrs({"type": "constant"}) == [1.0] * 40


def test_ema_averages_parameters_and_buffers():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ema = ModelEMA(net, decay=0.75)
    e0 = {k: v.clone() for k, v in ema.module.state_dict().items()}
    net.train()(torch.randn(2, 3, 8, 8))  # BN running stats move
    with torch.no_grad():
        net[0].weight.add_(1.0)
    ema.update(net)
    cur = net.state_dict()
    for k, v in ema.module.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.75 * e0[k] + 0.25 * cur[k], rtol=0, atol=1e-6)
        else:  # num_batches_tracked follows the model
            assert torch.equal(v, cur[k])
    assert not torch.equal(ema.module[1].running_mean, e0["1.running_mean"])
    warm = ModelEMA(net, 0.999, warmup=True)
    assert [round(warm.current_decay(), 4) for _ in range(1)] == [0.1]  # (1+0)/(10+0)


def test_amp_channels_last_and_compile_flags_take_effect(tmp_path):
    raw = tiny_config(tmp_path, "flags", train={"amp": "bf16", "channels_last": True, "max_iters": 2})
    trainer = Trainer(config_from_dict(raw))
    try:
        seen = {}
        trainer.model.head.register_forward_hook(
            lambda m, i, o: seen.update(dtype=o.dtype, cl=i[0].is_contiguous(memory_format=torch.channels_last)))
        lr, hr = next(iter(trainer.loader))
        loss = trainer.train_step(lr, hr)
        assert math.isfinite(loss)
        assert seen == {"dtype": torch.bfloat16, "cl": True}
        w = trainer.model.head.weight
        assert w.dtype == torch.float32 and w.is_contiguous(memory_format=torch.channels_last)
    finally:
        trainer.close()
    trainer = Trainer(config_from_dict(_merge(raw, {"name": "flags2", "train": {"compile": True, "amp": "none"}})))
    try:
        assert isinstance(trainer.forward, torch._dynamo.eval_frame.OptimizedModule)
        assert trainer.forward._orig_mod is trainer.model
    finally:
        trainer.close()


@pytest.mark.parametrize("failure", ["ENOSPC", "SafetensorError", "torch.save"])
def test_a_full_disk_while_checkpointing_is_one_line_and_leaves_no_partial_checkpoint(tmp_path, capsys, monkeypatch,
                                                                                      failure):
    import errno

    import safetensors.torch
    from safetensors import SafetensorError

    import lightsr.train.state as S

    cfg = _write(tmp_path, tiny_config(tmp_path, "full", train={"max_iters": 4}, checkpoint={"every": 2}))
    real_save_file, real_torch_save = safetensors.torch.save_file, torch.save
    calls = {"n": 0}

    def save_file(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] < 2 or failure == "torch.save":
            return real_save_file(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(b"\x00" * 8)  # what reached the disk before it filled up
        if failure == "ENOSPC":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
                              'space left on device" })')

    def torch_save(obj, f, *a, **k):
        if Path(f).parent.name == ".iter_00000004.tmp":
            Path(f).write_bytes(b"PK")
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0\n"
                               "frame #0: c10::ThrowEnforceNotMet(...)")
        return real_torch_save(obj, f, *a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    monkeypatch.setattr(S.torch, "save", torch_save)
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    ckpts = tmp_path / "runs/full/checkpoints"
    assert last.startswith("lightsr: error: ") and str(ckpts / "iter_00000004") in last
    assert {"ENOSPC": "No space left on device", "SafetensorError": "No space left on device",
            "torch.save": "RuntimeError: [enforce fail at inline_container.cc:626]"}[failure] in last
    assert last.endswith(f"iter_00000004 not written; training stopped at iteration 4 — the last complete "
                         f"checkpoint is {ckpts / 'iter_00000002'} (continue with --resume)")
    assert sorted(p.name for p in ckpts.iterdir()) == ["iter_00000002"]  # no partial or temporary directory
    monkeypatch.undo()
    if failure == "ENOSPC":  # space freed: the run continues from its last checkpoint
        assert main(["train", "--config", str(cfg), "--resume"]) == 0
        assert [i for i, _ in list_checkpoints(ckpts)] == [2, 4]


def test_sigterm_stops_training_like_ctrl_c_and_resume_stays_exact(tmp_path, capsys, monkeypatch):
    """SIGTERM (timeout, docker stop) while the second checkpoint is being written: exit status 143 with one line,
    the half-written checkpoint removed, the first one kept; resuming ends identical to an uninterrupted run."""
    import safetensors.torch

    raw = tiny_config(tmp_path, "full", train={"max_iters": 8}, checkpoint={"every": 4})
    cfg = _write(tmp_path, raw)
    assert main(["train", "--config", str(cfg)]) == 0
    real_save_file = safetensors.torch.save_file
    calls = {"n": 0}

    def save_file(tensors, filename, metadata=None):
        real_save_file(tensors, filename, metadata=metadata)
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    with monkeypatch.context() as m:
        m.setattr(safetensors.torch, "save_file", save_file)
        assert main(["train", "--config", str(cfg), "--set", "name=term"]) == 143
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "lightsr: terminated (SIGTERM)" and "Traceback" not in err
    ckpts = tmp_path / "runs/term/checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["iter_00000004"]
    assert max(_losses(tmp_path / "runs/term")) == 8  # it stopped while writing the iteration-8 checkpoint
    assert main(["train", "--config", str(cfg), "--set", "name=term", "--resume"]) == 0  # the lock was released
    _assert_same_weights(tmp_path / "runs/full/checkpoints/iter_00000008/model.safetensors",
                         ckpts / "iter_00000008" / "model.safetensors")


def test_progress_in_a_log_file_is_plain_lines(tmp_path, capsys, monkeypatch):
    """stderr not a terminal (a log file, CI): no tqdm redraws; a line per minute and one at the end."""
    import lightsr.train.logger as L

    clock = [0.0]
    monkeypatch.setattr(L.time, "monotonic", lambda: clock[0])
    logger = L.RunLogger(tmp_path / "run", total=30, initial=0, progress=True, tensorboard=False)
    for it in range(1, 31):
        clock[0] += 5.0  # 5 s per iteration: a line every 12 iterations, and the last
        logger.progress(it, loss="0.0500")
    logger.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("lightsr train: iteration")]
    assert lines == ["lightsr train: iteration 12/30 (0.20 it/s), loss 0.0500",
                     "lightsr train: iteration 24/30 (0.20 it/s), loss 0.0500",
                     "lightsr train: iteration 30/30 (0.20 it/s), loss 0.0500"]


def test_max_time_stops_with_a_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path, capsys):
    """--max-time: the run stops at its first iteration past the budget with a checkpoint of that iteration
    (not only of the last checkpoint.every multiple), and --resume continues it bit-exactly."""
    raw = tiny_config(tmp_path, "whole", train={"max_iters": 5, "ema_decay": 0.8}, checkpoint={"every": 4})
    train(config_from_dict(raw))
    cfg = _write(tmp_path, _merge(raw, {"name": "chunks"}))
    assert main(["train", "--config", str(cfg), "--max-time", "0.001s"]) == 0
    err = capsys.readouterr().err
    assert "stopped by --max-time at iteration 1" in err and "continue with --resume" in err
    run = tmp_path / "runs" / "chunks"
    assert [i for i, _ in list_checkpoints(run / "checkpoints")] == [1]
    assert main(["train", "--config", str(cfg), "--resume", "--max-time", "1:00:00"]) == 0
    assert "finished at iteration 5" in capsys.readouterr().err
    for f in ("model.safetensors", "ema.safetensors"):
        _assert_same_weights(tmp_path / "runs/whole/checkpoints/iter_00000005" / f,
                             run / "checkpoints/iter_00000005" / f)
    assert any(r.get("event") == "time_limit" and r["iter"] == 1 for r in _log(run))


def test_state_carried_through_the_store_resumes_exactly_and_keeps_the_bundled_scores(tmp_path, capsys):
    """scripts/training_state.py: a chunk saved to the store and restored on a fresh machine continues to the
    weights of an uninterrupted run; files written beside the saved state (a bundled checkpoint's scores.json)
    survive the next save, and so does the checkpoint scores.json names; a malformed one is a one-line exit."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("training_state", REPO_ROOT / "scripts" / "training_state.py")
    state = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(state)
    raw = tiny_config(tmp_path, "whole", train={"max_iters": 5, "ema_decay": 0.8}, checkpoint={"every": 4})
    train(config_from_dict(raw))
    cfg = _write(tmp_path, _merge(raw, {"name": "carried"}))
    assert main(["train", "--config", str(cfg), "--max-time", "0.001s"]) == 0
    store, runs = tmp_path / "store", tmp_path / "runs"
    state.save("carried", runs, store)
    scores = '{"checkpoint": "iter_00000001", "iterations": 1}'
    (store / "carried" / "scores.json").write_text(scores)
    bundled = (store / "carried/checkpoints/iter_00000001/ema.safetensors").read_bytes()
    shutil.rmtree(runs / "carried")  # the next machine has only the store
    state.restore("carried", runs, store)
    assert main(["train", "--config", str(cfg), "--resume"]) == 0
    shutil.rmtree(runs / "carried/checkpoints/iter_00000001")  # as keep_last would
    saved = state.save("carried", runs, store)
    assert saved.name == "iter_00000005" and sorted(p.name for p in (store / "carried").iterdir()) == [
        "checkpoints", "config.yaml", "log.jsonl", "scores.json"]
    assert (store / "carried" / "scores.json").read_text() == scores
    assert [i for i, _ in list_checkpoints(store / "carried/checkpoints")] == [1, 5]
    assert (store / "carried/checkpoints/iter_00000001/ema.safetensors").read_bytes() == bundled
    for f in ("model.safetensors", "ema.safetensors"):
        _assert_same_weights(runs / "whole/checkpoints/iter_00000005" / f, saved / f)
    (store / "carried" / "scores.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match=r"scores\.json: not a JSON object"):
        state.save("carried", runs, store)
    assert (store / "carried" / "scores.json").read_text() == "[1, 2]"  # nothing replaced
    capsys.readouterr()


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("540s", 540), ("9m", 540), ("2h", 7200),
                                               ("1:30:00", 5400), ("2:30", 150)])
def test_max_timeparse_durations(text, seconds):
    from lightsr.commands.train import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "-5m", "0", "1:2:3:4", "nanm", "infs"])
def test_bad_max_time_is_a_one_line_usage_error(tmp_path, capsys, text):
    cfg = _write(tmp_path, tiny_config(tmp_path, "x"))
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(cfg), "--max-time", text])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--max-time" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "x").exists()
