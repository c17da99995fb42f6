"""Training configuration: YAML → typed, validated, nested dataclasses.

Every value is checked against its field's type and range when the file is read, and every error names the full
key (``train.batch_size: expected a positive int, got 'abc'``), so a typo fails in the first second of a run and
not after an hour of data loading. ``--set a.b=value`` overrides are applied to the parsed YAML *before*
validation and their values are YAML too (``--set train.optimizer.betas=[0.9,0.99]``).

The YAML reader follows YAML 1.2 for floats (``2e-4`` is a number, not the string PyYAML 1.1 makes of it — the
classic BasicSR ``!!float`` pitfall) and refuses duplicate keys.

Relative paths (data folders, ``output_dir``, ``init_from``) are kept as written and resolved against the
current directory when training starts, not against the config file's folder: the shipped recipes are meant to
be run from the repository root, and ``--set`` can point them elsewhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lightsr._fields import (
    NON_EMPTY_STR,
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    UNIT_HALF_OPEN,
    UNIT_INTERVAL,
    Check,
    meta,
)
from lightsr.bundled import DEFAULT_MODEL
from lightsr.degradations import DegradationConfig, SecondStageConfig, StageConfig, parse_degrade
from lightsr.errors import LightSRError, first_line

__all__ = [
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DebugConfig",
    "DegradationConfig",
    "DistillConfig",
    "LogConfig",
    "ModelConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "SecondStageConfig",
    "StageConfig",
    "TrainConfig",
    "ValConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "parse_yaml",
]


class ConfigError(LightSRError, ValueError):
    """A config value that is missing, unknown, of the wrong type or impossible; the message names the key."""


# ------------------------------------------------------------------------------------------- constraints

BETAS = meta(lambda v: all(0 <= b < 1 for b in v), "a pair of floats in [0, 1)")
RUN_NAME = meta(lambda v: bool(re.fullmatch(r"[A-Za-z0-9._+-]+", v)) and v not in (".", ".."),
                "a run name (letters, digits, . _ + -)")
DEVICE = meta(lambda v: bool(re.fullmatch(r"auto|cpu|cuda(:\d+)?", v)), "'auto', 'cpu', 'cuda' or 'cuda:N'")


# ------------------------------------------------------------------------------------------- the schema


@dataclass
class ModelConfig:
    """The network: a registry name, its scale and constructor overrides (``{channels: 12, num_blocks: 1}``)."""

    arch: str = field(default=DEFAULT_MODEL, metadata=NON_EMPTY_STR)  # lightsr's default network
    scale: int = field(default=4, metadata=POSITIVE_INT)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Training data: HR folders (LR made on the fly by MATLAB-exact bicubic) or paired HR/LR folders."""

    hr_dirs: list[str] = field(default_factory=list)
    lr_dirs: list[str] = field(default_factory=list)  # empty: LR = imresize(HR, 1/scale); else one per hr_dirs entry
    patch_size: int = field(default=192, metadata=POSITIVE_INT)  # HR patch side; the LR patch is patch_size / scale
    repeat: int = field(default=1, metadata=POSITIVE_INT)  # samples per image per epoch (trainers' data_repeat)
    hflip: bool = True
    rot: bool = True  # vertical flip + transpose; with hflip the 8 flips/rotations of BasicSR's augment
    cache_max_bytes: int = field(default=4 << 30, metadata=NON_NEGATIVE_INT)  # decoded images kept in RAM, per process
    num_workers: int = field(default=2, metadata=NON_NEGATIVE_INT)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    prefetch_factor: int = field(default=2, metadata=POSITIVE_INT)


@dataclass
class ValConfig:
    """Validation on benchmark sets with :func:`lightsr.evaluate.evaluate` (Y PSNR/SSIM, crop = scale)."""

    every: int = field(default=5000, metadata=NON_NEGATIVE_INT)  # iterations; 0 = never
    root: str = field(default="../shared/data/benchmark", metadata=NON_EMPTY_STR)
    sets: list[str] = field(default_factory=lambda: ["Set5"])
    use_ema: bool = True  # validate (and pick the best checkpoint by) the EMA weights when EMA is on
    degrade: str | None = None  # LR inputs degraded as by ``lightsr eval --degrade`` (e.g. "noise:10,jpeg:60")


