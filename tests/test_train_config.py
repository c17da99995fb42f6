"""Training configs: typed loading, errors that name the key, --set overrides, the shipped recipes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from lightsr.cli import main
from lightsr.train.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    parse_yaml,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def _minimal(**sections) -> dict:
    raw = {"data": {"hr_dirs": ["x"]}}
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v) if isinstance(v, dict) else raw.__setitem__(k, v)
    return raw


def _error(raw: dict) -> str:
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------------ typed loading


def test_types_and_defaults():
    cfg = config_from_dict(_minimal(train={"batch_size": 8, "max_iters": 5e5, "optimizer": {"betas": [0.9, 0.99]}}))
    assert isinstance(cfg, Config)
    assert cfg.train.batch_size == 8
    assert cfg.train.max_iters == 500_000 and isinstance(cfg.train.max_iters, int)  # integral float accepted
    assert cfg.train.optimizer.betas == (0.9, 0.99)
    assert cfg.train.optimizer.lr == 2e-4 and cfg.model.arch == "lksmn"  # the package's default network


def test_yaml_12_floats_and_duplicate_keys():
    # PyYAML's YAML 1.1 reads 2e-4 as a string; lightsr reads it as the number everybody means.
    assert parse_yaml("lr: 2e-4\nx: 5e5\ny: 1_000\nz: .5") == {"lr": 2e-4, "x": 5e5, "y": 1000, "z": 0.5}
    assert yaml.safe_load("lr: 2e-4")["lr"] == "2e-4"  # the pitfall being fixed
    with pytest.raises(ConfigError, match="duplicate key 'lr'"):
        parse_yaml("lr: 1\nlr: 2")
    with pytest.raises(ConfigError, match=r"^<string>: invalid YAML at line 3, column 1: "):
        parse_yaml("a: 1\nb: [1, 2\n")


@pytest.mark.parametrize(("raw", "expected"), [
    (_minimal(train={"batch_size": "abc"}), "train.batch_size: expected a positive int, got 'abc'"),
    (_minimal(train={"batch_size": 0}), "train.batch_size: expected a positive int, got 0"),
    (_minimal(train={"batch_size": True}), "train.batch_size: expected a positive int, got True"),
    (_minimal(train={"batch_size": 2.5}), "train.batch_size: expected a positive int, got 2.5"),
    (_minimal(train={"optimizer": {"lr": "fast"}}), "train.optimizer.lr: expected a positive float, got 'fast'"),
    (_minimal(train={"optimizer": {"lr": -1e-4}}), "train.optimizer.lr: expected a positive float, got -0.0001"),
    (_minimal(train={"optimizer": {"betas": [0.9]}}), "train.optimizer.betas: expected a pair of floats"),
    (_minimal(train={"optimizer": {"type": "sgd"}}), "train.optimizer.type: expected one of 'adam', 'adamw'"),
    (_minimal(train={"ema_decay": 1.0}), "train.ema_decay: expected a float in [0, 1), got 1.0"),
    (_minimal(train={"amp": "fp8"}), "train.amp: expected one of 'none', 'bf16', 'fp16', got 'fp8'"),
    (_minimal(train={"device": "gpu"}), "train.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    (_minimal(data={"hr_dirs": "x"}), "data.hr_dirs: expected a list of strings, got 'x'"),
    (_minimal(data={"hr_dirs": ["x", 3]}), "data.hr_dirs[1]: expected a string, got 3"),
    (_minimal(data={"hflip": "yes"}), "data.hflip: expected a bool (true/false), got 'yes'"),
    (_minimal(name="a/b"), "name: expected a run name"),
    (_minimal(train=[1, 2]), "train: expected a mapping (section), got [1, 2]"),
])
def test_wrong_types_name_the_key(raw, expected):
    assert _error(raw).startswith(expected)


def test_unknown_keys_name_the_full_path_and_suggest():
    assert _error(_minimal(train={"bach_size": 3})) == "train.bach_size: unknown key; did you mean 'batch_size'?"
    assert _error(_minimal(train={"optimizer": {"momentum": 0.9}})).startswith(
        "train.optimizer.momentum: unknown key")
    msg = _error(_minimal(zzz=1))
    assert msg.startswith("zzz: unknown key; known keys: name, output_dir")


@pytest.mark.parametrize(("raw", "expected"), [
    (_minimal(data={"patch_size": 190}), "data.patch_size: 190 is not a multiple of model.scale 4"),
    (_minimal(model={"arch": "srcnn"}), "model.arch: unknown network 'srcnn'; available: elan, elan_light"),
    (_minimal(model={"scale": 5}), "model.scale: lksmn supports ×2, ×3, ×4, not ×5"),
    (_minimal(model={"overrides": {"scale": 2}}), "model.overrides.scale: set the scale with model.scale"),
    ({"data": {}}, "data.hr_dirs: expected at least one folder"),
    (_minimal(data={"lr_dirs": ["a", "b"]}), "data.lr_dirs: 2 folders for 1 data.hr_dirs"),
    (_minimal(train={"scheduler": {"milestones": [100, 50]}}),
     "train.scheduler.milestones[1]: 50 must be greater than the previous milestone (100)"),
    (_minimal(train={"scheduler": {"milestones": [10], "warmup_iters": 20}}),
     "train.scheduler.milestones[0]: 10 must be greater than train.scheduler.warmup_iters (20)"),
    (_minimal(train={"max_iters": 10, "scheduler": {"warmup_iters": 10}}),
     "train.scheduler.warmup_iters: 10 is not below train.max_iters 10"),
    (_minimal(train={"scheduler": {"type": "cosine", "milestones": [5]}}),
     "train.scheduler.milestones: only used by type 'multistep'"),
    (_minimal(train={"amp": "fp16", "device": "cpu"}), "train.amp: fp16 needs a CUDA device"),
    (_minimal(val={"every": 10, "sets": []}), "val.sets: expected at least one benchmark set"),
    # Keys that nothing would read are refused, not ignored.
    (_minimal(train={"scheduler": {"type": "multistep", "eta_min": 1e-5}}),
     "train.scheduler.eta_min: only used by type 'cosine'"),
    (_minimal(train={"scheduler": {"type": "cosine", "gamma": 0.1}}),
     "train.scheduler.gamma: only used by type 'multistep'"),
    (_minimal(train={"scheduler": {"warmup_start_factor": 0.1}}),
     "train.scheduler.warmup_start_factor: has no effect without train.scheduler.warmup_iters"),
    (_minimal(train={"ema_warmup": True}), "train.ema_warmup: has no effect without train.ema_decay"),
    (_minimal(data={"num_workers": 0, "prefetch_factor": 4}), "data.prefetch_factor: has no effect with"),
    (_minimal(train={"optimizer": {"lr": 1e-4}, "scheduler": {"type": "cosine", "eta_min": 1e-4}}),
     "train.scheduler.eta_min: 0.0001 is not below train.optimizer.lr 0.0001"),
])
def test_impossible_values_name_the_key(raw, expected):
    assert _error(raw).startswith(expected)


# ------------------------------------------------------------------------------------------ --set


def test_set_overrides_are_yaml_and_create_sections():
    raw = apply_overrides(_minimal(), [
        "train.batch_size=8", "train.optimizer.betas=[0.9, 0.99]", "model.overrides={channels: 12, num_blocks: 1}",
        "train.optimizer.lr=1e-3", "data.hr_dirs=[a, b]", "init_from=", "val.sets=[Set5, Set14]",
    ])
    cfg = config_from_dict(raw)
    assert cfg.train.batch_size == 8 and cfg.train.optimizer.betas == (0.9, 0.99)
    assert cfg.model.overrides == {"channels": 12, "num_blocks": 1}
    assert cfg.train.optimizer.lr == 1e-3 and cfg.data.hr_dirs == ["a", "b"]
    assert cfg.init_from is None and cfg.val.sets == ["Set5", "Set14"]


def test_set_errors():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["train.batch_size"])
    with pytest.raises(ConfigError, match=r"train\.batch_size is not a section"):
        apply_overrides({"train": {"batch_size": 4}}, ["train.batch_size.x=1"])
    # A typo'd key given with --set is still an unknown key, named in full.
    assert _error(apply_overrides(_minimal(), ["train.optimiser.lr=1"])).startswith("train.optimiser: unknown key")


def test_dump_round_trip(tmp_path):
    cfg = config_from_dict(_minimal(train={"optimizer": {"betas": [0.9, 0.99]}, "max_iters": 1000},
                                    model={"overrides": {"channels": 12}}))
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    assert config_to_dict(load_config(p)) == config_to_dict(cfg)


# ------------------------------------------------------------------------------------------ shipped configs


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    # Paper recipes use the papers' 2e-4; the CPU recipes (15-minute, 1-hour comparison, bundled)
    # use 1e-3 with cosine decay to the end of their budget; fine-tuning recipes (a warm start from bundled
    # weights of another track) start lower, 5e-4, with cosine decay; a run continuing a committed run (a warm
    # start from its checkpoint in training/, or from the bundled file its name continues: lksmn_x4_* from
    # lksmn_x4.safetensors) or fine-tuning fully trained published weights (../shared/weights) lower still, 2e-4 —
    # or less, where it picks up a campaign mid-schedule at the rate the campaign had reached there.
    cpu = path.stem.endswith(("_cpu", "_1h", "_bundled")) or "_study_" in path.stem
    finetune = bool(cfg.init_from) and not cpu
    init = Path(cfg.init_from or "")
    continued = finetune and (init.parts[0] == "training" or init.parts[:3] == ("..", "shared", "weights")
                              or (init.parent.as_posix() == "src/lightsr/weights" and path.stem.startswith(init.stem)))
    expected = 2e-4 if continued else 5e-4 if finetune else 1e-3 if cpu else 2e-4
    assert cfg.train.loss == "l1"
    if continued:
        assert 1e-5 <= cfg.train.optimizer.lr <= expected
    else:
        assert cfg.train.optimizer.lr == pytest.approx(expected)
    if cpu or finetune:
        assert cfg.train.scheduler.type == "cosine"
    # A warm start that a fresh clone cannot find would only fail hours later, at the start of the run.
    if cfg.init_from:
        assert (REPO / cfg.init_from).is_file(), cfg.init_from


def test_warm_start_study_twins_differ_only_in_init():
    a, b = (config_to_dict(load_config(REPO / f"configs/lksmn_x2_study_{v}.yaml")) for v in ("scratch", "warm"))
    assert a.pop("init_from") is None and b.pop("init_from")
    assert dict(a, name=None) == dict(b, name=None)


def test_comparison_configs_share_one_budget():
    """The ×4 three-network comparison differs only in the network and its 1-hour iteration count."""
    dicts = {a: config_to_dict(load_config(REPO / f"configs/{a}_x4_1h.yaml")) for a in ("hasn", "elan_light", "lksmn")}
    stripped = []
    for a, d in dicts.items():
        assert d["model"]["arch"] == a and d["model"]["scale"] == 4
        d = dict(d, name=None, output_dir=None, model=None)
        d["train"] = dict(d["train"], max_iters=None)
        stripped.append(d)
    assert stripped[0] == stripped[1] == stripped[2]


def test_recipes_match_the_papers():
    for s in (2, 3, 4):
        c = load_config(REPO / f"configs/elan_light_x{s}.yaml")
        assert c.model.arch == "elan_light" and c.model.scale == s
        assert c.train.batch_size == 64 and c.data.patch_size in (256, 255) and c.train.ema_decay == 0
        # 500 epochs of DIV2K's 800 images × data_repeat, at batch 64, halved at epochs 250/400/450/475.
        iters_per_epoch = 800 * c.data.repeat // c.train.batch_size
        assert iters_per_epoch == 1000
        assert c.train.max_iters == 500 * iters_per_epoch
        assert c.train.scheduler.milestones == [e * iters_per_epoch for e in (250, 400, 450, 475)]
        assert c.train.scheduler.gamma == 0.5
    e = load_config(REPO / "configs/elan_x4.yaml")
    per = 800 * e.data.repeat // e.train.batch_size
    assert (e.data.patch_size, e.train.batch_size, e.train.max_iters) == (192, 32, 500 * per)
    assert e.train.scheduler.milestones == [x * per for x in (250, 400, 450, 475)]
    h = load_config(REPO / "configs/hasn_x4.yaml")
    assert (h.data.patch_size, h.train.batch_size, h.train.max_iters) == (192, 128, 500_000)
    assert h.train.optimizer.betas == (0.9, 0.99) and h.train.ema_decay == 0.999
    assert h.train.scheduler.milestones == [250_000, 400_000, 450_000, 475_000]


@pytest.mark.parametrize("arch", ["hasn", "elan_light", "lksmn"])
def test_cpu_configs_point_at_shared_data(arch):
    c = load_config(REPO / f"configs/{arch}_x4_cpu.yaml")
    assert c.model.arch == arch and c.model.scale == 4
    assert c.data.hr_dirs == ["../shared/data/train/T91", "../shared/data/train/BSD200"]
    assert c.val.root == "../shared/data/benchmark" and "Set5" in c.val.sets
    assert c.train.optimizer.betas == (0.9, 0.99) and c.train.ema_decay == 0.999
    assert c.train.scheduler.type == "cosine" and c.train.scheduler.warmup_iters < c.train.max_iters


# ------------------------------------------------------------------------------------------ command line


def _cli(capsys, cfg_path: Path, *extra: str) -> tuple[int, str]:
    rc = main(["train", "--config", str(cfg_path), *extra])
    return rc, capsys.readouterr().err.strip()


@pytest.mark.parametrize(("sets", "expected"), [
    (["train.batch_size=abc"], "train.batch_size: expected a positive int, got 'abc'"),
    (["train.lr=1e-3"], "train.lr: unknown key"),
    (["data.patch_size=50"], "data.patch_size: 50 is not a multiple of model.scale 4"),
])
def test_cli_config_errors_are_one_line(tmp_path, capsys, sets, expected):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(_minimal()))
    rc, err = _cli(capsys, p, *[a for s in sets for a in ("--set", s)])
    assert rc == 2
    assert err == f"lightsr: error: {expected}" or err.startswith(f"lightsr: error: {expected}")
    assert len(err.splitlines()) == 1


def test_cli_missing_config_file(tmp_path, capsys):
    rc, err = _cli(capsys, tmp_path / "nope.yaml")
    assert rc == 2 and err == f"lightsr: error: {tmp_path / 'nope.yaml'}: no such config file"


def test_cli_print_config_applies_sets(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(_minimal()))
    assert main(["train", "--config", str(p), "--set", "train.batch_size=12", "--init-from", "w.pth",
                 "--print-config"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["train"]["batch_size"] == 12 and out["init_from"] == "w.pth"
    assert np.isclose(out["train"]["optimizer"]["lr"], 2e-4)
