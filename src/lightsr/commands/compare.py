"""``lightsr compare``: side-by-side zoomed crops of HR, bicubic and models (:func:`lightsr.figures.compare_figure`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lightsr.bundled import bundled_names, bundled_weights
from lightsr.commands import _args
from lightsr.commands._specs import load_spec
from lightsr.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE", help="an HR image file; the LR input is its MATLAB bicubic downscale")
    p.add_argument("--models", nargs="+", metavar="MODEL",
                   help="bundled names (e.g. lksmn, lksmn_real), checkpoint files or published checkpoints' "
                        "names, LABEL=MODEL to name one (default: every bundled name at --scale)")
    p.add_argument("-o", "--output", required=True, help="the figure file to write: .png, .pdf or .svg")
    p.add_argument("--scale", type=_args.positive, default=4, help="scale factor, an integer (default 4)")
    p.add_argument("--crop", type=_args.crop_box, metavar="X,Y,W,H",
                   help="region to zoom, in HR pixels (default: the square where bicubic errs most)")
    p.add_argument("--lr", metavar="PATH", help="an LR image file to use instead of downscaling IMAGE")
    p.add_argument("--degrade", metavar="SPEC",
                   help="degrade the LR input first (as lightsr eval --degrade), e.g. jpeg:40 or noise:10,jpeg:60")
    p.add_argument("--dpi", type=_args.int_range(10, 1200), default=100,
                   help="resolution of a .png figure, dots per inch: 10 to 1200 (default 100)")
    _args.add_download_timeout(p)


def run(args: argparse.Namespace) -> int:
    out = Path(args.output).resolve()
    for option, src in (("IMAGE", args.image), ("--lr", args.lr)):
        if src and out == Path(src).resolve():
            raise UsageError(f"-o {args.output}: would overwrite the input image ({option})")
    if args.scale not in (2, 3, 4):
        raise UsageError(f"--scale {args.scale}: choose 2, 3 or 4")
    from lightsr.figures import check_figure_path, compare_figure, read_rgb  # here: `--help` loads no numpy

    check_figure_path(args.output, "-o")  # before any model runs
    if args.degrade:
        from lightsr.degradations import parse_degrade

        parse_degrade(args.degrade)
    specs = args.models
    if not specs:
        specs = [n for n in bundled_names() if args.scale in bundled_weights(n)]
        if not specs:
            raise UsageError(f"no bundled weights at ×{args.scale}: name models with --models")
    hr = read_rgb(args.image)
    lr = read_rgb(args.lr) if args.lr else None
    models = [load_spec(s, args.scale) for s in specs]
    res = compare_figure(hr, models, args.output, scale=args.scale, crop=args.crop, lr=lr, dpi=args.dpi,
                         degrade=args.degrade, degrade_key=Path(args.image).stem)
    for p in res.panels:
        if p.psnr is not None:
            print(f"{p.title}: {p.psnr:.2f} dB")
    if not args.quiet:
        print(f"wrote {res.path} ({res.size[0]}×{res.size[1]})", file=sys.stderr)
    return 0
