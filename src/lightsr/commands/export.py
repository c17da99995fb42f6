"""``lightsr export``: a bundled network or a checkpoint to ONNX (:func:`lightsr.export.export_onnx`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lightsr._files import check_creatable
from lightsr.commands import _args
from lightsr.commands._specs import load_named
from lightsr.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="NAME",
                   help="a bundled name: a network (e.g. lksmn) or a variant (e.g. lksmn_real), with its bundled "
                        "weights at --scale")
    p.add_argument("--weights", metavar="PATH_OR_NAME",
                   help=_args.WEIGHTS_HELP)
    p.add_argument("--scale", type=_args.positive,
                   help="upscaling factor, an integer (default: the checkpoint's, or 4)")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=17,
                   help="ONNX opset, an integer ≥ 17 (default 17, the oldest with LayerNormalization; newer ones work "
                        "too)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-PyTorch check")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-fuse", action="store_true",
                   help="export the training form instead of the (equivalent, faster) inference form")
    _args.add_download_timeout(p)


def run(args: argparse.Namespace) -> int:
    if not args.model and not args.weights:
        raise UsageError("export needs --model NAME (bundled weights) or --weights PATH")
    if Path(args.onnx).suffix.lower() != ".onnx":
        raise UsageError(f"--onnx {args.onnx}: the output file name must end with .onnx")
    check_creatable(args.onnx, "--onnx")
    from lightsr.export import export_onnx  # here, not above: `--help` loads no torch

    model = load_named(args.model, args.weights, args.scale)
    if not args.no_fuse:
        model = model.fuse()
    path = export_onnx(model, args.onnx, opset=args.opset, check=not args.no_check, overwrite=args.overwrite)
    if not args.quiet:
        print(f"lightsr: exported {model.arch} ×{model.scale} to {path} (opset {args.opset}, dynamic N×3×H×W"
              + ("" if args.no_check else ", checked with onnxruntime") + ")")
    return 0
