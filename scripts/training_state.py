"""Carry a long training run across machines through git: ``save`` copies the small state of ``runs/NAME`` into
``training/NAME`` (tracked), ``restore`` puts it back so that ``lightsr train --config ... --resume`` continues.

The state is the run's config, its log (the learning curve) and its newest complete checkpoint (weights, EMA,
optimizer, RNG: a few MB for these networks). Older checkpoints and ``best/`` stay behind, except the checkpoint
a bundled file was made from: the top-level files already in ``training/NAME`` (``scores.json``, written by
``scripts/bundle_weights.py``) are kept, and with them the checkpoint that ``scores.json`` names.

    python scripts/training_state.py save lksmn_x4_bundled
    python scripts/training_state.py restore lksmn_x4_bundled
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from lightsr.train.state import CKPT_RE, latest_checkpoint, list_checkpoints

ROOT = Path(__file__).resolve().parents[1]


def _scored_checkpoint(scores: Path) -> str | None:
    """The checkpoint a bundled file was made from (``scores.json``'s ``checkpoint``), if the run has one."""
    if not scores.is_file():
        return None
    try:
        name = json.loads(scores.read_text(encoding="utf-8")).get("checkpoint")
    except (ValueError, AttributeError):
        sys.exit(f"{scores}: not a JSON object")
    return name if isinstance(name, str) and CKPT_RE.fullmatch(name) else None


def save(name: str, runs: Path, store: Path) -> Path:
    run, dst = runs / name, store / name
    ckpt = latest_checkpoint(run / "checkpoints")
    if ckpt is None:
        sys.exit(f"{run}/checkpoints: no complete checkpoint to save")
    bundled = _scored_checkpoint(dst / "scores.json")
    tmp = store / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "checkpoints").mkdir(parents=True)
    for f in ("config.yaml", "log.jsonl"):
        shutil.copy2(run / f, tmp / f)
    shutil.copytree(ckpt, tmp / "checkpoints" / ckpt.name)
    # What others wrote beside the state (a bundled checkpoint's scores.json, which the model cards and later
    # stages read) outlives the next save of a run that goes on, and so does the checkpoint it describes.
    for f in (dst.iterdir() if dst.is_dir() else ()):
        if f.is_file() and not (tmp / f.name).exists():
            shutil.copy2(f, tmp / f.name)
    if bundled and bundled != ckpt.name:
        found = [d / bundled for d in (run / "checkpoints", dst / "checkpoints") if (d / bundled).is_dir()]
        if not found:
            shutil.rmtree(tmp)
            sys.exit(f"{dst / 'scores.json'}: names checkpoint {bundled}, which neither {run} nor {dst} holds")
        shutil.copytree(found[0], tmp / "checkpoints" / bundled)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst / "checkpoints" / ckpt.name


def restore(name: str, runs: Path, store: Path) -> Path:
    src, run = store / name, runs / name
    saved = list_checkpoints(src / "checkpoints")
    if not saved:
        sys.exit(f"{src}/checkpoints: no saved checkpoint")
    it, ckpt = saved[-1]
    have = list_checkpoints(run / "checkpoints")
    if have and have[-1][0] >= it:
        sys.exit(f"{run} already holds {have[-1][1].name} (saved state: {ckpt.name}); nothing to restore")
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    for f in ("config.yaml", "log.jsonl"):
        shutil.copy2(src / f, run / f)
    dst = run / "checkpoints" / ckpt.name
    shutil.rmtree(dst, ignore_errors=True)  # an incomplete copy of the same iteration
    shutil.copytree(ckpt, dst)
    return dst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("save", "restore"))
    p.add_argument("names", nargs="+")
    p.add_argument("--runs", type=Path, default=ROOT / "runs")
    p.add_argument("--store", type=Path, default=ROOT / "training")
    args = p.parse_args()
    for name in args.names:
        where = (save if args.action == "save" else restore)(name, args.runs, args.store)
        print(f"{args.action}d {name}: {where}")


if __name__ == "__main__":
    main()
