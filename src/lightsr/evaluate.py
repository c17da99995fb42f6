"""Benchmark evaluation under the papers' protocol: ``lightsr eval`` and :func:`evaluate`.

Per image: the LR input (the MATLAB-made one of an EDSR-layout set, or MATLAB-exact ``imresize`` of the
modcropped HR for a plain HR folder) goes through the network, the output is rounded to uint8, and PSNR/SSIM are
computed on Y with ``crop_border = scale`` (:mod:`lightsr.metrics`). Set averages are per-image means.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from lightsr import _argtypes
from lightsr._files import default_permissions
from lightsr.errors import LightSRError, UsageError
from lightsr.metrics import GrayMode, calculate_psnr, calculate_ssim
from lightsr.resize import imresize, modcrop

IMAGE_EXTS = {".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"}


class DatasetError(LightSRError, ValueError):
    """A benchmark set that is missing or inconsistent; the message names the file or folder."""


@dataclass
class ImageScore:
    name: str
    psnr: float
    ssim: float


@dataclass
class SetScore:
    set: str
    scale: int
    psnr: float
    ssim: float
    images: list[ImageScore] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.images)


@dataclass
class BenchmarkImage:
    name: str
    hr: np.ndarray  # uint8, HxWx3 or HxW (grayscale stays 2-D so that gray_mode can see it)
    lr: np.ndarray


def _read(path: Path) -> np.ndarray:
    """uint8 HxWx3 for colour images, HxW for single-channel ones."""
    from lightsr.imageio import ImageReadError, read_image

    try:
        return read_image(path, "auto")
    except ImageReadError as e:
        raise DatasetError(str(e)) from None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def check_sets(data_root: str | Path, names: list[str] | tuple[str, ...], options: str = "") -> None:
    """Fail in one line if a benchmark set folder is missing (``options`` names where it was configured)."""
    for name in names:
        folder = Path(data_root) / name
        if not folder.is_dir():
            raise DatasetError(f"{folder}: benchmark set not found" + (f" ({options})" if options else ""))


def load_set(data_root: str | Path, name: str, scale: int) -> list[BenchmarkImage]:
    """Read a benchmark set: ``<root>/<name>/HR`` + ``LR_bicubic/X<k>`` (EDSR layout) or a plain HR folder."""
    check_sets(data_root, [name])
    folder = Path(data_root) / name
    hr_dir = folder / "HR" if (folder / "HR").is_dir() else folder
    lr_dir = folder / "LR_bicubic" / f"X{scale}"
    hr_paths = _images_in(hr_dir)
    if not hr_paths:
        raise DatasetError(f"{hr_dir}: no images")
    out = []
    for hp in hr_paths:
        hr = modcrop(_read(hp), scale)
        if lr_dir.is_dir():
            lp = lr_dir / f"{hp.stem}x{scale}{hp.suffix}"
            if not lp.is_file():
                raise DatasetError(f"{lp}: LR image missing for {hp.name}")
            lr = _read(lp)
            if lr.ndim != hr.ndim:  # a colour LR for a gray HR (or vice versa): compare like with like
                lr = lr if lr.ndim == 3 else np.repeat(lr[..., None], 3, axis=2)
                hr = hr if hr.ndim == 3 else np.repeat(hr[..., None], 3, axis=2)
            if (lr.shape[0] * scale, lr.shape[1] * scale) != hr.shape[:2]:
                raise DatasetError(
                    f"{lp}: LR size {lr.shape[1]}×{lr.shape[0]} ×{scale} does not match HR {hp.name} "
                    f"({hr.shape[1]}×{hr.shape[0]} after modcrop)"
                )
        else:
            lr = imresize(hr, 1 / scale)
        out.append(BenchmarkImage(hp.stem, hr, lr))
    return out


def _to_tensor(img: np.ndarray, device: torch.device) -> torch.Tensor:
    rgb = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div(255).unsqueeze(0).to(device)


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    return t[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


_ENSEMBLE = [(rot, flip) for rot in range(4) for flip in (False, True)]


@torch.inference_mode()
def super_resolve(model: torch.nn.Module, lr: np.ndarray, self_ensemble: bool = False) -> np.ndarray:
    """SR of one uint8 image; with ``self_ensemble`` the mean over the 8 flips/rotations (EDSR's x8)."""
    device = next(model.parameters()).device
    x = _to_tensor(lr, device)
    if not self_ensemble:
        return _to_uint8(model(x))
    acc = None
    for rot, flip in _ENSEMBLE:
        xi = torch.rot90(x, rot, dims=(2, 3))
        xi = torch.flip(xi, dims=(3,)) if flip else xi
        yi = model(xi)
        yi = torch.flip(yi, dims=(3,)) if flip else yi
        yi = torch.rot90(yi, -rot, dims=(2, 3))
        acc = yi if acc is None else acc + yi
    return _to_uint8(acc / len(_ENSEMBLE))


def evaluate(
    model: torch.nn.Module | None,
    data_root: str | Path,
    sets: list[str],
    scale: int,
    gray_mode: GrayMode = "rgb",
    test_y: bool = True,
    self_ensemble: bool = False,
    save_dir: str | Path | None = None,
    progress: bool = True,
) -> list[SetScore]:
    """PSNR/SSIM of ``model`` (``None``: the bicubic baseline) on each set; per-image scores included."""
    from tqdm import tqdm

    if model is not None and getattr(model, "scale", scale) != scale:
        raise UsageError(f"--scale {scale} does not match the model's ×{model.scale}")
    results = []
    for set_name in sets:
        images = load_set(data_root, set_name, scale)
        scores = []
        for im in tqdm(images, desc=f"{set_name} ×{scale}", disable=not progress, leave=False, file=sys.stderr):
            if model is None:
                sr = imresize(im.lr, scale)
            else:
                sr = super_resolve(model, im.lr, self_ensemble)
                if im.hr.ndim == 2 and gray_mode == "raw":
                    # The network sees the gray image as RGB; its gray answer is the channel mean.
                    sr = np.round(sr.astype(np.float64).mean(axis=2)).astype(np.uint8)
            hr = im.hr
            if sr.ndim != hr.ndim:
                hr = np.repeat(hr[..., None], 3, axis=2)
            if save_dir is not None:
                from PIL import Image

                dst = Path(save_dir) / set_name / f"{im.name}.png"
                dst.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(sr).save(dst)
            scores.append(ImageScore(
                im.name,
                calculate_psnr(sr, hr, crop_border=scale, test_y=test_y, gray_mode=gray_mode),
                calculate_ssim(sr, hr, crop_border=scale, test_y=test_y, gray_mode=gray_mode),
            ))
        results.append(SetScore(set_name, scale, float(np.mean([s.psnr for s in scores])),
                                float(np.mean([s.ssim for s in scores])), scores))
    return results


def markdown_table(results: list[SetScore], label: str) -> str:
    lines = [f"| {label} | set | scale | PSNR | SSIM | images |", "|---|---|---|---|---|---|"]
    lines += [f"| {label} | {r.set} | ×{r.scale} | {r.psnr:.4f} | {r.ssim:.4f} | {r.count} |" for r in results]
    return "\n".join(lines)


def write_reports(results: list[SetScore], out: str | Path, meta: dict) -> tuple[Path, Path]:
    """``<out>.json`` (summary + per-image) and ``<out>.csv`` (one row per image)."""
    base = str(out)
    if base.endswith((".json", ".csv")):
        base = base.rsplit(".", 1)[0]
    jpath, cpath = Path(base + ".json"), Path(base + ".csv")
    jpath.parent.mkdir(parents=True, exist_ok=True)
    payload = {**meta, "sets": [{**asdict(r), "count": r.count} for r in results]}
    rows = io.StringIO(newline="")
    w = csv.writer(rows)
    w.writerow(["set", "scale", "image", "psnr", "ssim"])
    for r in results:
        for s in r.images:
            w.writerow([r.set, r.scale, s.name, f"{s.psnr:.6f}", f"{s.ssim:.6f}"])
    for path, text in ((jpath, json.dumps(payload, indent=1)), (cpath, rows.getvalue())):
        tmp = path.with_name(f".{path.name}.tmp")  # a report is complete or absent, never half-written
        with tmp.open("w", newline="") as f:
            f.write(text)
        default_permissions(tmp, path)
        os.replace(tmp, path)
    return jpath, cpath


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("what to evaluate (any mix; each option may be repeated)")
    src.add_argument("--model", action="append", default=[], metavar="NAME",
                     help="a network's bundled weights at --scale")
    src.add_argument("--weights", action="append", default=[], metavar="[LABEL=]PATH",
                     help="a checkpoint file (any supported layout)")
    src.add_argument("--bicubic", action="store_true", help="the MATLAB bicubic baseline")
    p.add_argument("--scale", type=_argtypes.positive, help="scale factor (default: the checkpoint's)")
    p.add_argument("--data", default="../shared/data/benchmark", help="folder holding the sets")
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"])
    p.add_argument("--gray-mode", choices=["rgb", "raw"], default="rgb",
                   help="grayscale images: 'rgb' = replicate to RGB then Y (BasicSR, official ELAN); "
                        "'raw' = the gray value is Y (the classic MATLAB scripts of the bicubic rows)")
    p.add_argument("--rgb", action="store_true", help="PSNR/SSIM on RGB instead of Y")
    p.add_argument("--self-ensemble", action="store_true", help="average the 8 flip/rotate variants")
    p.add_argument("--param-key", help="checkpoint entry to use (e.g. params or params_ema)")
    p.add_argument("--save-images", metavar="DIR", help="write the SR outputs here (DIR/<label>/ for several)")
    p.add_argument("--output", metavar="PATH", help="write PATH.json and PATH.csv with per-image scores "
                                                    "(PATH-<label>.* for several models)")
    p.add_argument("--plot", metavar="FIG",
                   help="draw PSNR against parameters and multiply-adds of the evaluated models (needs matplotlib)")
    p.add_argument("--no-fuse", action="store_true",
                   help="run the training form instead of the (equivalent, faster) inference form")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")


def _entries(args: argparse.Namespace) -> list[tuple[str, torch.nn.Module | None, str | None]]:
    """``(label, model, weights path)`` for everything asked for, bicubic first; labels made unique."""
    from lightsr.bundled import bundled_model, load_spec, split_spec, unique_labels

    if not (args.model or args.weights or args.bicubic):
        raise UsageError("name something to evaluate: --model NAME, --weights PATH or --bicubic")
    if args.param_key and not args.weights:
        raise UsageError("--param-key applies to --weights only")
    out: list[tuple[str, torch.nn.Module | None, str | None]] = []
    for name in args.model:
        out.append((name, bundled_model(name, args.scale), None))
    for spec in args.weights:
        label, model = load_spec(spec, args.scale, param_key=args.param_key, allow_names=False, option="--weights")
        out.append((label, model, split_spec(spec)[1]))
    if args.bicubic:
        if not args.scale and not out:
            raise UsageError("--bicubic needs --scale")
        out.insert(0, ("bicubic", None, None))
    labels = unique_labels([label for label, _, _ in out])
    return [(label, m, w) for label, (_, m, w) in zip(labels, out, strict=True)]


def run_cli(args: argparse.Namespace) -> int:
    from lightsr._files import check_creatable
    from lightsr.upscaler import resolve_device

    # Everything that can be wrong is checked before the first model runs: a typo in the last set name or
    # the output path must not cost a whole evaluation.
    if args.plot:
        from lightsr.figures import check_figure_path

        check_figure_path(args.plot, "--plot")
    device = resolve_device(args.device)
    check_sets(args.data, args.sets, "--data, --sets")
    if args.output:
        check_creatable(args.output, "--output")
    if args.save_images:
        check_creatable(Path(args.save_images) / "x", "--save-images")
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
                from lightsr.profile import profile

                prof = profile(model)
                complexity = (prof.params, prof.macs)
            model = model.to(device).eval()
            if not args.no_fuse:
                model = model.fuse()
        save_dir = args.save_images and (Path(args.save_images) / label if several else args.save_images)
        results = evaluate(model, args.data, args.sets, scale, gray_mode=args.gray_mode, test_y=not args.rgb,
                           self_ensemble=args.self_ensemble, save_dir=save_dir,
                           progress=not args.no_progress)
        print(markdown_table(results, label))
        if args.output:
            meta = {"model": label, "arch": arch,
                    "weights": weights, "scale": scale, "gray_mode": args.gray_mode,
                    "metric_space": "RGB" if args.rgb else "Y", "self_ensemble": args.self_ensemble}
            base = args.output[:-5] if args.output.endswith(".json") else args.output.removesuffix(".csv")
            out = f"{base}-{label}" if several else args.output
            for p in write_reports(results, out, meta):
                print(f"wrote {p}", file=sys.stderr)
        if args.plot:
            from lightsr.figures import ComplexityPoint

            points.append(ComplexityPoint(label, *(complexity or (None, None)), {r.set: r.psnr for r in results}))
    if args.plot:
        from lightsr.figures import complexity_plot

        res = complexity_plot(points, args.plot, scale)
        print(f"wrote {res.path}", file=sys.stderr)
    return 0
