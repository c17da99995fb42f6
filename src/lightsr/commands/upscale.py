"""``lightsr upscale``: files, folders and globs through :class:`lightsr.Upscaler`.

The command's own work is planning: which files an input names, where each output goes (a file, or a folder
keeping the inputs' sub-folders), and refusing every conflict (existing outputs, two inputs writing one file,
an output replacing an input) before the first image runs.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lightsr._files import check_creatable
from lightsr.commands import _args
from lightsr.commands._specs import load_named
from lightsr.device import PRECISION_CHOICES
from lightsr.errors import LightSRError, UsageError
from lightsr.formats import DEFAULT_MAX_OUTPUT_PIXELS, DEFAULT_MAX_PIXELS, FORMATS, INPUT_EXTENSIONS
from lightsr.runtimes import (
    DEFAULT_RUNTIME,
    RUNTIMES,
    check_runtime,
    choices_help,
    file_runtimes,
    named_unless_default,
)

log = logging.getLogger("lightsr")


def add_arguments(u: argparse.ArgumentParser) -> None:
    u.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files (PNG, JPEG, WebP, TIFF, BMP; of an animated or multi-page file the first "
                        "frame), folders (their images) or glob patterns such as 'scans/*.tif'")
    u.add_argument("-o", "--output", required=True,
                   help="an output file (for one input image; its extension picks the format) or a folder "
                        "(created when missing)")
    src = u.add_argument_group("model")
    src.add_argument("--model", metavar="NAME",
                     help="a bundled name: a network (e.g. lksmn) or a variant (e.g. lksmn_real), run with its "
                          "bundled weights at --scale (default: lksmn_real at ×4, else lksmn)")
    src.add_argument("--weights", metavar="PATH_OR_NAME", help=_args.WEIGHTS_HELP)
    src.add_argument("--onnx", metavar="PATH",
                     help="an .onnx file to run instead of a PyTorch model (one made by `lightsr export`; its tiles "
                          "are blended)")
    src.add_argument("--scale", type=_args.positive,
                     help="upscaling factor, an integer: 2, 3 or 4 for lightsr's networks (default: the "
                          "checkpoint's, or 4)")
    src.add_argument("--outscale", type=_args.positive_float, metavar="X",
                     help="final size as a multiple of the input, a positive number, e.g. 2 with a ×4 model: the "
                          "model's output is resized (MATLAB bicubic, antialiased); default: the model's scale")
    out = u.add_argument_group("files")
    out.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders (and ** in globs)")
    out.add_argument("--ext", choices=sorted({s.lstrip(".") for s in FORMATS}),
                     help="output format (default: the input's)")
    out.add_argument("--suffix", default="_x{scale}",
                     help="added to file names written into a folder (default: _x{scale}; '' for none; no path "
                          "separators or '..')")
    exists = out.add_mutually_exclusive_group()
    exists.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    exists.add_argument("--skip-existing", action="store_true", help="skip inputs whose output already exists")
    out.add_argument("--quality", type=_args.int_range(1, 100), default=95,
                     help="JPEG/WebP quality, 1 to 100 (default: 95)")
    out.add_argument("--alpha", choices=("bicubic", "model"), default="bicubic",
                     help="how the alpha channel is upscaled: bicubic (default) or by the network (model)")
    out.add_argument("--background", type=_args.color, metavar="COLOR",
                     help="composite images with alpha over this colour when the output format has no alpha "
                          "(JPEG): a colour name, #rrggbb or rgb(r,g,b), e.g. white or '#202020' (default: drop "
                          "the alpha channel, with a warning)")
    out.add_argument("--max-pixels", type=_args.pixel_count, default=DEFAULT_MAX_PIXELS, metavar="N",
                     help="refuse inputs with more pixels: a count such as 40M or 1e8, checked from the file's "
                          f"header (default: {DEFAULT_MAX_PIXELS // 10**6}M; 0: no limit)")
    out.add_argument("--max-output-pixels", type=_args.pixel_count, default=DEFAULT_MAX_OUTPUT_PIXELS, metavar="N",
                     help="refuse images whose output would have more pixels (a count such as 640M), checked from "
                          "the file's header before anything is decoded or run (default: "
                          f"{DEFAULT_MAX_OUTPUT_PIXELS // 10**6}M, a ×4 of a --max-pixels image; 0: no limit)")
    run = u.add_argument_group("execution")
    run.add_argument("--tile", type=_args.tile_size, default=None, metavar="SIZE",
                     help="tile core size in input pixels; auto (default: from --max-memory) or 0 (never tile)")
    run.add_argument("--tile-overlap", type=_args.int_range(0), metavar="PX",
                     help="context pixels around each tile, an integer ≥ 0 (default: per network, 32–48)")
    run.add_argument("--max-memory", metavar="SIZE",
                     help="memory budget that picks the tile size, such as 800MB, 2GB or 1.5G: CPU: one tile plus "
                          "the image buffers (default 1GB); CUDA: one tile (default 70%% of free GPU memory)")
    run.add_argument("--device", default="auto",
                     help="auto, cpu, cuda, cuda:N, mps, xpu or xpu:N (default: auto: CUDA, else MPS, else XPU, "
                          "else the CPU)")
    run.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                     help="auto (default: bf16 where the CPU or GPU computes it natively — AMX, AVX512-BF16, "
                          "Ampere or newer — else fp32), fp32 (exact), bf16, or fp16 (CUDA only)")
    run.add_argument("--backend", choices=list(RUNTIMES), default=None, metavar="RUNTIME",
                     help=f"the runtime (default: {DEFAULT_RUNTIME}; for --onnx, {file_runtimes()[0]}): "
                          f"{choices_help()}")
    run.add_argument("--threads", type=_args.positive, metavar="N",
                     help="CPU threads for PyTorch / onnxruntime / OpenVINO, a positive integer (default: the "
                          "runtime's own choice)")
    run.add_argument("--no-fuse", action="store_true",
                     help="run the training form instead of the (equivalent, faster) inference form")
    _args.add_download_timeout(run)


@dataclass
class _Job:
    src: Path
    dst: Path


def _collect(patterns: list[str], recursive: bool) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Input files with the path their outputs keep below the output folder; and error lines."""
    found: list[tuple[Path, Path]] = []
    errors: list[str] = []
    for pat in patterns:
        p = Path(pat)
        if p.is_dir():
            walker = p.rglob("*") if recursive else p.glob("*")
            files = sorted(f for f in walker if f.is_file() and f.suffix.lower() in INPUT_EXTENSIONS
                           and not f.name.startswith("."))
            if not files:
                errors.append(f"{p}: no images ({', '.join(INPUT_EXTENSIONS)}) in this folder")
            found += [(f, f.relative_to(p)) for f in files]
        elif p.is_file():
            found.append((p, Path(p.name)))
        elif glob.has_magic(pat):
            files = sorted(f for f in _glob(pat, recursive) if f.is_file() and f.suffix.lower() in INPUT_EXTENSIONS)
            if not files:
                errors.append(f"{pat}: no image matches")
            found += [(f, Path(f.name)) for f in files]
        else:
            errors.append(f"{pat}: no such file or folder")
    unique: dict[Path, tuple[Path, Path]] = {}
    for f, rel in found:  # the same file named twice (a file and its folder, overlapping globs) runs once
        unique.setdefault(f.resolve(), (f, rel))
    return list(unique.values()), errors


