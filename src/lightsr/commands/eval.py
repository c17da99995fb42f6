"""``lightsr eval``: PSNR/SSIM of bundled networks, checkpoints and bicubic on benchmark sets
(:func:`lightsr.evaluate.evaluate`), as a Markdown table, optional reports, SR images and a complexity plot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lightsr._files import check_creatable
from lightsr.commands import _args
from lightsr.commands._specs import load_spec, split_spec
from lightsr.device import PRECISION_CHOICES, choose_precision, resolve_device
from lightsr.errors import UsageError
from lightsr.runtimes import DEFAULT_RUNTIME, RUNTIMES, check_runtime, choices_help, runtime_for

if TYPE_CHECKING:
    import torch


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("what to evaluate (any mix; each option may be repeated)")
    src.add_argument("--model", action="append", default=[], metavar="NAME",
                     help="a bundled name: a network (e.g. lksmn) or a variant (e.g. lksmn_real), with its bundled "
                          "weights at --scale")
    src.add_argument("--weights", action="append", default=[], metavar="[LABEL=]PATH_OR_NAME",
                     help="a checkpoint file (any supported layout), a published checkpoint's name (downloaded on "
                          "first use, e.g. hasn_x4_official) or a bundled file's name (e.g. lksmn_x4); LABEL= names "
                          "its row")
    src.add_argument("--bicubic", action="store_true", help="the MATLAB bicubic baseline")
    p.add_argument("--scale", type=_args.positive, help="scale factor, an integer (default: the checkpoint's)")
    p.add_argument("--data", default="../shared/data/benchmark", metavar="DIR",
                   help="folder holding the sets (default: ../shared/data/benchmark)")
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"], metavar="SET",
                   help="benchmark sets: folders under --data, EDSR layout (HR/ and LR_bicubic/X<k>/) or plain HR "
                        "images (default: Set5 Set14 B100)")
    p.add_argument("--gray-mode", choices=["rgb", "raw"], default="rgb",
                   help="grayscale images: 'rgb' = replicate to RGB then Y (BasicSR, official ELAN); "
                        "'raw' = the gray value is Y (the classic MATLAB scripts of the bicubic rows)")
    p.add_argument("--rgb", action="store_true", help="PSNR/SSIM on RGB instead of Y")
    p.add_argument("--self-ensemble", action="store_true", help="average the 8 flip/rotate variants")
    p.add_argument("--degrade", metavar="SPEC",
                   help="degrade every LR image first, in order: jpeg:Q, noise:SIGMA (Gaussian, 0-255 scale), "
                        "blur:SIGMA (Gaussian), comma-joined, e.g. noise:10,jpeg:60; seeded per image name")
    p.add_argument("--param-key", metavar="KEY",
                   help="the entry of a checkpoint container to load, e.g. params or params_ema (default: "
                        "params_ema when both are there, or the one a published checkpoint's authors evaluate)")
    p.add_argument("--save-images", metavar="DIR", help="write the SR outputs here (DIR/<label>/ for several)")
    p.add_argument("--output", metavar="PATH", help="write PATH.json and PATH.csv with per-image scores "
                                                    "(PATH-<label>.* for several models)")
    p.add_argument("--plot", metavar="FIG",
                   help="a figure file (.png, .pdf or .svg): PSNR against parameters and multiply-adds of the "
                        "evaluated models (needs matplotlib)")
    p.add_argument("--no-fuse", action="store_true",
                   help="run the training form instead of the (equivalent, faster) inference form")
    p.add_argument("--device", default="cpu",
                   help="cpu (default: exact, repeatable scores), auto, cuda, cuda:N, mps, xpu or xpu:N")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32",
                   help="fp32 (default: the papers' numbers exactly), bf16, fp16 (CUDA), auto (bf16 where the "
                        "device computes it natively) or " + _args.INT8_HELP)
    p.add_argument("--threads", type=_args.positive, metavar="N",
                   help="CPU threads for PyTorch / onnxruntime / OpenVINO, a positive integer (default: the "
                        "runtime's own choice)")
    p.add_argument("--backend", choices=list(RUNTIMES), default=None, metavar="RUNTIME",
                   help=f"the runtime (default: {DEFAULT_RUNTIME}, or {runtime_for('int8')} for --precision int8): "
                        f"{choices_help()}")
    _args.add_calibration(p)
    _args.add_download_timeout(p)
    p.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)  # the older spelling of -q


def _entries(args: argparse.Namespace) -> list[tuple[str, torch.nn.Module | None, str | None]]:
    """``(label, model, weights path)`` for everything asked for, bicubic first; labels made unique."""
    if not (args.model or args.weights or args.bicubic):
        raise UsageError("name something to evaluate: --model NAME, --weights PATH or --bicubic")
    if args.param_key and not args.weights:
        raise UsageError("--param-key applies to --weights only")
    from lightsr.figures import unique_labels

    out: list[tuple[str, torch.nn.Module | None, str | None]] = []
    for name in args.model:
        out.append((*load_spec(name, args.scale, option="--model"), None))
    for spec in args.weights:
        label, model = load_spec(spec, args.scale, param_key=args.param_key, option="--weights")
        out.append((label, model, split_spec(spec)[1]))
    if args.bicubic:
        if not args.scale and not out:
            raise UsageError("--bicubic needs --scale")
        out.insert(0, ("bicubic", None, None))
    labels = unique_labels([label for label, _, _ in out])
    return [(label, m, w) for label, (_, m, w) in zip(labels, out, strict=True)]


def run(args: argparse.Namespace) -> int:
    # Here, not above: `lightsr eval --help` loads no torch.
    from lightsr.evaluate import check_sets, evaluate, markdown_table, write_reports
    from lightsr.figures import ComplexityPoint, check_figure_path, complexity_plot
    from lightsr.profile import profile
    from lightsr.runtimes.factory import build

    # Everything that can be wrong is checked before the first model runs: a typo in the last set name or
    # the output path must not cost a whole evaluation.
    if args.plot:
        check_figure_path(args.plot, "--plot")
    if args.degrade:
        from lightsr.degradations import describe_degrade, parse_degrade

        args.degrade = describe_degrade(parse_degrade(args.degrade))  # checked and normalised before any work
    args.backend = args.backend or runtime_for(args.precision)
    runtime = check_runtime(args.backend)
    device = resolve_device(args.device)
    # before bicubic or any model runs
    choose_precision(args.precision, device, offered=runtime.precisions, offered_by=f"--backend {runtime.name}")
    check_sets(args.data, args.sets, "--data, --sets")
    if args.output:
        check_creatable(args.output, "--output")
    if args.save_images:
        check_creatable(args.save_images, "--save-images", folder=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # the torch runtime and the metric's own tensor work
    entries = _entries(args)
    scales = {m.scale for _, m, _ in entries if m is not None} | ({args.scale} if args.scale else set())
    if len(scales) > 1:
        raise UsageError("the models have different scales (" + ", ".join(
            f"{label} ×{m.scale}" for label, m, _ in entries if m is not None) + "); pass models of one scale")
    scale = scales.pop()
    several = len(entries) > 1
    points = []
    for label, model, weights in entries:
        arch = None if model is None else model.arch
        complexity = None
        if model is not None:
            if args.plot:
                prof = profile(model)
                complexity = (prof.params, prof.macs)
            rt = build(model, args.backend, args.precision, device, threads=args.threads, fuse=not args.no_fuse,
                       calibration=args.calibration)
            model, precision = rt, rt.precision
        save_dir = args.save_images and (Path(args.save_images) / label if several else args.save_images)
        results = evaluate(model, args.data, args.sets, scale, gray_mode=args.gray_mode, test_y=not args.rgb,
                           self_ensemble=args.self_ensemble, save_dir=save_dir,
                           progress=not (args.quiet or args.no_progress), degrade=args.degrade)
        print(markdown_table(results, label, args.degrade))
        if args.output:
            meta = {"model": label, "arch": arch,
                    "weights": weights, "scale": scale, "gray_mode": args.gray_mode,
                    "metric_space": "RGB" if args.rgb else "Y", "self_ensemble": args.self_ensemble,
                    "degrade": args.degrade, "backend": args.backend,
                    "precision": None if arch is None else precision}
            base = args.output[:-5] if args.output.endswith(".json") else args.output.removesuffix(".csv")
            out = f"{base}-{label}" if several else args.output
            for p in write_reports(results, out, meta):
                if not args.quiet:
                    print(f"wrote {p}", file=sys.stderr)
        if args.plot:
            points.append(ComplexityPoint(label, *(complexity or (None, None)), {r.set: r.psnr for r in results}))
    if args.plot:
        res = complexity_plot(points, args.plot, scale)
        if not args.quiet:
            print(f"wrote {res.path}", file=sys.stderr)
    return 0
