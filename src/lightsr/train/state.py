"""Training checkpoints on disk: atomic writes, discovery of the latest complete one, RNG state, warm start.

A checkpoint is a directory ``<run_dir>/checkpoints/iter_<8 digits>/`` holding

* ``model.safetensors`` (and ``ema.safetensors`` when EMA is on): :func:`lightsr.checkpoints.save_model` files,
  readable as they are by ``lightsr eval --weights`` and :func:`lightsr.load_model`;
* ``state.pt``: optimizer, scheduler, grad scaler, EMA counters, RNG states, iteration, best score —
  only tensors and plain containers, so it loads with ``torch.load(weights_only=True)``.

It is written into a hidden ``.iter_*.tmp`` directory, each file fsync'ed, and then renamed into place: the
rename is the commit, so a run killed at any moment leaves either a complete checkpoint or a temporary
directory that resuming ignores and removes.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightsr.checkpoints import CheckpointError, detect, read_checkpoint, save_model
from lightsr.errors import LightSRError, WriteError, first_line
from lightsr.models.base import SRNet
from lightsr.models.registry import model_spec

CKPT_RE = re.compile(r"iter_(\d{8})")
MODEL_FILE, EMA_FILE, STATE_FILE = "model.safetensors", "ema.safetensors", "state.pt"


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:08d}"


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints ``(iteration, dir)`` in increasing order; temporary directories are ignored."""
    if not ckpt_dir.is_dir():
        return []
    out = []
    for p in ckpt_dir.iterdir():
        m = CKPT_RE.fullmatch(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file() and (p / MODEL_FILE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def remove_stale_temporaries(ckpt_dir: Path) -> list[Path]:
    """Delete ``.*.tmp`` directories left by a run killed while writing; returns what was removed."""
    removed = []
    if ckpt_dir.is_dir():
        for p in ckpt_dir.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic_dir(final: Path, files: Mapping[str, Any]) -> Path:
    """Create directory ``final`` with ``files`` (name → SRNet for safetensors, ``str`` for a text file, or a
    picklable-safe dict for ``torch.save``), atomically replacing an existing one.

    An existing ``final`` is first renamed to ``.<name>.old.tmp``; :func:`recover_atomic_dir` puts it back if the
    process died between the two renames. A failed write (a full disk: ``OSError``, safetensors'
    ``SafetensorError``, torch's ``PytorchStreamWriter`` error) or an interruption (Ctrl-C, SIGTERM) removes the
    temporary directory and leaves ``final`` as it was; a failure is a one-line :class:`WriteError`."""
    tmp = final.with_name(f".{final.name}.tmp")
    extra = {"checkpoint": final.name}
    current = None
    old = None
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for current, obj in files.items():
            dst = tmp / current
            if isinstance(obj, SRNet):
                save_model(obj, dst, extra=extra)
            elif isinstance(obj, str):
                dst.write_text(obj)
            else:
                torch.save(obj, dst)
            _fsync(dst)
        current = None
        _fsync(tmp)
        if final.exists():  # e.g. 'best': move the old one aside first, so some complete copy always exists
            old = final.with_name(f".{final.name}.old.tmp")
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
        tmp.rename(final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not final.exists():
            with contextlib.suppress(OSError):
                old.rename(final)
        if isinstance(e, Exception):
            raise _write_error(final, current, tmp, e) from None
        raise
    _fsync(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write_error(final: Path, name: str | None, tmp: Path, e: Exception) -> WriteError:
    """One line naming the file (as it would have been called in ``final``) and the reason."""
    where = final / name if name else final
    if isinstance(e, LightSRError):  # save_model's own one-line error, naming the temporary directory
        text = str(e).replace(str(tmp), str(final))
    elif isinstance(e, OSError):
        text = f"{where}: cannot write ({e.strerror or e})"
    else:
        text = f"{where}: cannot write ({type(e).__name__}: {first_line(e, 200) if str(e).strip() else '?'})"
    return WriteError(f"{text}; {final.name} not written")


def recover_atomic_dir(final: Path) -> bool:
    """Finish or roll back an interrupted :func:`write_atomic_dir` of ``final``; True if the old copy came back.

    Killed between moving the old directory aside and renaming the new one in, a writer leaves no ``final``
    but a complete ``.<name>.old.tmp``: that is restored. Leftover temporaries are removed.
    """
    tmp, old = final.with_name(f".{final.name}.tmp"), final.with_name(f".{final.name}.old.tmp")
    restored = False
    if old.is_dir() and not final.exists():
        old.rename(final)
        restored = True
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p, ignore_errors=True)
    return restored


def prune_checkpoints(ckpt_dir: Path, keep_last: int) -> list[Path]:
    """Remove all but the ``keep_last`` newest complete checkpoints."""
    found = list_checkpoints(ckpt_dir)
    doomed = [p for _, p in found[:-keep_last]] if keep_last > 0 else []
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed


def load_state(path: Path) -> dict[str, Any]:
    """``state.pt`` with ``weights_only=True``; errors name the file."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such training state file") from None
    except Exception as e:  # any unpickling failure means a broken checkpoint to the user
        raise CheckpointError(f"{path}: unreadable training state ({first_line(e, 160)})") from None
    if not isinstance(state, dict) or "iteration" not in state:
        raise CheckpointError(f"{path}: not a lightsr training state")
    return state


def load_weights(model: nn.Module, path: Path) -> None:
    """Strictly load a checkpoint's safetensors weights into ``model`` (same architecture and config)."""
    sd, _ = read_checkpoint(path)
    own = model.state_dict()
    bad = sorted(set(own) ^ set(sd)) + [k for k in own if k in sd and own[k].shape != sd[k].shape]
    if bad:
        raise CheckpointError(f"{path}: does not fit the configured network (first differing keys: "
                              f"{', '.join(bad[:3])}); was model.* changed since the checkpoint was written?")
    model.load_state_dict(sd, strict=True)


def warm_start(model: SRNet, path: str | Path) -> tuple[list[str], list[str]]:
    """Load weights from any layout :func:`lightsr.load_model` reads, skipping scale-dependent output layers
    whose shapes differ (a ×4 body warm-starting ×2/×3). Returns ``(loaded keys, skipped keys)``.

    Everything else must match exactly: another architecture or width is an error naming the keys.
    """
    source = str(path)
    sd, _meta = read_checkpoint(path)
    arch, _, _, sd = detect(sd, source)  # the tensors say what they are, whatever a file's metadata claims
    spec = model_spec(model.arch)
    if model_spec(arch).family != spec.family:
        raise CheckpointError(f"{source}: holds {arch} weights; the configured network is {model.arch}")
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [k for k in own if k in sd and sd[k].shape != own[k].shape]
    # Output layers whose shape depends on the scale are the only keys a warm start may skip.
    skipped = [k for k in mismatched if k.startswith(spec.output_prefixes)]
    fatal = [k for k in mismatched if k not in skipped]
    if missing or unexpected or fatal:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}")
        if fatal:
            parts.append("shape differs: " + "; ".join(f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
                                                       for k in fatal[:3]))
        raise CheckpointError(f"{source}: does not fit {model.arch} ×{model.scale} with this config "
                              f"({'; '.join(parts)})")
    loaded = [k for k in own if k not in skipped]
    model.load_state_dict({k: sd[k] for k in loaded}, strict=False)
    return loaded, skipped


# ------------------------------------------------------------------------------------------------ RNG state


def rng_state() -> dict[str, Any]:
    """torch / CUDA / numpy / python RNG states as tensors and plain containers (``weights_only``-safe)."""
    np_state = np.random.get_state()  # noqa: NPY002 - the legacy global RNG is what third-party code uses
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "internal": list(py_internal), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    legacy = (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(legacy)  # noqa: NPY002
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
