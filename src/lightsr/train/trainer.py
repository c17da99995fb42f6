"""The training loop: one process or ``torchrun`` DDP, exact resume, EMA, AMP, validation, checkpoints.

One iteration = one optimizer step on ``train.batch_size`` patches (the *global* batch; under DDP each of the
``W`` processes computes ``batch_size / W`` of them and DDP averages the gradients, so a config means the same
optimisation on any number of processes). The learning-rate schedule is stepped once per iteration.

Exact resume rests on three things: the batches are a pure function of ``(seed, iteration)``
(:class:`lightsr.data.IterationBatchSampler`); a checkpoint holds everything the next step reads (weights,
EMA weights, optimizer, scheduler, grad-scaler, RNG states); and the sampler restarts at the checkpoint's
iteration. On CPU with ``train.deterministic`` a killed-and-resumed run ends bit-identical to an uninterrupted
one (``tests/test_trainer.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightsr._files import atomic_write
from lightsr.device import native_bf16
from lightsr.errors import LightSRError, WriteError
from lightsr.train import distributed as D
from lightsr.train.config import Config, ConfigError, config_from_dict, config_to_dict, diff_configs, dump_config
from lightsr.train.ema import ModelEMA
from lightsr.train.logger import NullLogger, RunLogger
from lightsr.train.state import (
    EMA_FILE,
    MODEL_FILE,
    STATE_FILE,
    checkpoint_name,
    list_checkpoints,
    load_state,
    load_weights,
    prune_checkpoints,
    recover_atomic_dir,
    remove_stale_temporaries,
    rng_state,
    set_rng_state,
    warm_start,
    write_atomic_dir,
)

log = logging.getLogger("lightsr")

__all__ = ["NonFiniteLossError", "RunError", "TrainResult", "Trainer", "train"]

# Keys whose change between a run and its resumption does not alter the numbers (only speed or reporting).
_HARMLESS_ON_RESUME = ("auto_resume", "init_from", "debug", "log", "data.num_workers", "data.prefetch_factor",
                       "data.cache_max_bytes", "train.threads", "val", "checkpoint")


def _schedule_keys(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config values the learning-rate schedule depends on (``max_iters`` only for cosine decay)."""
    t = cfg.get("train", {})
    s = dict(t.get("scheduler", {}))
    keys = {"train.optimizer.lr": t.get("optimizer", {}).get("lr")}
    keys.update({f"train.scheduler.{k}": v for k, v in s.items()})
    if s.get("type") == "cosine":
        keys["train.max_iters"] = t.get("max_iters")
    return keys


# Lock files held by this process. A forked child (a DataLoader worker) closes its copies at once: an flock
# belongs to the open file, so a worker outliving a killed trainer would otherwise keep the run locked.
_HELD_LOCKS: set[Any] = set()


def _close_locks_in_child() -> None:
    for f in _HELD_LOCKS:
        f.close()
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_locks_in_child)


def _lock_run_dir(run_dir: Path) -> Any:
    """Hold an exclusive lock on ``run_dir`` for the run's lifetime: two processes resuming the same run would
    write and prune the same checkpoints. Returns the open lock file (None where ``fcntl`` does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        f = (run_dir / ".lock").open("a+")
    except OSError as e:
        raise RunError(f"{run_dir}: cannot create the run directory's lock file ({e.strerror or e})") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            # A filesystem without locks (some NFS/FUSE mounts) must not stop every run.
            f.close()
            log.warning("%s: cannot lock the run directory (%s); not guarding against a second process",
                        run_dir, e.strerror or e)
            return None
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise RunError(f"{run_dir}: another lightsr train (pid {pid}) is using this run directory") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _HELD_LOCKS.add(f)
    return f


class NonFiniteLossError(LightSRError, FloatingPointError):
    """The loss became NaN or infinite; the run stopped without writing anything further."""


class RunError(LightSRError, RuntimeError):
    """A run directory that cannot be used as asked (resume without checkpoint, overwrite, …)."""


@dataclass
class TrainResult:
    """What a run ended with: its folder, iteration, last checkpoint, best validation and whether time stopped it."""
    run_dir: Path
    iteration: int
    checkpoint: Path | None
    best: dict[str, Any] | None
    time_limited: bool = False  # stopped by max_seconds before train.max_iters (continue with --resume)


def resolve_path(p: str | Path) -> Path:
    """Config paths are relative to the current directory (not to the config file)."""
    return Path(p).expanduser().resolve()


def _last_line(e: BaseException) -> str:
    """DataLoader workers re-raise with the whole traceback in the message; users need its last line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    line = lines[-1] if lines else type(e).__name__
    name = type(e).__name__
    for prefix in (f"{type(e).__module__}.{name}: ", f"{name}: "):
        if line.startswith(prefix):
            line = line[len(prefix):]
    return line


