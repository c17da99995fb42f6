"""``lightsr profile``: parameters, multiply-adds and latency of a network (:func:`lightsr.profile.profile`)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from lightsr.commands import _args
from lightsr.device import PRECISION_CHOICES
from lightsr.errors import UsageError
from lightsr.runtimes import DEFAULT_RUNTIME, RUNTIMES, check_runtime, choices_help, runtime_for


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="NAME",
                     help="a network name from the registry, e.g. lksmn (random init: enough for counting and "
                          "timing)")
    src.add_argument("--weights", metavar="PATH_OR_NAME", help=_args.WEIGHTS_HELP)
    p.add_argument("--scale", type=_args.positive, default=None,
                   help="scale, an integer (default 4, or the checkpoint's)")
    p.add_argument("--input-size", type=_args.size_wh, metavar="WxH",
                   help="input size for MACs (default: the input giving a 1280×720 output)")
    p.add_argument("--latency", type=_args.size_wh, metavar="WxH", nargs="?", const=(180, 320),
                   help="also time the forward pass on a WxH input (default 320x180)")
    p.add_argument("--runs", type=_args.positive, default=5,
                   help="timed runs, a positive integer (median reported; default 5)")
    p.add_argument("--no-fuse", action="store_true", help="time the training form instead of the inference form")
    p.add_argument("--backend", choices=list(RUNTIMES), metavar="RUNTIME",
                   help=f"the runtime --latency times (default: {DEFAULT_RUNTIME}, or {runtime_for('int8')} for "
                        f"--precision int8): {choices_help()}")
    p.add_argument("--precision", choices=PRECISION_CHOICES,
                   help="precision timed by --latency: fp32 (default), bf16, fp16 (CUDA), auto or "
                        + _args.INT8_HELP)
    _args.add_calibration(p)
    p.add_argument("--threads", type=_args.positive, metavar="N",
                   help="CPU threads (torch, onnxruntime, OpenVINO), a positive integer")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")


def run(args: argparse.Namespace) -> int:
    import torch  # here, not above: `lightsr profile --help` loads no torch

    from lightsr.profile import profile

    if args.runs < 1:
        raise UsageError(f"--runs must be at least 1, got {args.runs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if (args.backend or args.precision or args.calibration) and not args.latency:
        raise UsageError("--backend, --precision and --calibration choose what --latency times; add --latency [WxH]")
    precision = args.precision or "fp32"
    backend = args.backend or runtime_for(precision)
    check_runtime(backend)  # a missing extra, before anything loads
    if args.weights:
        from lightsr.sources import load_network

        model = load_network(args.weights, args.scale, option="--weights")
    else:
        from lightsr.models.registry import create_model

        model = create_model(args.model, scale=4 if args.scale is None else args.scale).eval()
    prof = profile(model, args.input_size, args.latency, args.runs, fuse=not args.no_fuse, backend=backend,
                   precision=precision, calibration=args.calibration)
    if args.json:
        print(json.dumps(asdict(prof), indent=1))
        return 0
    h, w = prof.input_hw
    print("| model | scale | params | input | MACs | latency |")
    print("|---|---|---|---|---|---|")
    lat = "—"
    if prof.latency_ms is not None:
        lat = (f"{prof.latency_ms:.1f} ms ({prof.latency_input_hw[1]}×{prof.latency_input_hw[0]}, {prof.form}, "
               f"{prof.backend} {prof.precision}, "
               f"{prof.threads} threads, {prof.allocator}, median of {prof.runs})")
    print(f"| {prof.arch} | ×{prof.scale} | {prof.params:,} | {w}×{h} | {prof.macs / 1e9:.2f} G | {lat} |")
    return 0
