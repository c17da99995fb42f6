"""Advance a long training run by one chunk of wall-clock time and store its state for git.

A run that outlives any one machine (CPU sessions, GPU leases of a few minutes) is advanced chunk by chunk:
restore the committed state (``training/NAME``) unless ``runs/NAME`` is already as far, train for at most
``--max-time`` (the trainer then writes a checkpoint of the iteration it reached), and save the newest state back
to ``training/NAME`` — and, with ``--out DIR``, a copy under ``DIR/training/NAME`` for a machine whose files come
back from a folder (a lent GPU's ``$OUT``). Commit ``training/NAME`` afterwards.

    python scripts/train_chunk.py --config configs/campaign/lksmn_x4_gpu.yaml --max-time 8m --out "$OUT"
    python scripts/train_chunk.py --config configs/campaign/lksmn_x4.yaml --max-time 2h     # a CPU session

The state of ``runs/NAME`` is the trainer's (exact resume), so chunks of any length add up to one uninterrupted
run of the same config (``tests/test_trainer.py``, ``--max-time``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from training_state import restore, save

from lightsr.commands.train import parse_duration
from lightsr.train import load_config
from lightsr.train.state import list_checkpoints
from lightsr.train.trainer import resolve_path, train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--max-time", required=True, type=parse_duration, help="wall-clock budget of this chunk, e.g. 8m")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--store", type=Path, default=ROOT / "training", help="where committed run states live")
    p.add_argument("--out", type=Path, help="also copy the saved state under OUT/training/NAME")
    args = p.parse_args()

    cfg = load_config(args.config, args.overrides)
    runs = resolve_path(cfg.output_dir)
    stored = list_checkpoints(args.store / cfg.name / "checkpoints")
    have = list_checkpoints(runs / cfg.name / "checkpoints")
    if stored and (not have or have[-1][0] < stored[-1][0]):
        print(f"restored {restore(cfg.name, runs, args.store)}", file=sys.stderr)
        have = list_checkpoints(runs / cfg.name / "checkpoints")
    result = train(cfg, resume=bool(have), max_seconds=args.max_time)
    where = save(cfg.name, runs, args.store)
    print(f"iteration {result.iteration}/{cfg.train.max_iters}"
          f"{' (time limit: run again to continue)' if result.time_limited else ' (finished)'}; saved {where}",
          file=sys.stderr)
    if args.out:
        dst = args.out / "training" / cfg.name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(args.store / cfg.name, dst)
        print(f"copied the state to {dst}", file=sys.stderr)


if __name__ == "__main__":
    main()