@dataclass
class OptimizerConfig:
    """The optimizer: Adam or AdamW with its learning rate, betas, eps and weight decay."""
    type: Literal["adam", "adamw"] = "adam"
    lr: float = field(default=2e-4, metadata=POSITIVE_FLOAT)
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata=BETAS)
    eps: float = field(default=1e-8, metadata=POSITIVE_FLOAT)
    weight_decay: float = field(default=0.0, metadata=NON_NEGATIVE_FLOAT)


@dataclass
class SchedulerConfig:
    """Learning-rate schedule, stepped once per iteration; milestones count optimizer steps."""

    type: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[int] = field(default_factory=list)  # multistep: lr *= gamma after this many iterations
    gamma: float = field(default=0.5, metadata=UNIT_INTERVAL)
    eta_min: float = field(default=1e-7, metadata=NON_NEGATIVE_FLOAT)  # cosine: final lr
    warmup_iters: int = field(default=0, metadata=NON_NEGATIVE_INT)  # linear warm-up from lr·warmup_start_factor
    warmup_start_factor: float = field(default=1e-3, metadata=UNIT_INTERVAL)


@dataclass
class TrainConfig:
    """The optimisation: iterations, global batch, loss, optimizer, schedule, EMA, AMP and the device."""
    max_iters: int = field(default=500_000, metadata=POSITIVE_INT)
    batch_size: int = field(default=64, metadata=POSITIVE_INT)  # global batch: split evenly over DDP processes
    loss: Literal["l1"] = "l1"
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    grad_clip: float = field(default=0.0, metadata=NON_NEGATIVE_FLOAT)  # max global L2 norm of the gradients; 0 = off
    ema_decay: float = field(default=0.0, metadata=UNIT_HALF_OPEN)  # 0 = no EMA
    ema_warmup: bool = False  # decay min(ema_decay, (1+n)/(10+n)): useful for short runs only
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    device: str = field(default="auto", metadata=DEVICE)
    threads: int = field(default=0, metadata=NON_NEGATIVE_INT)  # intra-op threads per process; 0: torch's default


SHA256 = meta(lambda v: bool(re.fullmatch(r"[0-9a-f]{64}", v)), "a SHA-256 in 64 lower-case hex digits")


@dataclass
class DistillConfig:
    """Knowledge distillation: loss = L1(student, HR) + ``weight``·L1(student, teacher(LR)).

    The teacher is frozen in eval mode (its inference form) and sees exactly the LR batch the student sees.
    ``teacher``: a checkpoint path, a published checkpoint's name or a bundled file's name (``<name>_x<scale>``), or a
    network/variant name at ``model.scale``); null = no distillation. ``sha256``: the teacher file's SHA-256 —
    filled in when a run starts (config.yaml and every checkpoint record it); when given, the file must match.
    """

    teacher: str | None = None
    weight: float = field(default=1.0, metadata=POSITIVE_FLOAT)
    precision: Literal["fp32", "bf16"] = "fp32"  # the teacher's forward; bf16 only pays on CPUs with native bf16
    param_key: str | None = None  # container entry of the teacher file (params / params_ema); null: detected
    sha256: str | None = field(default=None, metadata=SHA256)


@dataclass
class CheckpointConfig:
    """How often checkpoints are written (iterations) and how many are kept."""
    every: int = field(default=5000, metadata=POSITIVE_INT)
    keep_last: int = field(default=3, metadata=POSITIVE_INT)


@dataclass
class LogConfig:
    """How often the loss is logged, the progress bar and TensorBoard."""
    every: int = field(default=100, metadata=POSITIVE_INT)
    progress: bool = True
    tensorboard: bool = True  # used when the tensorboard package is installed


@dataclass
class DebugConfig:
    """Hooks for tests and diagnosis; they never change the numbers of a run unless their name says so."""

    nan_at_iter: int = field(default=0, metadata=NON_NEGATIVE_INT)  # this iteration's loss made NaN (1-based); 0 = off
    dump_rank_weights: bool = False  # every DDP rank writes its final weights to <run_dir>/debug/
    sleep_per_iter: float = field(default=0.0, metadata=NON_NEGATIVE_FLOAT)  # slow a run down (kill/resume tests)


@dataclass
class Config:
    """A whole training run: every section of the YAML config, typed and validated."""
    name: str = field(default="run", metadata=RUN_NAME)
    output_dir: str = field(default="runs", metadata=NON_EMPTY_STR)  # the run directory is <output_dir>/<name>
    seed: int = field(default=0, metadata=NON_NEGATIVE_INT)
    auto_resume: bool = False  # continue from the latest complete checkpoint of the run directory if any
    init_from: str | None = None  # warm start: weights only (see --init-from)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    val: ValConfig = field(default_factory=ValConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)


