"""``lightsr serve``: the local web app (:mod:`lightsr.serve`)."""

from __future__ import annotations

import argparse
import sys

from lightsr.commands import _args
from lightsr.formats import DEFAULT_MAX_FRAMES, DEFAULT_MAX_OUTPUT_PIXELS, DEFAULT_MAX_PIXELS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this computer only; 0.0.0.0 opens the page to "
                        "your network, with no password)")
    p.add_argument("--port", type=_args.int_range(1, 65535), default=7860,
                   help="port number, 1 to 65535 (default 7860)")
    p.add_argument("--weights", action="append", default=[], metavar="PATH",
                   help="a checkpoint file (any supported layout) to offer besides the bundled and published weights "
                        "(repeatable)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps, xpu or xpu:N (default: auto)")
    p.add_argument("--threads", type=_args.positive, metavar="N", help="CPU threads for PyTorch, a positive integer")
    p.add_argument("--max-memory", metavar="SIZE",
                   help="memory budget that picks the tile size, such as 800MB, 2GB or 1.5G (as lightsr upscale)")
    p.add_argument("--max-pixels", type=_args.pixel_count, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse uploads with more pixels, a count such as 40M (default: "
                        f"{DEFAULT_MAX_PIXELS // 10**6}M; 0: no limit)")
    p.add_argument("--max-output-pixels", type=_args.pixel_count, default=DEFAULT_MAX_OUTPUT_PIXELS, metavar="N",
                   help=f"refuse uploads whose output would have more pixels (default: "
                        f"{DEFAULT_MAX_OUTPUT_PIXELS // 10**6}M; 0: no limit)")
    p.add_argument("--max-frames", type=_args.int_range(0), default=DEFAULT_MAX_FRAMES, metavar="N",
                   help=f"refuse animations and videos of more frames (default: {DEFAULT_MAX_FRAMES}, 20 s at 30 fps; "
                        "0: no limit; longer ones are for lightsr upscale)")
    p.add_argument("--max-upload-size", default="auto", metavar="SIZE",
                   help="refuse uploaded files larger than this, e.g. 50MB (default auto: an uncompressed 16-bit "
                        "RGBA image of --max-pixels, 321MB for 40M; 0: no limit)")
    _args.add_download_timeout(p)


def _upload_limit(text: str) -> int | str | None:
    t = text.strip().lower()
    if t == "auto":
        return "auto"
    if t == "0":
        return None
    from lightsr.tiling import parse_memory

    return parse_memory(text, option="--max-upload-size")


def run(args: argparse.Namespace) -> int:
    from lightsr.serve import start  # here, not above: `--help` loads neither Gradio nor torch

    max_upload_size = _upload_limit(args.max_upload_size)

    def started(url: str) -> None:  # after the checks: nothing is said about a server that does not start
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"lightsr serve: listening on {args.host}: anyone who can reach this computer can use the page",
                  file=sys.stderr)
        print(f"lightsr serve: {url} (Ctrl-C stops the server and removes its files)", file=sys.stderr)

    start(args.weights, host=args.host, port=args.port, block=True, max_upload_size=max_upload_size,
          device=args.device, threads=args.threads, max_memory=args.max_memory, max_pixels=args.max_pixels,
          max_output_pixels=args.max_output_pixels, download_timeout=args.download_timeout,
          max_frames=args.max_frames or None, on_start=started)
    return 0
