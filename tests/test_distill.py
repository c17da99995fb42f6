"""Knowledge distillation in the trainer: the loss against a hand computation, a frozen teacher, its identity in
the run's config and checkpoints, and one-line config errors before anything is written.

Bit-exact resume after SIGKILL with a teacher: ``test_trainer.test_resume_after_sigkill_is_bit_exact`` (its run
distils); DDP with a teacher: ``test_train_ddp``.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
import yaml

import lightsr
from lightsr.checkpoints import save_model
from lightsr.cli import main
from lightsr.models.registry import create_model
from lightsr.train.config import ConfigError, config_from_dict
from lightsr.train.trainer import Trainer, train
from test_trainer import TINY, _log, _merge, tiny_config


def _teacher_file(tmp_path, scale: int = 4, arch: str = "lksmn", seed: int = 3):
    torch.manual_seed(seed)
    return save_model(create_model(arch, scale=scale, **TINY), tmp_path / f"teacher_{arch}_x{scale}.safetensors")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_loss_is_l1_to_hr_plus_weighted_l1_to_the_teacher_and_the_teacher_stays_frozen(tmp_path):
    teacher = _teacher_file(tmp_path)
    raw = tiny_config(tmp_path, "kd", data={"degradation": {"type": "real"}},
                      distill={"teacher": str(teacher), "weight": 0.3})
    tr = Trainer(config_from_dict(raw))
    try:
        frozen = {k: v.clone() for k, v in tr.teacher.state_dict().items()}
        # The reference teacher: the training form read from the file on its own (the trainer runs the fused one).
        ref = lightsr.load_model(teacher).double().eval()
        batches = iter(tr.loader)
        for _ in range(3):
            lr_u8, hr_u8 = next(batches)
            student = lightsr.create_model("hasn", scale=4, **TINY).double()
            student.load_state_dict(tr.model.state_dict())
            lr, hr = lr_u8.double() / 255, hr_u8.double() / 255
            with torch.no_grad():
                sr, t = student(lr), ref(lr)
            want = (sr - hr).abs().mean() + 0.3 * (sr - t).abs().mean()
            got = tr.train_step(lr_u8, hr_u8)
            assert got == pytest.approx(want.item(), rel=1e-5)
            assert tr.teacher_loss == pytest.approx((sr - t).abs().mean().item(), rel=1e-5)
        # Weights and buffers untouched by three optimizer steps, no gradients kept, eval mode.
        after = tr.teacher.state_dict()
        assert after.keys() == frozen.keys()
        assert all(torch.equal(after[k], frozen[k]) for k in frozen)
        assert not any(p.requires_grad or p.grad is not None for p in tr.teacher.parameters())
        assert not tr.teacher.training
    finally:
        tr.close()


def test_the_teacher_changes_the_training_and_its_identity_is_recorded(tmp_path):
    teacher = _teacher_file(tmp_path)
    base = tiny_config(tmp_path, "plain", train={"max_iters": 2}, checkpoint={"every": 2})
    plain = train(config_from_dict(base))
    kd = train(config_from_dict(_merge(base, {"name": "kd", "distill": {"teacher": str(teacher), "weight": 2.0}})))
    a = lightsr.load_model(plain.checkpoint / "model.safetensors").state_dict()
    b = lightsr.load_model(kd.checkpoint / "model.safetensors").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the teacher term moved the weights elsewhere
    digest = _sha(teacher)
    written = yaml.safe_load((kd.run_dir / "config.yaml").read_text())
    assert written["distill"]["sha256"] == digest and written["distill"]["teacher"] == str(teacher)
    state = torch.load(kd.checkpoint / "state.pt", weights_only=True)
    assert state["teacher"]["sha256"] == digest and state["teacher"]["arch"] == "lksmn"
    assert state["config"]["distill"]["sha256"] == digest
    assert all("loss_teacher" in r for r in _log(kd.run_dir) if "loss" in r and "event" not in r)
    assert not any("loss_teacher" in r for r in _log(plain.run_dir))


def test_a_bundled_name_is_a_teacher_and_a_changed_file_is_refused_when_pinned(tmp_path):
    raw = tiny_config(tmp_path, "named", distill={"teacher": "hasn_x4"})
    tr = Trainer(config_from_dict(raw))
    try:
        assert tr.teacher_id["arch"] == "hasn" and tr.teacher_id["scale"] == 4
        assert tr.cfg.distill.sha256 == _sha(lightsr.bundled.bundled_path("hasn", 4))
    finally:
        tr.close()
    teacher = _teacher_file(tmp_path)
    pinned = tiny_config(tmp_path, "pinned", distill={"teacher": str(teacher), "sha256": "0" * 64})
    with pytest.raises(ConfigError, match=r"^distill\.sha256: .*teacher_lksmn_x4\.safetensors has SHA-256 "):
        Trainer(config_from_dict(pinned))
    assert not (tmp_path / "runs" / "pinned").exists()  # refused before the run directory was made


@pytest.mark.parametrize(("what", "message"), [
    ("x2", r"distill\.teacher: .* is a ×2 lksmn network; the student \(model\.scale\) is ×4"),
    ("missing", r"distill\.teacher: .*nope\.safetensors"),
    ("garbage", r"distill\.teacher: .*garbage\.pth"),
    ("unknown", r"distill\.teacher: .*no_such_model"),
    ("weight_only", r"distill\.weight: has no effect without distill\.teacher"),
    ("zero_weight", r"distill\.weight: expected a positive float"),
])
def test_teacher_problems_are_one_line_config_errors_before_training(tmp_path, capsys, what, message):
    teacher = {"x2": str(_teacher_file(tmp_path, scale=2)), "missing": str(tmp_path / "nope.safetensors"),
               "garbage": str(tmp_path / "garbage.pth"), "unknown": "no_such_model"}.get(what)
    (tmp_path / "garbage.pth").write_bytes(b"\x80not a checkpoint")
    distill = {"weight_only": {"weight": 0.5}, "zero_weight": {"teacher": "hasn_x4", "weight": 0}}.get(
        what, {"teacher": teacher})
    raw = tiny_config(tmp_path, "bad", distill=distill)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "runs" / "bad").exists()
