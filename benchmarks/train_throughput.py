"""Training throughput (patches/s) of each network's ``*_cpu`` config, and whether the data loader keeps up.

For every config the real :class:`lightsr.train.Trainer` is built (same model, optimizer, EMA, data pipeline) and
stepped ``--iters`` times after ``--warmup`` untimed iterations. Each iteration is split into the time spent
blocked on the DataLoader (``next(loader)``) and the time of the optimizer step; the loader starves the model
when the blocked share is more than a few percent. Separately, the loader alone is drained for the same number
of batches to show how many patches/s it can supply with the configured workers.

    python benchmarks/train_throughput.py                       # the three *_cpu configs
    python benchmarks/train_throughput.py --iters 50 --set data.num_workers=0 --set train.threads=2
    python benchmarks/train_throughput.py --configs configs/hasn_x4_cpu.yaml --json out.json

Run from the repository root (the configs' data paths are relative to it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = ["configs/hasn_x4_cpu.yaml", "configs/elan_light_x4_cpu.yaml", "configs/lksmn_x4_cpu.yaml"]


def measure(config: str, iters: int, warmup: int, overrides: list[str]) -> dict:
    from lightsr.train.config import load_config
    from lightsr.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config, [
            *overrides, f"output_dir={tmp}", "val.every=0", f"checkpoint.every={10**9}", "log.progress=false",
            "log.tensorboard=false", f"train.max_iters={warmup + iters}", "auto_resume=false", "init_from=",
            "train.scheduler.milestones=[]",
        ])
        trainer = Trainer(cfg)
        try:
            batches = iter(trainer.loader)
            waits, steps = [], []
            for i in range(warmup + iters):
                t0 = time.perf_counter()
                lr, hr = next(batches)
                t1 = time.perf_counter()
                trainer.train_step(lr, hr)
                t2 = time.perf_counter()
                if i >= warmup:
                    waits.append(t1 - t0)
                    steps.append(t2 - t1)
            del batches
            # The loader on its own, same workers, restarted at the first timed iteration.
            trainer.sampler.start_iter = warmup
            only = iter(trainer.loader)
            next(only)  # worker start-up is not throughput
            t0 = time.perf_counter()
            n_loaded = 0
            for _ in range(iters - 1):
                next(only)
                n_loaded += 1
            load_time = time.perf_counter() - t0
            del only
        finally:
            trainer.close()
    total = sum(waits) + sum(steps)
    b = cfg.train.batch_size
    return {
        "config": config,
        "arch": cfg.model.arch,
        "scale": cfg.model.scale,
        "hr_patch": cfg.data.patch_size,
        "batch": b,
        "workers": cfg.data.num_workers,
        "threads": torch.get_num_threads(),
        "iters": iters,
        "patches_per_s": b * iters / total,
        # Robust to the odd stall when other jobs share the cores: the median iteration's rate.
        "patches_per_s_median": b / (statistics.median(steps) + statistics.median(waits)),
        "step_s_median": statistics.median(steps),
        "wait_s_total": sum(waits),
        "wait_fraction": sum(waits) / total,
        "loader_only_patches_per_s": b * n_loaded / load_time if load_time > 0 else float("inf"),
        "starved": sum(waits) / total > 0.05,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    p.add_argument("--iters", type=int, default=30, help="timed iterations per config")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)

    rows = []
    for c in args.configs:
        print(f"measuring {c} ...", file=sys.stderr, flush=True)
        rows.append(measure(c, args.iters, args.warmup, args.overrides))
    print("| config | HR patch | batch | workers | threads | patches/s (mean / median it) | step (median) | "
          "waiting on loader | loader alone | loader starves? |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['hr_patch']} | {r['batch']} | {r['workers']} | {r['threads']} | "
              f"{r['patches_per_s']:.1f} / {r['patches_per_s_median']:.1f} | {r['step_s_median'] * 1e3:.0f} ms | "
              f"{100 * r['wait_fraction']:.1f}% | "
              f"{r['loader_only_patches_per_s']:.0f} patches/s | {'yes' if r['starved'] else 'no'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
