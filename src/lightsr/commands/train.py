"""``lightsr train``: train a network from a YAML config, in one process or under ``torchrun``
(:func:`lightsr.train.train`).

The library is imported in :func:`run`, not above: ``lightsr train --help`` loads no torch.
"""

from __future__ import annotations

import argparse
import os
import sys

from lightsr.commands import _args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="CONFIG.yaml",
                   help="a YAML training config (the shipped ones are in configs/; every key: docs/configs.md)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, YAML-parsed (repeatable), e.g. --set train.batch_size=16")
    p.add_argument("--resume", action="store_true",
                   help="continue the run from its latest complete checkpoint (an error if there is none), with the "
                        "config given: changed settings, e.g. a longer train.max_iters, apply from there")
    p.add_argument("--init-from", metavar="CKPT",
                   help="a checkpoint file to warm-start from: weights only (any layout lightsr reads; a "
                        "different scale's upsampler is skipped) with a fresh optimizer and schedule")
    p.add_argument("--max-time", type=parse_duration, metavar="DURATION",
                   help="stop after this much wall-clock time with a checkpoint, to continue later with --resume "
                        "(e.g. 540s, 9m, 2h, 1:30:00)")
    p.add_argument("--print-config", action="store_true", help="print the effective config and exit")
    _args.add_download_timeout(p)


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``9m``, ``2h``, ``1:30:00`` → seconds (positive)."""
    t = text.strip().lower()
    try:
        if ":" in t:
            parts = [float(x) for x in t.split(":")]
            if len(parts) > 3:
                raise ValueError
            seconds = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
        else:
            unit = {"s": 1, "m": 60, "h": 3600}.get(t[-1:], None)
            seconds = float(t[:-1] if unit else t) * (unit or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a duration such as 540s, 9m, 2h or 1:30:00") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive duration")
    return seconds


def run(args: argparse.Namespace) -> int:
    from lightsr.errors import LightSRError
    from lightsr.train.config import dump_config, load_config

    try:
        cfg = load_config(args.config, args.overrides)
        if args.init_from:
            cfg.init_from = args.init_from
        if args.quiet:
            cfg.log.progress = False
        if args.print_config:
            print(dump_config(cfg), end="")
            return 0
        from lightsr.train.trainer import train

        result = train(cfg, resume=args.resume, max_seconds=args.max_time)
    except LightSRError:
        # Under torchrun every rank hits the same error; let rank 0 alone print it.
        if int(os.environ.get("RANK", "0")) != 0:
            return 2
        raise
    if int(os.environ.get("RANK", "0")) == 0 and not args.quiet:
        best = (f"; best {result.best['set']} {result.best['psnr']:.3f} dB at iteration {result.best['iteration']}"
                if result.best else "")
        how = "stopped by --max-time" if result.time_limited else "finished"
        again = "; continue with --resume" if result.time_limited else ""
        print(f"lightsr train: {how} at iteration {result.iteration}; checkpoint {result.checkpoint}{best}{again}",
              file=sys.stderr)
    return 0
