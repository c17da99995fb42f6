"""DDP for real: ``torchrun --nproc-per-node 2`` on CPU (gloo) against a single process on the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import require_shared

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path: Path, arch: str, overrides: dict, teacher: str | None = None) -> Path:
    t91 = require_shared("data/train/T91")
    raw = {
        "name": "x", "output_dir": str(tmp_path / "runs"), "seed": 0,
        "model": {"arch": arch, "scale": 4, "overrides": overrides},
        "data": {"hr_dirs": [str(t91)], "patch_size": 32, "repeat": 1, "num_workers": 0},
        "val": {"every": 0},
        # Global batch 4: 2 patches per rank under torchrun, 4 in the single process.
        "train": {"max_iters": 4, "batch_size": 4, "threads": 1, "deterministic": True, "ema_decay": 0.5,
                  "scheduler": {"milestones": [2]}},
        "checkpoint": {"every": 2, "keep_last": 5},
        "log": {"every": 1, "progress": False, "tensorboard": False},
        "debug": {"dump_rank_weights": True},
    }
    if teacher:  # each rank runs its own copy on its half of the batch
        raw["distill"] = {"teacher": teacher, "weight": 0.5}
    p = tmp_path / f"{arch}.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _run(cmd: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def _torchrun(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
            "127.0.0.1", "--master-port", str(_free_port()), "-m", "lightsr", "train"]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize(("arch", "overrides", "teacher"), [("hasn", {"channels": 12, "num_blocks": 1}, None),
                                                            ("lksmn", {"channels": 12, "num_blocks": 1}, None),
                                                            ("lksmn", {"channels": 12, "num_blocks": 1}, "hasn_x4")])
def test_two_ranks_match_each_other_and_a_single_process(tmp_path, arch, overrides, teacher):
    # hasn and lksmn have no BatchNorm: with per-rank BN (ELAN) the batch statistics of 2 patches differ from
    # those of 4, so only BN-free networks can equal a single process. With a teacher (distillation) the loss
    # is still a mean over equal halves of the batch, so the same holds.
    cfg = _config(tmp_path, arch, overrides, teacher)
    r = _run([*_torchrun(2), "--config", str(cfg), "--set", "name=ddp"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r1 = _run([sys.executable, "-m", "lightsr", "train", "--config", str(cfg), "--set", "name=single"], tmp_path)
    assert r1.returncode == 0, r1.stderr[-3000:]

    ddp, single = tmp_path / "runs/ddp", tmp_path / "runs/single"
    for kind in ("model", "ema"):
        r0 = load_file(str(ddp / f"debug/rank0_{kind}.safetensors"))
        r1w = load_file(str(ddp / f"debug/rank1_{kind}.safetensors"))
        assert _max_diff(r0, r1w) == 0.0  # DDP's all-reduce gives every rank the same update
        ck = load_file(str(ddp / f"checkpoints/iter_00000004/{kind}.safetensors"))
        assert _max_diff(ck, r0) == 0.0
        one = load_file(str(single / f"checkpoints/iter_00000004/{kind}.safetensors"))
        assert _max_diff(r0, one) <= 1e-6
    init = load_file(str(single / "checkpoints/iter_00000002/model.safetensors"))
    assert _max_diff(init, load_file(str(single / "debug/rank0_model.safetensors"))) > 1e-5  # weights did move

    # Exactly one set of files: rank 0 alone writes checkpoints and logs.
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["iter_00000002", "iter_00000004"]
    assert sorted(p.name for p in (ddp / "checkpoints/iter_00000004").iterdir()) == [
        "ema.safetensors", "model.safetensors", "state.pt"]
    records = [json.loads(x) for x in (ddp / "log.jsonl").read_text().splitlines()]
    assert [x["iter"] for x in records if "loss" in x] == [1, 2, 3, 4]
    assert all(("loss_teacher" in x) == bool(teacher) for x in records if "loss" in x)
    start = next(x for x in records if x.get("event") == "start")
    assert start["world_size"] == 2
    assert r.stderr.count("lightsr train: finished") == 1
    # The logged loss is the mean over both ranks, i.e. over the global batch: the single process's loss.
    single_losses = [json.loads(x)["loss"] for x in (single / "log.jsonl").read_text().splitlines()
                     if '"loss"' in x and "event" not in x]
    assert [x["loss"] for x in records if "loss" in x] == pytest.approx(single_losses, rel=1e-5)


def test_global_batch_must_split_evenly(tmp_path):
    cfg = _config(tmp_path, "hasn", {"channels": 12, "num_blocks": 1})
    r = _run([*_torchrun(2), "--config", str(cfg), "--set", "train.batch_size=3"], tmp_path)
    assert r.returncode != 0
    msg = "lightsr: error: train.batch_size: 3 is not divisible by the 2 processes (it is the global batch)"
    assert r.stderr.count(msg) == 1  # one line, from rank 0 only
    # Before any connection: rank 0 of two whose peer never comes says so at once (a process group would wait
    # for rank 1 until its timeout).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2",
           "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    r = subprocess.run([sys.executable, "-m", "lightsr", "train", "--config", str(cfg), "--set",
                        "train.batch_size=3"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stderr.strip()) == (2, msg)


_RANK0_CANNOT_WRITE = """
import os, sys
from lightsr.cli import main
from lightsr.errors import WriteError
import lightsr.train.trainer as T

if os.environ["RANK"] == "0":
    def full_disk(*args):
        path = args[0] if isinstance(args[0], os.PathLike) else args[0].run_dir / "config.yaml"
        raise WriteError(f"{path}: cannot write (No space left on device); nothing written")
    if os.environ["FAIL_AT"] == "checkpoint":
        T.write_atomic_dir = full_disk
    else:
        T.Trainer._write_config = full_disk
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("fail_at", ["checkpoint", "run folder"])
def test_a_write_rank_0_cannot_make_stops_every_rank(tmp_path, fail_at):
    """Launched without torchrun (as by srun or mpirun, which do not stop the other ranks when one exits):
    rank 1 stops at once with status 2 and prints nothing (rank 0 alone prints errors), instead of dying at its
    barrier with gloo's 'Connection closed by peer' traceback (under NCCL: waiting there until the timeout)."""
    cfg = _config(tmp_path, "hasn", {"channels": 12, "num_blocks": 1})
    script = tmp_path / "rank0_cannot_write.py"
    script.write_text(_RANK0_CANNOT_WRITE)
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "FAIL_AT": fail_at}
        procs.append(subprocess.Popen([sys.executable, str(script), "train", "--config", str(cfg)], env=env,
                                      cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        errs = [p.communicate(timeout=240)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [2, 2]
    assert not any("Traceback" in e for e in errs), errs
    run = tmp_path / "runs/x"
    expected = {"checkpoint": f"{run / 'checkpoints/iter_00000002'}: cannot write (No space left on device); "
                              "nothing written; training stopped at iteration 2 — no checkpoint had been written yet",
                "run folder": f"{run / 'config.yaml'}: cannot write (No space left on device); nothing written"}
    assert errs[0].strip().splitlines()[-1] == f"lightsr: error: {expected[fail_at]}"
    assert errs[1] == ""