def _glob(pattern: str, recursive: bool) -> list[Path]:
    """The paths a glob pattern matches; ``**`` (with -r) descends through real folders only, as a folder input
    does: a symlinked folder is not followed (one linking to a parent would make the walk endless). Hidden names
    match only where the pattern spells a leading dot, as with the shell and :mod:`glob`."""
    if not (recursive and "**" in pattern):
        return [Path(f) for f in glob.glob(pattern)]
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    root = Path(*parts[:first]) if first else Path()
    rest = Path(*parts[first:])
    if rest.name == "**":  # files too, as glob's "**" (pathlib's matches folders only before Python 3.13)
        rest = rest / "*"
    dotted = any(part.startswith(".") for part in rest.parts)
    return [p for p in root.glob(str(rest))
            if dotted or not any(part.startswith(".") for part in p.relative_to(root).parts)]


def _single_file(args: argparse.Namespace, found: list[tuple[Path, Path]]) -> bool:
    """One input image (a file, or a glob or folder that holds just one) and an -o that names a file (has an
    extension): write exactly there. Anything else is a folder (created when missing)."""
    out = Path(args.output)
    named_file = len(args.inputs) == 1 and Path(args.inputs[0]).is_file()
    return (len(found) == 1 and not out.is_dir() and not args.output.endswith(("/", os.sep))
            and (out.suffix.lower() in FORMATS if not named_file else out.suffix != ""))