def build_scheduler(opt: torch.optim.Optimizer, cfg: Config) -> torch.optim.lr_scheduler.LRScheduler:
    """MultiStep / cosine / constant, preceded by a linear warm-up when ``warmup_iters > 0``.

    Milestones are absolute iteration counts; ``SequentialLR`` restarts the main schedule's counter after the
    warm-up, so the main schedule is built on iterations counted from the end of the warm-up.
    """
    from torch.optim import lr_scheduler as S

    s, w = cfg.train.scheduler, cfg.train.scheduler.warmup_iters
    if s.type == "multistep" or s.type == "constant":
        main = S.MultiStepLR(opt, milestones=[m - w for m in s.milestones], gamma=s.gamma)
    else:
        main = S.CosineAnnealingLR(opt, T_max=cfg.train.max_iters - w, eta_min=s.eta_min)
    if w == 0:
        return main
    warm = S.LinearLR(opt, start_factor=s.warmup_start_factor, end_factor=1.0, total_iters=w)
    return S.SequentialLR(opt, [warm, main], milestones=[w])


def build_optimizer(params: list[nn.Parameter], cfg: Config) -> torch.optim.Optimizer:
    o = cfg.train.optimizer
    cls = torch.optim.AdamW if o.type == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)


class Trainer:
    """Builds everything from a :class:`Config` (and a checkpoint when resuming); :meth:`run` trains.

    ``resume=True`` (``--resume``) requires a complete checkpoint in the run directory; ``cfg.auto_resume``
    uses one if present. ``cfg.init_from`` warm-starts the weights of a fresh run.
    """

    def __init__(self, cfg: Config, resume: bool = False, max_seconds: float | None = None) -> None:
        self.cfg = cfg
        self._t0 = time.perf_counter()
        # A wall-clock budget for this process (--max-time): at its end the run writes a checkpoint and stops, to
        # be continued with --resume (sessions or GPU leases of fixed length).
        self.max_seconds = max_seconds
        self.logger: NullLogger = NullLogger()
        # A config error is reported before the process group connects: that can fail or wait on its own.
        world = D.launched_world_size()
        if cfg.train.batch_size % world:
            raise ConfigError(f"train.batch_size: {cfg.train.batch_size} is not divisible by the {world} "
                              "processes (it is the global batch)")
        self.ctx = D.setup(cfg.train.device)
        try:
            self._setup(resume)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------------ setup

    def _setup(self, resume: bool) -> None:
        cfg, ctx = self.cfg, self.ctx
        self.device = ctx.device
        if cfg.train.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.amp: fp16 needs a CUDA device; use bf16 on CPU")
        # Process-wide torch settings, restored by close() so that an in-process run leaves no trace.
        self._saved_globals = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                               torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        # Before anything is written: a teacher that does not load or does not fit is a config error.
        self.teacher, self.teacher_id = self._load_teacher()
        cfg = self.cfg  # with distill.sha256 filled in
        # Same seed on every rank: identical initial weights even before DDP's broadcast.
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)  # noqa: NPY002 - seeds what third-party code may draw from
        random.seed(cfg.seed)

        self.run_dir = resolve_path(cfg.output_dir) / cfg.name
        self.ckpt_dir = self.run_dir / "checkpoints"
        locked: RunError | None = None
        if ctx.is_main:
            try:
                self._lock = _lock_run_dir(self.run_dir)
            except RunError as e:
                locked = e
        found = list_checkpoints(self.ckpt_dir)
        # Rank 0's view of the directory decides (ranks on a lagging shared filesystem follow it), and its lock
        # failure stops every rank (-2), not rank 0 alone while the others wait in a collective.
        latest = D.broadcast_int(-2 if locked else found[-1][0] if found else -1, ctx)
        if latest == -2:
            raise locked or RunError(f"{self.run_dir}: another lightsr train is using this run directory")
        resume_from = self.ckpt_dir / checkpoint_name(latest) if latest >= 0 and (resume or cfg.auto_resume) else None
        if resume and resume_from is None:
            raise RunError(f"{self.ckpt_dir}: no complete checkpoint to resume from")
        if latest >= 0 and resume_from is None:
            raise RunError(f"{self.run_dir}: already holds checkpoints (latest {checkpoint_name(latest)}); continue "
                           "it with --resume or pick another run name (--set name=...)")
        self.resume_from = resume_from
        D.barrier(self.ctx)  # every rank has decided before rank 0 touches the directory

        self.model = self._build_model()
        init_note = None
        if cfg.init_from and resume_from is None:
            loaded, skipped = warm_start(self.model, resolve_path(cfg.init_from))
            init_note = (f"warm start from {cfg.init_from}: loaded {len(loaded)} tensors"
                         + (f", kept the fresh init of {len(skipped)} scale-dependent ones "
                            f"({', '.join(skipped)})" if skipped else ""))
        self.model.to(self.device)
        if cfg.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.ema = ModelEMA(self.model, cfg.train.ema_decay, cfg.train.ema_warmup) if cfg.train.ema_decay else None
        self.optimizer = build_optimizer([p for p in self.model.parameters() if p.requires_grad], cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        amp = cfg.train.amp
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

        self.iteration = 0
        self.grad_norm: float | None = None
        self.elapsed_before = 0.0
        self.best: dict[str, Any] | None = None
        self.last_checkpoint: Path | None = resume_from
        if resume_from is not None:
            self._restore(resume_from)

        self.forward = self.model
        if ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # Plain per-rank BatchNorm, as the papers trained: batch statistics per process, running
            # statistics synced from rank 0 at each forward (DDP's default buffer sync, left as it is).
            self.forward = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            # Depthwise kernels (C×1×k×k) have gradients whose stride on the size-1 axis differs from the
            # bucket's: same memory layout, but the reducer warns at every run.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        if cfg.train.compile:
            self.forward = torch.compile(self.forward)

        self.dataset, self.sampler, self.loader = self._build_data()
        if cfg.val.every:  # fail now, not at the first validation an hour into the run
            from lightsr.evaluate import check_sets

            check_sets(resolve_path(cfg.val.root), cfg.val.sets, "val.root, val.sets")
        self.logger: RunLogger | NullLogger = NullLogger()

        def prepare() -> None:  # rank 0 alone writes into the run folder; the others wait for its outcome
            self.logger = RunLogger(self.run_dir, cfg.train.max_iters, self.iteration, cfg.log.progress,
                                    cfg.log.tensorboard)
            self._write_config()
            if recover_atomic_dir(self.run_dir / "best"):
                self.logger.event("cleanup", "restored best/ from an interrupted replacement")
            removed = remove_stale_temporaries(self.ckpt_dir)
            if removed:
                self.logger.event("cleanup", f"removed incomplete checkpoint(s) {', '.join(p.name for p in removed)}")
            saved = getattr(self, "_saved_data", None)
            if resume_from is not None and saved and (saved.get("num_samples"), saved.get("global_batch")) != (
                    len(self.dataset), cfg.train.batch_size):
                self.logger.event("warning", f"the data changed since the checkpoint ({saved.get('num_samples')} "
                                  f"samples, batch {saved.get('global_batch')} then; {len(self.dataset)} samples, "
                                  f"batch {cfg.train.batch_size} now): the batch order will differ")
            if resume_from is not None:
                ignored = f"; init_from {cfg.init_from} ignored" if cfg.init_from else ""
                self.logger.event("resume", f"resuming from {resume_from} (iteration {self.iteration}){ignored}",
                                  iter=self.iteration, checkpoint=str(resume_from))
            elif cfg.init_from:
                self.logger.event("init_from", init_note, path=str(cfg.init_from))
            late = [m for m in cfg.train.scheduler.milestones if m >= cfg.train.max_iters]
            if late:
                self.logger.event("warning", f"train.scheduler.milestones {late} are not below train.max_iters "
                                  f"{cfg.train.max_iters} and will never be reached")
            if amp == "bf16" and self.device.type == "cpu" and not native_bf16(self.device):
                self.logger.event("warning", "this CPU has no native bf16; bf16 autocast will be slow")
            self.logger.event("start", None, iter=self.iteration, world_size=ctx.world_size,
                              device=str(self.device), params=self.model.num_trainable_params(),
                              samples=len(self.dataset), images=self.dataset.num_images)

        D.on_main(self.ctx, prepare, f"preparing {self.run_dir}")

    def _load_teacher(self) -> tuple[nn.Module | None, dict[str, Any] | None]:
        """The distillation teacher (its inference form, frozen, on this rank's device) and its identity.

        Every rank loads its own copy. The file's SHA-256 is written into ``distill.sha256`` of the run's config,
        so that config.yaml and every checkpoint name the exact teacher; a given ``distill.sha256`` must match.
        """
        k, scale = self.cfg.distill, self.cfg.model.scale
        if k.teacher is None:
            return None, None
        from lightsr.checkpoints import load_model
        from lightsr.hub import file_sha256
        from lightsr.sources import weights_file

        try:
            path, key = weights_file(k.teacher, scale)
            if not path.exists():
                raise ConfigError(f"distill.teacher: {k.teacher}: no such file, nor a bundled or published name "
                                  "('lightsr models' lists them)")
            digest = file_sha256(path) if path.is_file() else None
            teacher = load_model(path, param_key=k.param_key if k.param_key is not None else key,
                                 device=self.device)
        except ConfigError:
            raise
        except LightSRError as e:
            raise ConfigError(f"distill.teacher: {_last_line(e)}") from None
        except OSError as e:
            raise ConfigError(f"distill.teacher: {e.filename or k.teacher}: cannot read ({e.strerror or e})") from None
        if teacher.scale != scale:
            raise ConfigError(f"distill.teacher: {k.teacher} is a ×{teacher.scale} {teacher.arch} network; the "
                              f"student (model.scale) is ×{scale}")
        if digest is None:  # pragma: no cover - load_model reads files only
            raise ConfigError(f"distill.teacher: {k.teacher} is not a file")
        if k.sha256 is not None and k.sha256 != digest:
            raise ConfigError(f"distill.sha256: {path} has SHA-256 {digest[:16]}…, not {k.sha256[:16]}… (the "
                              "teacher file changed; set distill.sha256 to null to accept it)")
        self.cfg = dataclasses.replace(self.cfg, distill=dataclasses.replace(k, sha256=digest))
        if k.precision == "bf16" and "bf16" not in teacher.precisions:
            raise ConfigError(f"distill.precision: {teacher.arch} does not run in bf16")
        form = teacher.fuse()
        for t in list(form.parameters()) + list(form.buffers()):
            t.requires_grad_(False)
        ident = {"teacher": k.teacher, "file": str(path), "sha256": digest, "arch": teacher.arch,
                 "scale": teacher.scale, "params": teacher.num_trainable_params(), "precision": k.precision}
        return form.eval(), ident

    @torch.no_grad()
    def teach(self, lr: torch.Tensor) -> torch.Tensor:
        """The teacher's float32 output for the student's LR batch (no autograd: it is a fixed target)."""
        assert self.teacher is not None
        ctx = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.cfg.distill.precision == "bf16"
               else contextlib.nullcontext())
        with ctx:
            return self.teacher(lr).float()

    def _build_model(self) -> nn.Module:
        from lightsr.models.registry import create_model

        m = self.cfg.model
        if not m.overrides:
            return create_model(m.arch, scale=m.scale)
        try:
            return create_model(m.arch, scale=m.scale, **m.overrides)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model.overrides: {m.arch} does not accept {m.overrides} ({e})") from None

    def _build_data(self) -> tuple[Any, Any, torch.utils.data.DataLoader]:
        from lightsr.data import IterationBatchSampler, SRPatchDataset

        d, ctx = self.cfg.data, self.ctx
        dataset = SRPatchDataset(
            [resolve_path(p) for p in d.hr_dirs], self.cfg.model.scale, d.patch_size,
            lr_dirs=[resolve_path(p) for p in d.lr_dirs], repeat=d.repeat, hflip=d.hflip, rot=d.rot,
            seed=self.cfg.seed, cache_max_bytes=d.cache_max_bytes, verbose=ctx.is_main, degradation=d.degradation)
        sampler = IterationBatchSampler(len(dataset), self.cfg.train.batch_size, self.cfg.seed,
                                        self.cfg.train.max_iters, start_iter=self.iteration,
                                        rank=ctx.rank, world_size=ctx.world_size)
        # The generator only seeds worker processes (our samples never use it) and keeps DataLoader from
        # drawing from the global torch RNG, whose state the checkpoint restores.
        gen = torch.Generator().manual_seed(self.cfg.seed)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=d.num_workers, generator=gen,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=d.prefetch_factor if d.num_workers > 0 else None)
        return dataset, sampler, loader

    def _config_yaml(self, not_newer_than: Path) -> dict[str, Any] | None:
        """The run's ``config.yaml`` — what checkpoints written before lightsr stored their config compare with —
        if it was written before ``not_newer_than``: a later start may have rewritten it with another config."""
        import yaml

        try:
            if (self.run_dir / "config.yaml").stat().st_mtime > not_newer_than.stat().st_mtime:
                return None
            previous = yaml.safe_load((self.run_dir / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return None
        return previous if isinstance(previous, dict) else None

    def _write_config(self) -> None:
        path = self.run_dir / "config.yaml"
        previous = getattr(self, "_previous_config", None)
        if previous is None and self.resume_from is not None:
            self.logger.event("warning", f"{self.resume_from.name} does not record the config it was trained with: "
                              "the run continues with the config given, its learning-rate schedule recomputed "
                              f"to iteration {self.iteration}")
        if previous is not None and self.resume_from is not None:
            try:  # keys added to the schema since the checkpoint was written compare as their defaults
                previous = config_to_dict(config_from_dict(previous))
            except ConfigError:
                pass
            changed = [k for k in diff_configs(previous, config_to_dict(self.cfg))
                       if not any(k == h or k.startswith(h + ".") for h in _HARMLESS_ON_RESUME)]
            if changed:
                self.logger.event("warning", f"the config differs from the checkpoint's in {', '.join(changed)}: "
                                  f"the new values apply from iteration {self.iteration}, so the run will not "
                                  "match an uninterrupted one")
            if self._schedule_changed:
                self.logger.event("warning", f"the learning-rate schedule changed ({', '.join(self._schedule_changed)}"
                                  f"): it continues as the new schedule stands at iteration {self.iteration} "
                                  f"(lr {self.current_lr():.3g})")
        with atomic_write(path) as tmp:
            tmp.write_text(f"# effective config (paths relative to {Path.cwd()})\n" + dump_config(self.cfg))

    # ------------------------------------------------------------------------------------------ state

    def _state(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng_state(),
            # The data order is a function of (seed, iteration, global batch, dataset size): recorded to check.
            "data": {"seed": self.cfg.seed, "global_batch": self.cfg.train.batch_size,
                     "num_samples": len(self.dataset), "next_iteration": self.iteration},
            "best": self.best,
            "elapsed": self.elapsed_before + (time.perf_counter() - self._t0),
            "world_size": self.ctx.world_size,
            # What the next resume compares its config with (config.yaml is rewritten by every start).
            "config": config_to_dict(self.cfg),
            "teacher": self.teacher_id,
        }

    def _restore(self, ckpt: Path) -> None:
        state = load_state(ckpt / STATE_FILE)
        load_weights(self.model, ckpt / MODEL_FILE)
        if self.ema is not None:
            if not (ckpt / EMA_FILE).is_file():
                raise RunError(f"{ckpt}: has no {EMA_FILE} but train.ema_decay is set; the checkpoint was written "
                               "without EMA")
            load_weights(self.ema.module, ckpt / EMA_FILE)
            if state.get("ema"):
                self.ema.load_state_dict(state["ema"])
        # The config given now is what the run continues with: the checkpoint brings the optimizer's moments
        # and, when the schedule is unchanged, its exact position; changed hyper-parameters and schedules apply.
        self._previous_config = state.get("config") or self._config_yaml(not_newer_than=ckpt / STATE_FILE)
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        now = _schedule_keys(config_to_dict(self.cfg))
        before = _schedule_keys(self._previous_config) if self._previous_config else None
        self._schedule_changed = (sorted(k for k in now.keys() | before.keys() if now.get(k) != before.get(k))
                                  if before is not None else [])
        # Rebuilding is exact for an unchanged schedule too (the same steps from the same start), so a checkpoint
        # whose config is unknown is stepped to its iteration rather than trusted.
        rebuild = before is None or bool(self._schedule_changed)
        for group, new in zip(self.optimizer.param_groups, fresh, strict=True):
            group.update({k: v for k, v in new.items() if rebuild or k not in ("lr", "initial_lr")})
        if rebuild:
            # Where the new schedule stands at this iteration: stepped like an uninterrupted run of it.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(int(state["iteration"])):
                    self.scheduler.step()
        else:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        set_rng_state(state["rng"])
        self.iteration = int(state["iteration"])
        self.elapsed_before = float(state.get("elapsed", 0.0))
        self.best = state.get("best")
        self._saved_data = state.get("data")

    def save_checkpoint(self) -> Path:
        """Rank 0 writes ``iter_<n>/`` atomically and prunes old ones; every rank waits for it."""
        path = self.ckpt_dir / checkpoint_name(self.iteration)

        def write() -> None:
            files: dict[str, Any] = {MODEL_FILE: self.model}
            if self.ema is not None:
                files[EMA_FILE] = self.ema.module
            files[STATE_FILE] = self._state()
            try:
                write_atomic_dir(path, files)
            except WriteError as e:
                last = (f"the last complete checkpoint is {self.last_checkpoint} (continue with --resume)"
                        if self.last_checkpoint else "no checkpoint had been written yet")
                raise WriteError(f"{e}; training stopped at iteration {self.iteration} — {last}") from None
            prune_checkpoints(self.ckpt_dir, self.cfg.checkpoint.keep_last)
            self.logger.record({"event": "checkpoint", "iter": self.iteration, "path": str(path)})

        D.on_main(self.ctx, write, f"writing {path} at iteration {self.iteration}")
        self.last_checkpoint = path
        return path

    # ------------------------------------------------------------------------------------------ steps

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, lr_u8: torch.Tensor, hr_u8: torch.Tensor) -> float:
        """One optimizer step on uint8 batches; returns the loss averaged over all ranks."""
        nb = self.device.type == "cuda"
        lr = lr_u8.to(self.device, non_blocking=nb).float().div_(255.0)
        hr = hr_u8.to(self.device, non_blocking=nb).float().div_(255.0)
        if self.cfg.train.channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            sr = self.forward(lr)
        loss = F.l1_loss(sr.float(), hr)
        kd = None
        if self.teacher is not None:  # same LR batch, same rank: DDP averages the combined loss's gradients
            kd = F.l1_loss(sr.float(), self.teach(lr))
            loss = loss + self.cfg.distill.weight * kd
        if self.cfg.debug.nan_at_iter == self.iteration + 1:
            loss = loss * float("nan")
        # Checked before backward, on the all-reduced value, so every rank stops at the same step and the
        # weights never take a non-finite update.
        reduced = D.all_reduce_mean(torch.stack([loss.detach(), kd.detach() if kd is not None else loss.detach()]),
                                    self.ctx).tolist()
        value = reduced[0]
        self.teacher_loss = reduced[1] if kd is not None else None
        if not math.isfinite(value):
            self._nonfinite(value)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        self.grad_norm = None
        if self.cfg.train.grad_clip > 0:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            self.grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        with warnings.catch_warnings():
            # SequentialLR restarts its next scheduler with step(0), which torch flags as deprecated.
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.iteration += 1
        return value

    def _nonfinite(self, value: float) -> None:
        where = (f"the last good checkpoint is {self.last_checkpoint} (continue with --resume, e.g. with a lower "
                 "train.optimizer.lr or train.grad_clip)" if self.last_checkpoint
                 else "no checkpoint had been written yet")
        msg = (f"loss is {value} at iteration {self.iteration + 1} (lr {self.current_lr():.3g}); training stopped "
               f"without saving — {where}")
        self.logger.record({"event": "nonfinite_loss", "iter": self.iteration + 1, "loss": str(value)})
        raise NonFiniteLossError(msg)

    def current_lr(self) -> float:
        """The learning rate of the next step."""
        return float(self.optimizer.param_groups[0]["lr"])

    def validate(self) -> dict[str, Any]:
        """Rank 0: PSNR/SSIM of the EMA (or live) weights on the configured sets; updates ``best/``."""
        from lightsr.evaluate import evaluate

        v = self.cfg.val
        use_ema = self.ema is not None and v.use_ema
        model = self.ema.module if use_ema else self.model
        was_training = model.training
        model.eval()
        t = time.perf_counter()
        try:
            results = evaluate(model, resolve_path(v.root), list(v.sets), self.cfg.model.scale, progress=False,
                               degrade=v.degrade)
        finally:
            model.train(was_training)
        rec: dict[str, Any] = {"iter": self.iteration, "time": self.elapsed(),
                               "val_model": "ema" if use_ema else "model"}
        for r in results:
            rec[f"val/{r.set}/psnr"] = r.psnr
            rec[f"val/{r.set}/ssim"] = r.ssim
        rec["val_seconds"] = time.perf_counter() - t
        key = results[0]
        b = self.best
        # A best score from another set or of the other weights (val.* changed on resume) is not comparable.
        comparable = b is not None and b["set"] == key.set and b.get("val_model", rec["val_model"]) == rec["val_model"]
        improved = not comparable or key.psnr > b["psnr"]
        if improved:
            self.best = {"iteration": self.iteration, "set": key.set, "psnr": key.psnr, "ssim": key.ssim,
                         "val_model": rec["val_model"]}
            files: dict[str, Any] = {MODEL_FILE: self.model}
            if self.ema is not None:
                files[EMA_FILE] = self.ema.module
            files["best.json"] = json.dumps(self.best, indent=1)
            write_atomic_dir(self.run_dir / "best", files)
        rec["best"] = improved
        self.logger.record(rec)
        scores = ", ".join(f"{r.set} {r.psnr:.3f} dB / {r.ssim:.4f}" for r in results)
        self.logger.event("val", f"iter {self.iteration}: ×{self.cfg.model.scale} {scores} ({rec['val_model']})"
                          + (" — best" if improved else f" — best {self.best['psnr']:.3f} at {self.best['iteration']}"),
                          iter=self.iteration)
        return rec

    def elapsed_here(self) -> float:
        """Seconds since this process built the trainer (what ``max_seconds`` bounds)."""
        return time.perf_counter() - self._t0

    def _time_is_up(self) -> bool:
        # Rank 0's clock decides, so that every rank stops after the same iteration.
        return bool(D.broadcast_int(int(self.elapsed_here() >= (self.max_seconds or 0)), self.ctx))

    def elapsed(self) -> float:
        """Training seconds of the run, summed over resumed sessions."""
        return self.elapsed_before + (time.perf_counter() - self._t0)

    # ------------------------------------------------------------------------------------------ loop

    def run(self) -> TrainResult:
        """Train to ``train.max_iters`` (or ``max_seconds``), validating and checkpointing as configured."""
        cfg, ctx = self.cfg, self.ctx
        max_iters = cfg.train.max_iters
        loss_sum, kd_sum, loss_n, wait, t_int = 0.0, 0.0, 0, 0.0, time.perf_counter()
        if self.iteration >= max_iters:
            self.logger.event("warning", f"the run is already at iteration {self.iteration} and train.max_iters is "
                              f"{max_iters}: nothing to train (raise train.max_iters to continue it)")
        batches = None
        try:
            batches = iter(self.loader)
            while self.iteration < max_iters:
                t = time.perf_counter()
                try:
                    lr_u8, hr_u8 = next(batches)
                except StopIteration:  # pragma: no cover - the sampler yields exactly max_iters - start
                    break
                except LightSRError as e:
                    raise type(e)(_last_line(e)) from None
                wait += time.perf_counter() - t
                loss = self.train_step(lr_u8, hr_u8)
                loss_sum += loss
                kd_sum += self.teacher_loss or 0.0
                loss_n += 1
                it = self.iteration
                self.logger.progress(it, loss=f"{loss:.4f}", lr=f"{self.current_lr():.2e}")
                if it % cfg.log.every == 0 or it == max_iters:
                    dt = time.perf_counter() - t_int
                    rec = {"iter": it, "epoch": self.sampler.epoch_of(it - 1), "time": self.elapsed(),
                           "loss": loss_sum / loss_n, "lr": self.current_lr(),
                           "patches_per_s": cfg.train.batch_size * loss_n / dt, "it_per_s": loss_n / dt,
                           "data_wait": wait / dt}
                    if self.teacher is not None:  # the teacher term alone, before its weight
                        rec["loss_teacher"] = kd_sum / loss_n
                    if self.grad_norm is not None:
                        rec["grad_norm"] = self.grad_norm
                    self.logger.record(rec)
                    loss_sum, kd_sum, loss_n, wait, t_int = 0.0, 0.0, 0, 0.0, time.perf_counter()
                t_side = time.perf_counter()
                # Validation first: the checkpoint of the same iteration then records the best score it set.
                if cfg.val.every and (it % cfg.val.every == 0 or it == max_iters):
                    D.on_main(ctx, self.validate, f"validating at iteration {it}")
                if it % cfg.checkpoint.every == 0 or it == max_iters:
                    self.save_checkpoint()
                t_int += time.perf_counter() - t_side  # patches/s and data_wait measure training only
                if self.max_seconds is not None and it < max_iters and self._time_is_up():
                    if self.last_checkpoint is None or self.last_checkpoint.name != checkpoint_name(it):
                        self.save_checkpoint()
                    self.logger.event("time_limit", f"stopped after {self.elapsed_here():.0f} s (max "
                                      f"{self.max_seconds:g} s) at iteration {it}; continue with --resume", iter=it)
                    return TrainResult(self.run_dir, self.iteration, self.last_checkpoint, self.best, True)
                if cfg.debug.sleep_per_iter:
                    time.sleep(cfg.debug.sleep_per_iter)
            if cfg.debug.dump_rank_weights:
                self._dump_rank_weights()
            self.logger.event("end", None, iter=self.iteration, time=self.elapsed())
            return TrainResult(self.run_dir, self.iteration, self.last_checkpoint, self.best)
        except OSError as e:  # e.g. the log on a full disk; one line, and where the run can be continued from
            if isinstance(e, LightSRError):
                raise
            last = (f"the last complete checkpoint is {self.last_checkpoint}" if self.last_checkpoint
                    else "no checkpoint had been written yet")
            raise WriteError(f"{e.filename or self.run_dir}: {e.strerror or e}; training stopped at iteration "
                             f"{self.iteration} — {last}") from None
        finally:
            # DataLoader workers are joined now, also when stopped by Ctrl-C or SIGTERM (which reached them too),
            # not whenever the traceback holding the iterator is collected.
            del batches
            self.close()

    def _dump_rank_weights(self) -> None:
        from lightsr.checkpoints import save_model

        out = self.run_dir / "debug"
        save_model(self.model, out / f"rank{self.ctx.rank}_model.safetensors")
        if self.ema is not None:
            save_model(self.ema.module, out / f"rank{self.ctx.rank}_ema.safetensors")
        D.barrier(self.ctx)

    def close(self) -> None:
        """Release the log, the run folder's lock, the process group and the torch settings changed for the run."""
        self.logger.close()
        lock = self.__dict__.pop("_lock", None)
        if lock is not None:
            _HELD_LOCKS.discard(lock)
            lock.close()  # releases the flock
        D.cleanup(self.ctx)
        saved = self.__dict__.pop("_saved_globals", None)
        if saved is not None:
            threads, det, warn_only, bench = saved
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(det, warn_only=warn_only)
            torch.backends.cudnn.benchmark = bench


def train(cfg: Config, resume: bool = False, max_seconds: float | None = None) -> TrainResult:
    """Train as configured (``resume``: continue the run's latest complete checkpoint; ``max_seconds``: stop with
    a checkpoint once this process has run that long); returns the result."""
    trainer = Trainer(cfg, resume=resume, max_seconds=max_seconds)
    return trainer.run()

