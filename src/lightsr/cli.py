"""The ``lightsr`` command: a thin layer over the Python API (each subcommand calls one public function)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _cmd_models(args: argparse.Namespace) -> int:
    from lightsr.bundled import bundled_weights
    from lightsr.models.registry import create_model, list_models, model_spec

    rows = []
    for name in list_models():
        spec = model_spec(name)
        counts = [f"{create_model(name, scale=s).num_trainable_params():,}" for s in spec.scales]
        bundled = ", ".join(f"×{s}" for s in sorted(bundled_weights(name))) or "—"
        rows.append((name, " / ".join(counts), bundled, spec.paper))
    print("| model | trainable params ×2 / ×3 / ×4 | bundled weights | paper |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


def _cmd_upscale(args: argparse.Namespace) -> int:
    from lightsr.upscale import run_cli

    return run_cli(args)


def build_parser() -> argparse.ArgumentParser:
    from lightsr import __version__

    p = argparse.ArgumentParser(
        prog="lightsr",
        description="Lightweight single-image super-resolution: ELAN, HASN, LKSMN.",
    )
    p.add_argument("--version", action="version", version=f"lightsr {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log details (checkpoint layout, timings)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    m = sub.add_parser("models", help="list the networks, their sizes and bundled weights")
    m.set_defaults(func=_cmd_models)

    u = sub.add_parser("upscale", help="upscale images with a bundled or given model")
    u.add_argument("inputs", nargs="+", metavar="INPUT", help="image files")
    u.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    u.add_argument("--model", help="network name (picks the bundled weights for --scale)")
    u.add_argument("--weights", help="checkpoint file (.safetensors or .pth, any supported layout)")
    u.add_argument("--scale", type=int, help="upscaling factor (default: the checkpoint's, or 4)")
    u.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    u.set_defaults(func=_cmd_upscale)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="lightsr: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from lightsr.checkpoints import CheckpointError

    try:
        return args.func(args)
    except (CLIError, CheckpointError) as e:
        print(f"lightsr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lightsr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
