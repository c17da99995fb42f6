"""``lightsr upscale``: files, folders and globs — images, animations, videos — through :class:`lightsr.Upscaler`.

The command's own work is planning: which files an input names, where each output goes (a file, or a folder
keeping the inputs' sub-folders), and refusing every conflict (existing outputs, two inputs writing one file,
an output replacing an input, a GIF output for a still image, video options no encoder takes) before the first
image runs. The files then go through :mod:`lightsr.pipeline` on this machine, or :mod:`lightsr.ray` on a Ray
cluster.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lightsr._files import check_creatable
from lightsr.commands import _args
from lightsr.commands._specs import load_named
from lightsr.device import PRECISION_CHOICES
from lightsr.errors import LightSRError, UsageError
from lightsr.formats import (
    ANIMATED_FORMATS,
    DEFAULT_MAX_OUTPUT_PIXELS,
    DEFAULT_MAX_PIXELS,
    FORMATS,
    UPSCALE_EXTENSIONS,
    VIDEO_CONTAINERS,
    VIDEO_EXTENSIONS,
)
from lightsr.runtimes import (
    DEFAULT_RUNTIME,
    RUNTIMES,
    check_runtime,
    choices_help,
    file_runtimes,
    named_unless_default,
    runtime_for,
)

if TYPE_CHECKING:
    from lightsr.pipeline import Result
    from lightsr.video import VideoOptions

log = logging.getLogger("lightsr")


def add_arguments(u: argparse.ArgumentParser) -> None:
    u.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image files (PNG, JPEG, WebP, TIFF, BMP; animated GIF, WebP and PNG frame by frame; of a "
                        "multi-page TIFF the first page), videos (MP4, MOV, MKV, WebM, AVI, …; needs lightsr[video]), "
                        "folders (their images and videos) or glob patterns such as 'scans/*.tif'")
    u.add_argument("-o", "--output", required=True,
                   help="an output file (for one input; its extension picks the format: an image format, .gif for "
                        "an animation, .mp4/.mov/.mkv/.webm for a video) or a folder (created when missing)")
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
    out.add_argument("--ext", choices=sorted({s.lstrip(".") for s in (*FORMATS, ".gif")}),
                     help="output format of images and animations (default: the input's; gif for animations "
                          "only); videos keep their container, or become .mkv where lightsr writes no such files")
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
                          "Ampere or newer — else fp32; never int8), fp32 (exact), bf16, fp16 (CUDA only) or "
                          + _args.INT8_HELP)
    run.add_argument("--backend", choices=list(RUNTIMES), default=None, metavar="RUNTIME",
                     help=f"the runtime (default: {DEFAULT_RUNTIME}, or {runtime_for('int8')} for --precision int8; "
                          f"for --onnx, {file_runtimes()[0]}): {choices_help()}")
    _args.add_calibration(run)
    run.add_argument("--threads", type=_args.positive, metavar="N",
                     help="CPU threads for PyTorch / onnxruntime / OpenVINO, a positive integer (default: the "
                          "runtime's own choice)")
    run.add_argument("--no-fuse", action="store_true",
                     help="run the training form instead of the (equivalent, faster) inference form")
    _args.add_download_timeout(run)
    video = u.add_argument_group("video (and animations)")
    video.add_argument("--codec", metavar="NAME",
                       help="video encoder, an FFmpeg name such as libx264, libx265, libvpx-vp9, libsvtav1 or ffv1 "
                            "(default: libx264; libvpx-vp9 for .webm)")
    quality = video.add_mutually_exclusive_group()
    quality.add_argument("--crf", type=_args.int_range(0, 63), metavar="N",
                         help="constant quality, lower is better: 0–51 for x264/x265, 0–63 for VP9/AV1 (default: 18)")
    quality.add_argument("--bitrate", type=_args.bit_rate, metavar="RATE",
                         help="a bit rate instead of --crf, such as 8M or 800k")
    video.add_argument("--pix-fmt", metavar="FORMAT",
                       help="FFmpeg pixel format of the output, e.g. yuv420p (default), yuv444p, yuv420p10le")
    video.add_argument("--frames", type=_args.frame_range, metavar="A:B",
                       help="only frames A to B (from 0, B excluded; A: to the end) of videos and animations")
    cluster = u.add_argument_group("cluster")
    cluster.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                         help="run on a Ray cluster (pip install 'lightsr[ray]'): its address (auto, host:6379, "
                              "ray://host:10001); without one, a cluster of this machine's cores. Paths must be the "
                              "same on every node")
    cluster.add_argument("--ray-actors", type=_args.positive, metavar="N",
                         help="Ray actors, each with its own model (default: the cluster's CPUs / --threads, or "
                              "its GPUs with --device cuda)")


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
            files = sorted(f for f in walker if f.is_file() and f.suffix.lower() in UPSCALE_EXTENSIONS
                           and not f.name.startswith("."))
            if not files:
                errors.append(f"{p}: no images or videos ({', '.join(UPSCALE_EXTENSIONS)}) in this folder")
            found += [(f, f.relative_to(p)) for f in files]
        elif p.is_file():
            found.append((p, Path(p.name)))
        elif glob.has_magic(pat):
            files = sorted(f for f in _glob(pat, recursive) if f.is_file() and f.suffix.lower() in UPSCALE_EXTENSIONS)
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


# What -o may name as a file: an image format, an animated one (GIF), a video container.
_OUTPUT_FILES = {*FORMATS, *ANIMATED_FORMATS, *VIDEO_CONTAINERS}


def _single_file(args: argparse.Namespace, found: list[tuple[Path, Path]]) -> bool:
    """One input (a file, or a glob or folder that holds just one) and an -o that names a file (has an
    extension): write exactly there. Anything else is a folder (created when missing)."""
    out = Path(args.output)
    named_file = len(args.inputs) == 1 and Path(args.inputs[0]).is_file()
    return (len(found) == 1 and not out.is_dir() and not args.output.endswith(("/", os.sep))
            and (out.suffix.lower() in _OUTPUT_FILES if not named_file else out.suffix != ""))


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _output_ext(args: argparse.Namespace, src: Path) -> str:
    """The extension of ``src``'s output in a folder: ``--ext`` or the input's for images and animations; a
    video keeps its container, or becomes .mkv (which holds most codecs) where lightsr writes no such files."""
    if _is_video(src):
        return src.suffix.lower() if src.suffix.lower() in VIDEO_CONTAINERS else ".mkv"
    return "." + args.ext if args.ext else src.suffix.lower()


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
        ext = out.suffix.lower()
        if ext not in _OUTPUT_FILES:
            raise UsageError(f"-o {out}: unknown extension; use .png, .jpg, .webp, .tif or .bmp, .gif for an "
                             f"animation, {', '.join(sorted(VIDEO_CONTAINERS))} for a video (or a folder)")
        if args.ext and ext != "." + args.ext and FORMATS.get(ext) != FORMATS.get("." + args.ext):
            raise UsageError(f"-o {out} and --ext {args.ext} disagree")
        src = found[0][0]
        if _is_video(src) != (ext in VIDEO_CONTAINERS):
            raise UsageError(f"-o {out}: a video is written to {', '.join(sorted(VIDEO_CONTAINERS))}" if _is_video(src)
                             else f"-o {out}: only videos are written as video; {src} is an image")
        _check_kinds(args, [(src, ext)])
        return True
    if out.suffix.lower() in _OUTPUT_FILES and not out.is_dir():
        raise UsageError(f"-o {out}: several inputs need an output folder")
    _suffix(args, 4)  # the syntax; the scale's own value is substituted once the model is known
    _check_kinds(args, [(src, _output_ext(args, src)) for src, _ in found])
    return False


def _check_kinds(args: argparse.Namespace, outputs: list[tuple[Path, str]]) -> None:
    """Refuse outputs no writer takes: formats lightsr cannot write (GIF for a still image, …), and video
    options no encoder or container of the outputs takes; warn about video options with no video to apply to."""
    from lightsr.animation import probe

    unwritable = [src for src, ext in outputs
                  if not _is_video(src) and ext not in FORMATS
                  and not (ext in ANIMATED_FORMATS and _animated(probe, src))]
    if unwritable:
        kind = unwritable[0].suffix.lstrip(".").upper() or "extension-less"
        more = f" (and {len(unwritable) - 1} more input(s))" if len(unwritable) > 1 else ""
        still = " for a still image" if unwritable[0].suffix.lower() in ANIMATED_FORMATS else ""
        raise UsageError(f"{unwritable[0]}: cannot write {kind} files{still}{more}; choose an output format with "
                         f"--ext ({', '.join(sorted({s.lstrip('.') for s in FORMATS}))})")
    containers = sorted({ext for src, ext in outputs if _is_video(src)})
    given = [f"--{o.replace('_', '-')}" for o in ("codec", "crf", "bitrate", "pix_fmt") if getattr(args, o)]
    if given and not containers:
        log.warning("%s: no video among the inputs; %s only for videos", " ".join(given),
                    "it applies" if len(given) == 1 else "they apply")
    if containers:
        from lightsr.video import resolve_options

        for ext in containers:  # the codec and its options against each container written
            resolve_options(Path("out" + ext), _video_options(args))


def _animated(probe: object, src: Path) -> bool:
    try:
        return probe(src) is not None  # type: ignore[operator]
    except LightSRError:
        return True  # a damaged file: its own one-line error comes when it is read


def _video_options(args: argparse.Namespace) -> VideoOptions:
    from lightsr.video import VideoOptions

    start, stop = args.frames if args.frames else (0, None)
    return VideoOptions(args.codec, args.crf, args.bitrate, args.pix_fmt, start, stop)


def _plan_jobs(args: argparse.Namespace, found: list[tuple[Path, Path]], scale: float) -> tuple[list[_Job], list[str]]:
    out = Path(args.output)
    jobs: list[_Job] = []
    conflicts: list[str] = []
    if _check_outputs(args, found):
        jobs.append(_Job(found[0][0], out))
    else:
        suffix = _suffix(args, scale)
        for src, rel in found:
            jobs.append(_Job(src, out / rel.parent / f"{rel.stem}{suffix}{_output_ext(args, src)}"))
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


def _ray_address(args: argparse.Namespace) -> None:
    """``--ray`` takes an optional address, so ``--ray in/ -o out/`` would read the input as one: a value that is
    no address (auto, local, host:port, ray://…) but names a file or folder is moved back to the inputs."""
    value = args.ray
    if value is None or value in ("auto", "local") or "://" in value or re.fullmatch(r"[\w.-]+:\d+", value):
        return
    if Path(value).exists() or glob.has_magic(value):
        args.inputs.insert(0, value)
        args.ray = "local"
        return
    raise UsageError(f"--ray {value}: not a cluster address (auto, HOST:PORT or ray://HOST:PORT) nor an input")


def run(args: argparse.Namespace) -> int:
    chosen = [o for o in ("model", "weights", "onnx") if getattr(args, o)]
    if "onnx" in chosen and len(chosen) > 1:
        raise UsageError("--onnx cannot be combined with --model/--weights")
    _ray_address(args)
    if not args.inputs:
        raise UsageError("no INPUT: name image or video files, folders or glob patterns")
    found, errors = _collect(args.inputs, args.recursive)
    if not found:  # nothing to do: say so without loading a model first
        for line in errors:
            print(f"lightsr: error: {line}", file=sys.stderr)
        return 1 if errors else 0
    if args.onnx and Path(args.onnx).suffix.lower() != ".onnx":
        raise UsageError(f"--onnx {args.onnx}: expected an .onnx file (as written by lightsr export)")
    if args.onnx and args.no_fuse:
        raise UsageError("--no-fuse applies to PyTorch models, not to --onnx")
    if args.ray is not None:
        from lightsr import _optional

        _optional.require("--ray", ("ray",), "ray")  # before the model loads
    from lightsr.bundled import default_upscale_model
    from lightsr.pipeline import Job, WriteOptions
    from lightsr.upscaler import Upscaler  # here, not above: `--help` loads no torch

    # Everything about the outputs that needs no model is checked before one loads.
    single = _check_outputs(args, found)
    check_creatable(args.output, "-o", folder=not single)
    if args.backend is not None:
        check_runtime(args.backend)  # a missing extra, before the model loads
    model = load_named(args.model, args.weights, args.scale, args.onnx)
    settings = dict(scale=args.scale if args.onnx else None, tile=args.tile, tile_overlap=args.tile_overlap,
                    device=args.device, precision=args.precision, max_memory=args.max_memory, alpha=args.alpha,
                    threads=args.threads, fuse=not args.no_fuse, outscale=args.outscale,
                    max_output_pixels=args.max_output_pixels, backend=args.backend,
                    calibration=args.calibration)
    # On a cluster each actor loads the model on its own device; here it only has to load (the same checks).
    here = ({**settings, "device": "cpu", "precision": "fp32", "calibration": None} if args.ray is not None
            else settings)
    up = Upscaler(model, progress=not args.quiet and args.ray is None, **here)
    for line in errors:
        print(f"lightsr: error: {line}", file=sys.stderr)
    planned, conflicts = _plan_jobs(args, found, up.output_scale)
    if conflicts:  # checked before any work: a batch never stops half-way over a name clash
        for line in conflicts:
            print(f"lightsr: error: {line}", file=sys.stderr)
        print(f"lightsr: nothing written ({len(conflicts)} output conflict{'s' * (len(conflicts) > 1)})",
              file=sys.stderr)
        return 2
    jobs = [Job(j.src, j.dst) for j in planned]
    options = WriteOptions(args.overwrite, args.max_pixels, args.quality, args.background, _video_options(args))

    def say(result: Result) -> None:
        if result.error:
            from tqdm import tqdm

            tqdm.write(f"lightsr: error: {result.error}", file=sys.stderr)  # above the progress bar

    start = time.perf_counter()
    if args.ray is not None:
        from lightsr.ray import run_files

        gpus = 1 if str(args.device).startswith("cuda") else 0
        # Each actor resolves the name itself (what the one here resolved: the checks have run).
        named = args.onnx or args.weights or args.model
        settings = {**settings, "model": named, "scale": args.scale}
        results = run_files(jobs, settings, options, args.ray, args.ray_actors,
                            cpus=args.threads or 1, gpus=gpus, report=say, progress=not args.quiet)
    else:
        from lightsr.pipeline import run as run_pipeline

        results = run_pipeline(up, jobs, options, report=say, progress=not args.quiet)
    failed = [r.job.src for r in results if not r.ok]
    if not args.quiet:
        secs = time.perf_counter() - start
        arch = up.arch or "model"
        # Bundled weights may be a variant of their network (upscale's default at ×4 is one): name them.
        bundled = None if args.weights or args.onnx else args.model or default_upscale_model(args.scale)
        parts = [arch, up.device.type, up.precision, named_unless_default(up.backend)]
        if args.ray is not None:
            parts = [arch, f"Ray: {args.ray}"]
        where = (bundled + ": " if bundled not in (None, arch) else "") + ", ".join(p for p in parts if p)
        names = [str(f) for f in failed[:5]] + (["…"] if len(failed) > 5 else [])
        stills = all(_is_still(j.src) for j in jobs)
        frames = sum(r.frames for r in results)
        what = "images" if stills else f"files ({frames} frames)"
        print(f"lightsr: {len(jobs) - len(failed)}/{len(jobs)} {what} upscaled ×{up.output_scale:g} in {secs:.1f} s "
              f"({where})" + (f"; {len(failed)} failed: {', '.join(names)}" if failed else "")
              + (f"; {len(errors)} input error{'s' * (len(errors) > 1)}" if errors else ""), file=sys.stderr)
    return 1 if failed or errors else 0


def _is_still(src: Path) -> bool:
    return not _is_video(src) and src.suffix.lower() not in (".gif", ".apng")