# ------------------------------------------------------------------------------------------- YAML reading


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (``1e-4``, ``5e5``) and an error on duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?$
                  |^[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)$
                  |^[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?$
                  |^[-+]?\.(?:inf|Inf|INF)$
                  |^\.(?:nan|NaN|NAN)$""", re.X),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text with lightsr's rules; syntax errors become one-line :class:`ConfigError` s."""
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader derives from SafeLoader: no arbitrary objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or first_line(e)
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None


# ------------------------------------------------------------------------------------------- conversion


def _type_desc(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is int:
        return "an int"
    if tp is float:
        return "a float"
    if tp is bool:
        return "a bool (true/false)"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        inner = _type_desc(args[0]).split(" ", 1)[-1]
        return f"a list of {inner}s"
    if origin is tuple:
        return f"a list of {len(args)} {_type_desc(args[0]).split(' ', 1)[-1]}s"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping (section)"
    if _optional_inner(tp) is not None:
        return f"{_type_desc(_optional_inner(tp))} or null"
    return str(tp)


def _optional_inner(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def _fail(key: str, desc: str, value: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {desc}, got {value!r}")


def _convert(value: Any, tp: Any, key: str, check: Check | None = None) -> Any:
    desc = check.desc if check else _type_desc(tp)
    inner = _optional_inner(tp)
    if inner is not None:
        return None if value is None else _convert(value, inner, key, check)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, {} if value is None else value, key)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(key, desc, value)
        out: Any = value
    elif tp is int:
        if isinstance(value, float) and value.is_integer():  # 5e5 → 500000
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(key, desc, value)
        out = value
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(key, desc, value)
        out = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise _fail(key, desc, value)
        out = value
    elif origin is Literal:
        if value not in args or isinstance(value, bool):
            raise _fail(key, desc, value)
        out = value
    elif origin is list:
        if not isinstance(value, (list, tuple)):
            raise _fail(key, desc, value)
        out = [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise _fail(key, desc, value)
        out = tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    elif origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _fail(key, desc, value)
        out = dict(value)
    else:  # pragma: no cover - a schema type this function does not know is a programming error
        raise TypeError(f"{key}: unsupported schema type {tp}")
    if check is not None and not check.ok(out):
        raise _fail(key, desc, value)
    return out


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix or "config"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping (section), got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in fields:
            near = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"{prefix + '.' if prefix else ''}{k}: unknown key{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in raw:
            key = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _convert(raw[name], hints[name], key, f.metadata.get("check"))
    return cls(**kwargs)


# ------------------------------------------------------------------------------------------- cross-field checks


def validate(cfg: Config) -> Config:
    """Checks that involve several keys or the model registry; raises :class:`ConfigError` naming the key."""
    from lightsr.models.registry import list_models, model_spec

    if cfg.model.arch not in list_models():
        raise ConfigError(f"model.arch: unknown network {cfg.model.arch!r}; available: {', '.join(list_models())}")
    spec = model_spec(cfg.model.arch)
    if cfg.model.scale not in spec.scales:
        raise ConfigError(f"model.scale: {cfg.model.arch} supports ×{', ×'.join(map(str, spec.scales))}, "
                          f"not ×{cfg.model.scale}")
    if "scale" in cfg.model.overrides:
        raise ConfigError("model.overrides.scale: set the scale with model.scale")
    d = cfg.data
    if not d.hr_dirs:
        raise ConfigError("data.hr_dirs: expected at least one folder of HR training images")
    if d.lr_dirs and len(d.lr_dirs) != len(d.hr_dirs):
        raise ConfigError(f"data.lr_dirs: {len(d.lr_dirs)} folders for {len(d.hr_dirs)} data.hr_dirs; "
                          "give one LR folder per HR folder, or none to make LR on the fly")
    if d.patch_size % cfg.model.scale:
        raise ConfigError(f"data.patch_size: {d.patch_size} is not a multiple of model.scale {cfg.model.scale} "
                          "(it is the HR patch side)")
    if d.degradation.type != "bicubic" and d.lr_dirs:
        raise ConfigError("data.degradation.type: the LR images of data.lr_dirs are used as they are; "
                          "degradations need HR folders only")
    if d.degradation.type == "bicubic" and config_to_dict(d.degradation) != config_to_dict(DegradationConfig()):
        raise ConfigError("data.degradation: its settings are only used with type 'real'")
    if d.degradation.clean_prob + d.degradation.downscaled_prob > 1:
        raise ConfigError(f"data.degradation.downscaled_prob: {d.degradation.downscaled_prob:g} with clean_prob "
                          f"{d.degradation.clean_prob:g} exceeds 1 (they are shares of the samples)")
    if cfg.val.degrade is not None:
        try:
            parse_degrade(cfg.val.degrade, "val.degrade:")
        except LightSRError as e:
            raise ConfigError(str(e)) from None
    if cfg.val.every and not cfg.val.sets:
        raise ConfigError("val.sets: expected at least one benchmark set when val.every > 0")
    t, s = cfg.train, cfg.train.scheduler
    if s.warmup_iters >= t.max_iters:
        raise ConfigError(f"train.scheduler.warmup_iters: {s.warmup_iters} is not below train.max_iters "
                          f"{t.max_iters}")
    if s.type == "multistep":
        prev = s.warmup_iters
        for i, m in enumerate(s.milestones):
            if m <= prev:
                raise ConfigError(f"train.scheduler.milestones[{i}]: {m} must be greater than "
                                  f"{'the previous milestone' if i else 'train.scheduler.warmup_iters'} ({prev})")
            prev = m
    elif s.milestones:
        raise ConfigError(f"train.scheduler.milestones: only used by type 'multistep', not {s.type!r}")
    if t.amp == "fp16" and t.device == "cpu":
        raise ConfigError("train.amp: fp16 needs a CUDA device; use bf16 on CPU")
    # A key set to something other than its default where nothing reads it is a mistake to report, not ignore.
    sd, td, dd = SchedulerConfig(), TrainConfig(), DataConfig(hr_dirs=[])
    inert = [
        ("train.scheduler.eta_min", s.type != "cosine" and s.eta_min != sd.eta_min, "only used by type 'cosine'"),
        ("train.scheduler.gamma", s.type != "multistep" and s.gamma != sd.gamma, "only used by type 'multistep'"),
        ("train.scheduler.warmup_start_factor", s.warmup_iters == 0 and s.warmup_start_factor != sd.warmup_start_factor,
         "has no effect without train.scheduler.warmup_iters"),
        ("train.ema_warmup", t.ema_decay == 0 and t.ema_warmup != td.ema_warmup,
         "has no effect without train.ema_decay"),
        ("data.prefetch_factor", d.num_workers == 0 and d.prefetch_factor != dd.prefetch_factor,
         "has no effect with data.num_workers 0"),
    ]
    for key, bad, why in inert:
        if bad:
            raise ConfigError(f"{key}: {why}")
    k = cfg.distill
    if k.teacher is None:
        unused = [f"distill.{n}" for n, v in config_to_dict(k).items() if v != getattr(DistillConfig(), n)]
        if unused:
            raise ConfigError(f"{unused[0]}: has no effect without distill.teacher")
    elif not k.teacher.strip():
        raise ConfigError("distill.teacher: expected a checkpoint path or a bundled or published name, got ''")
    if s.type == "cosine" and s.eta_min >= t.optimizer.lr:
        raise ConfigError(f"train.scheduler.eta_min: {s.eta_min:g} is not below train.optimizer.lr {t.optimizer.lr:g}")
    return cfg


# ------------------------------------------------------------------------------------------- public API


def config_from_dict(raw: Any) -> Config:
    """Typed, validated :class:`Config` from a parsed YAML mapping."""
    return validate(_build(Config, {} if raw is None else raw, ""))


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` strings (values parsed as YAML) to a raw config mapping, in order."""
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--set {item}: expected KEY=VALUE with a dotted key, e.g. train.batch_size=16")
        value = parse_yaml(text, f"--set {key}") if text.strip() else None
        node = raw
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a section")
            node = nxt
        node[parts[-1]] = value
    return raw


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config, apply ``--set`` overrides, and return the validated :class:`Config`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return config_from_dict(apply_overrides(raw, overrides))


def config_to_dict(cfg: Any) -> Any:
    """Plain YAML-able data (tuples become lists) of a config or section."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    return cfg


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


def diff_configs(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config mappings."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += diff_configs(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix]
