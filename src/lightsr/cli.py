"""The ``lightsr`` command: a thin layer over the Python API (each subcommand calls one public function)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

# Subcommand → help, in the order ``lightsr --help`` lists them. Each is the module lightsr.commands.<name>, with
# ``add_arguments(parser)`` and ``run(args) -> int``.
_SUBCOMMANDS = {
    "models": "list the networks, their sizes and bundled weights",
    "upscale": "upscale images with a bundled or given model",
    "eval": "PSNR/SSIM on benchmark sets under the papers' protocol",
    "profile": "parameters, multiply-adds and CPU latency of a network",
    "train": "train a network from a YAML config (also under torchrun for DDP)",
    "export": "export a network to ONNX (dynamic batch/height/width), checked by onnxruntime",
    "compare": "side-by-side zoomed crops of HR, bicubic and models, with PSNR (needs matplotlib)",
    "serve": "a local web page to upscale and compare images (needs Gradio: lightsr[web])",
}


_QUIET_HELP = "no progress bars, status lines or warnings on stderr (results and errors are still printed)"


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in ``argv`` imports its module (fast start, isolated failures)."""
    from lightsr._version import __version__

    p = argparse.ArgumentParser(
        prog="lightsr",
        description="Lightweight single-image super-resolution: ELAN, HASN, LKSMN.",
    )
    p.add_argument("--version", action="version", version=f"lightsr {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log details (checkpoint layout, timings)")
    p.add_argument("-q", "--quiet", action="store_true", help=_QUIET_HELP)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    subparsers = []
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in _SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        subparsers.append(sp)
        if name == wanted:
            mod = importlib.import_module(f"lightsr.commands.{name}")
            mod.add_arguments(sp)
            sp.set_defaults(func=mod.run)
    for sp in subparsers:  # -v and -q are accepted after the subcommand too (SUPPRESS keeps one given before it)
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log details (checkpoint layout, timings)")
        sp.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=_QUIET_HELP)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # a real command-line run (not a call from Python): the fast allocator, sleeping waits
        from lightsr.allocator import use_fast_allocator
        from lightsr.threads import passive_waits

        use_fast_allocator(sys.argv[1:])
        passive_waits()  # before the command imports torch: OpenMP reads it once, as it loads
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.verbose and args.quiet:
        parser.error("-v/--verbose and -q/--quiet exclude each other")
    level = logging.INFO if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="lightsr: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from lightsr.errors import LightSRError, Terminated

    try:
        with _sigterm_as_interrupt(), _download_timeout(getattr(args, "download_timeout", None)):
            return args.func(args)
    except LightSRError as e:
        print(f"lightsr: error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("lightsr: terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("lightsr: interrupted", file=sys.stderr)
        return 130
    except MemoryError:  # the last resort: the library names the file where it can
        print("lightsr: error: out of memory", file=sys.stderr)
        return 2


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`lightsr.errors.Terminated` (a KeyboardInterrupt): the same clean stop as Ctrl-C —
    temporaries removed, a run's last complete checkpoint kept. The previous handler is restored afterwards."""
    from lightsr.errors import Terminated

    sigchld = getattr(signal, "SIGCHLD", None)
    replaced: list[Any] = []

    def handler(signum: int, frame: object) -> None:
        if sigchld is not None:
            # Child processes (DataLoader workers) got the signal too: their end is expected now, not an error to
            # report (PyTorch's SIGCHLD handler raises one, with a traceback, while it joins them).
            replaced.append(signal.signal(sigchld, _children_ending))
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if replaced and signal.getsignal(sigchld) is _children_ending:
            signal.signal(sigchld, replaced[0])


def _download_timeout(seconds: float | None) -> contextlib.AbstractContextManager:
    """``--download-timeout`` for the command's downloads (the module loads only when the option is given)."""
    if seconds is None:
        return contextlib.nullcontext()
    from lightsr.download import download_timeout

    return download_timeout(seconds)


def _children_ending(signum: int, frame: object) -> None:
    """SIGCHLD after SIGTERM: nothing to do."""


if __name__ == "__main__":
    sys.exit(main())
