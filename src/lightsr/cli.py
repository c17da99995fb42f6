"""The ``lightsr`` command: a thin layer over the Python API (each subcommand calls one public function)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence


def _cmd_models(args: argparse.Namespace) -> int:
    import json

    from lightsr.bundled import DEFAULT_MODEL, bundled_metadata, bundled_weights
    from lightsr.models.registry import create_model, list_models, model_spec

    rows = []
    for name in list_models():
        spec = model_spec(name)
        counts = [f"{create_model(name, scale=s).num_trainable_params():,}" for s in spec.scales]
        bundled = ", ".join(f"×{s}" for s in sorted(bundled_weights(name))) or "—"
        rows.append((name + (" (default)" if name == DEFAULT_MODEL else ""), " / ".join(counts), bundled, spec.paper))
    print("| model | trainable params ×2 / ×3 / ×4 | bundled weights | paper |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    files = [(name, scale, path) for name in list_models() for scale, path in sorted(bundled_weights(name).items())]
    if files:
        print("\nBundled weights (trained by lightsr; Y-PSNR/SSIM, bicubic in brackets):\n")
        print("| file | iterations | hours | trained on | Set5 | Set14 | B100 |")
        print("|---|---|---|---|---|---|---|")
        for _name, _scale, path in files:
            meta = bundled_metadata(path)
            scores = json.loads(meta.get("psnr_ssim", "{}"))
            bicubic = json.loads(meta.get("bicubic_psnr_ssim", "{}"))
            cells = [f"{scores[k][0]:.2f} / {scores[k][1]:.4f} ({bicubic[k][0]:.2f})" if k in scores and k in bicubic
                     else "—" for k in ("Set5", "Set14", "B100")]
            print(f"| {path.name} | {meta.get('iterations', '?')} | {meta.get('train_hours', '?')} | "
                  f"{meta.get('hardware', '?')} | " + " | ".join(cells) + " |")
    return 0


# Subcommands living in their own modules: each has ``add_arguments(parser)`` and ``run_cli(args) -> int``.
_SUBCOMMANDS = (
    ("upscale", "lightsr.upscaler", "upscale images with a bundled or given model"),
    ("eval", "lightsr.evaluate", "PSNR/SSIM on benchmark sets under the papers' protocol"),
    ("profile", "lightsr.profile", "parameters, multiply-adds and CPU latency of a network"),
    ("train", "lightsr.train.cli", "train a network from a YAML config (also under torchrun for DDP)"),
    ("export", "lightsr.export", "export a network to ONNX (dynamic batch/height/width), checked by onnxruntime"),
    ("compare", "lightsr.figures", "side-by-side zoomed crops of HR, bicubic and models, with PSNR (needs matplotlib)"),
)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in ``argv`` imports its module (fast start, isolated failures)."""
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
    subparsers = [m]

    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, module, help_text in _SUBCOMMANDS:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        subparsers.append(sp)
        if name == wanted:
            mod = importlib.import_module(module)
            mod.add_arguments(sp)
            sp.set_defaults(func=mod.run_cli)
    for sp in subparsers:  # -v is accepted after the subcommand too (SUPPRESS keeps a -v given before it)
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log details (checkpoint layout, timings)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # a real command-line run (not a call from Python): pick the fast allocator
        from lightsr.allocator import use_fast_allocator

        use_fast_allocator(sys.argv[1:])
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="lightsr: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from lightsr.errors import LightSRError

    try:
        return args.func(args)
    except LightSRError as e:
        print(f"lightsr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lightsr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