def _suffix(args: argparse.Namespace, scale: float) -> str:
    """``--suffix`` with ``{scale}`` substituted; it names files inside the -o folder, never a path."""
    def check(text: str) -> None:
        if any(sep in text for sep in ("/", "\\", os.sep, "\0")) or ".." in text:
            raise UsageError(f"--suffix {args.suffix!r}: may not contain path separators or '..' (outputs stay "
                             "in the -o folder)")

    check(args.suffix)
    try:
        suffix = args.suffix.format(scale=int(scale) if float(scale).is_integer() else scale)
    except (KeyError, IndexError, ValueError) as e:
        raise UsageError(f"--suffix {args.suffix!r}: only {{scale}} can be substituted ({e})") from None
    check(suffix)
    return suffix


def _check_outputs(args: argparse.Namespace, found: list[tuple[Path, Path]]) -> bool:
    """The checks of -o, --ext and --suffix that need no model (run before one loads); True for one output file."""
    out = Path(args.output)
    if _single_file(args, found):
        if out.suffix.lower() not in FORMATS:
            raise UsageError(f"-o {out}: unknown image extension; use .png, .jpg, .webp, .tif or .bmp (or a "
                             "folder)")
        if args.ext and FORMATS[out.suffix.lower()] != FORMATS["." + args.ext]:
            raise UsageError(f"-o {out} and --ext {args.ext} disagree")
        return True
    if out.suffix.lower() in FORMATS and not out.is_dir():
        raise UsageError(f"-o {out}: several inputs need an output folder")
    _suffix(args, 4)  # the syntax; the scale's own value is substituted once the model is known
    if not args.ext:  # outputs keep their input's format: one lightsr cannot write needs --ext
        unwritable = [src for src, _ in found if src.suffix.lower() not in FORMATS]
        if unwritable:
            kind = unwritable[0].suffix.lstrip(".").upper() or "extension-less"
            more = f" (and {len(unwritable) - 1} more input(s))" if len(unwritable) > 1 else ""
            raise UsageError(f"{unwritable[0]}: cannot write {kind} files{more}; choose an output format with "
                             f"--ext ({', '.join(sorted({s.lstrip('.') for s in FORMATS}))})")
    return False


def _plan_jobs(args: argparse.Namespace, found: list[tuple[Path, Path]], scale: float) -> tuple[list[_Job], list[str]]:
    out = Path(args.output)
    jobs: list[_Job] = []
    conflicts: list[str] = []
    if _check_outputs(args, found):
        jobs.append(_Job(found[0][0], out))
    else:
        suffix = _suffix(args, scale)
        for src, rel in found:
            ext = "." + args.ext if args.ext else src.suffix.lower()
            jobs.append(_Job(src, out / rel.parent / f"{rel.stem}{suffix}{ext}"))
    # A file this batch writes is not one of its inputs: rerunning a batch into its own folder must not upscale
    # its earlier outputs (a_x4.png → a_x4_x4.png) nor read a file it is about to replace.
    writes = {j.dst.resolve(): j.src.resolve() for j in jobs}
    kept_jobs, ours = [], []
    for j in jobs:
        src = j.src.resolve()
        (ours if writes.get(src, src) != src else kept_jobs).append(j)
    if ours:
        log.warning("%d input(s) are this batch's own outputs (e.g. %s, from %s) and are not upscaled again",
                    len(ours), ours[0].src, writes[ours[0].src.resolve()].name)
    jobs = kept_jobs
    probed: set[Path] = set()
    for j in jobs:
        check_creatable(j.dst, "-o", probed)
    inputs = {j.src.resolve() for j in jobs}
    seen: dict[Path, Path] = {}
    kept = []
    for j in jobs:
        d = j.dst.resolve()
        if d in inputs:
            conflicts.append(f"{j.dst}: would overwrite an input (choose another -o or --suffix)")
        elif d in seen:
            conflicts.append(f"{j.dst}: is the output of both {seen[d]} and {j.src}")
        elif j.dst.exists() and not args.overwrite:
            if args.skip_existing:
                log.info("%s: exists, skipped", j.dst)
                seen[d] = j.src
                continue
            conflicts.append(f"{j.dst}: exists (use --overwrite or --skip-existing)")
        else:
            kept.append(j)
        seen[d] = j.src
    return kept, conflicts


def run(args: argparse.Namespace) -> int:
    chosen = [o for o in ("model", "weights", "onnx") if getattr(args, o)]
    if "onnx" in chosen and len(chosen) > 1:
        raise UsageError("--onnx cannot be combined with --model/--weights")
    found, errors = _collect(args.inputs, args.recursive)
    if not found:  # nothing to do: say so without loading a model first
        for line in errors:
            print(f"lightsr: error: {line}", file=sys.stderr)
        return 1 if errors else 0
    if args.onnx and Path(args.onnx).suffix.lower() != ".onnx":
        raise UsageError(f"--onnx {args.onnx}: expected an .onnx file (as written by lightsr export)")
    if args.onnx and args.no_fuse:
        raise UsageError("--no-fuse applies to PyTorch models, not to --onnx")
    from lightsr.bundled import default_upscale_model
    from lightsr.upscaler import NonFiniteOutputError, Upscaler  # here, not above: `--help` loads no torch

    # Everything about the outputs that needs no model is checked before one loads.
    single = _check_outputs(args, found)
    check_creatable(args.output, "-o", folder=not single)
    if args.backend is not None:
        check_runtime(args.backend)  # a missing extra, before the model loads
    model = load_named(args.model, args.weights, args.scale, args.onnx)
    up = Upscaler(model, scale=args.scale if args.onnx else None, tile=args.tile, tile_overlap=args.tile_overlap,
                  device=args.device, precision=args.precision, max_memory=args.max_memory, alpha=args.alpha,
                  threads=args.threads, progress=not args.quiet, fuse=not args.no_fuse, outscale=args.outscale,
                  max_output_pixels=args.max_output_pixels, backend=args.backend)
    for line in errors:
        print(f"lightsr: error: {line}", file=sys.stderr)
    jobs, conflicts = _plan_jobs(args, found, up.output_scale)
    if conflicts:  # checked before any work: a batch never stops half-way over a name clash
        for line in conflicts:
            print(f"lightsr: error: {line}", file=sys.stderr)
        print(f"lightsr: nothing written ({len(conflicts)} output conflict{'s' * (len(conflicts) > 1)})",
              file=sys.stderr)
        return 2
    failed: list[Path] = []
    start = time.perf_counter()
    bar = None
    if not args.quiet and len(jobs) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="images", unit="img", file=sys.stderr, disable=None)

    def say(line: str) -> None:
        if bar is not None:
            bar.write(line, file=sys.stderr)  # above the progress bar, not through it
        else:
            print(line, file=sys.stderr)

    for job in jobs:
        try:
            up.upscale_file(job.src, job.dst, overwrite=args.overwrite, max_pixels=args.max_pixels,
                            quality=args.quality, background=args.background)
        except NonFiniteOutputError as e:
            say(f"lightsr: error: {job.src}: {e}; nothing written")
            failed.append(job.src)
        except LightSRError as e:
            say(f"lightsr: error: {e}")
            failed.append(job.src)
        finally:
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if not args.quiet:
        secs = time.perf_counter() - start
        arch = up.arch or "model"
        # Bundled weights may be a variant of their network (upscale's default at ×4 is one): name them.
        bundled = None if args.weights or args.onnx else args.model or default_upscale_model(args.scale)
        parts = [arch, up.device.type, up.precision, named_unless_default(up.backend)]
        where = (bundled + ": " if bundled not in (None, arch) else "") + ", ".join(p for p in parts if p)
        names = [str(f) for f in failed[:5]] + (["…"] if len(failed) > 5 else [])
        print(f"lightsr: {len(jobs) - len(failed)}/{len(jobs)} images upscaled ×{up.output_scale:g} in {secs:.1f} s "
              f"({where})" + (f"; {len(failed)} failed: {', '.join(names)}" if failed else "")
              + (f"; {len(errors)} input error{'s' * (len(errors) > 1)}" if errors else ""), file=sys.stderr)
    return 1 if failed or errors else 0
