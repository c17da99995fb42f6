"""Benchmark evaluation under the papers' protocol: :func:`evaluate` (the ``lightsr eval`` command is
:mod:`lightsr.commands.eval`).

Per image: the LR input (the MATLAB-made one of an EDSR-layout set, or MATLAB-exact ``imresize`` of the
modcropped HR for a plain HR folder) goes through the network, the output is rounded to uint8, and PSNR/SSIM are
computed on Y with ``crop_border = scale`` (:mod:`lightsr.metrics`). Set averages are per-image means.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from lightsr._files import atomic_write
from lightsr.errors import DatasetError, UsageError
from lightsr.imageio import (
    INPUT_EXTENSIONS,
    ImageReadError,
    array_to_tensor,
    read_image,
    save_image,
    tensor_to_array,
)
from lightsr.metrics import GrayMode, calculate_psnr, calculate_ssim
from lightsr.resize import imresize, modcrop


@dataclass
class ImageScore:
    """Y-PSNR and SSIM of one image of a set."""
    name: str
    psnr: float
    ssim: float


@dataclass
class SetScore:
    """Mean Y-PSNR and SSIM of a set at a scale, with every image's scores."""
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
    """An HR image and its LR input (uint8), as :func:`load_set` reads them."""
    name: str
    hr: np.ndarray  # uint8, HxWx3 or HxW (grayscale stays 2-D so that gray_mode can see it)
    lr: np.ndarray


def _read(path: Path) -> np.ndarray:
    """uint8 HxWx3 for colour images, HxW for single-channel ones."""
    try:
        return read_image(path, "auto")
    except ImageReadError as e:
        raise DatasetError(str(e)) from None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in INPUT_EXTENSIONS)


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
    # PSNR/SSIM skip a scale-pixel border and SSIM needs an 11×11 window inside: the smallest HR image scored.
    need = -(-(2 * scale + 11) // scale) * scale
    for hp in hr_paths:
        hr = _read(hp)
        if min(hr.shape[:2]) < need:
            raise DatasetError(f"{hp}: {hr.shape[1]}×{hr.shape[0]} pixels is too small to score at ×{scale} "
                               f"(at least {need}×{need}: PSNR/SSIM skip a {scale}-pixel border, SSIM needs 11×11)")
        hr = modcrop(hr, scale)
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
    # Gray benchmark images go through the network as replicated RGB.
    rgb = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
    return array_to_tensor(rgb).unsqueeze(0).to(device)


_ENSEMBLE = [(rot, flip) for rot in range(4) for flip in (False, True)]


@torch.inference_mode()
def super_resolve(model: torch.nn.Module, lr: np.ndarray, self_ensemble: bool = False) -> np.ndarray:
    """SR of one uint8 image; with ``self_ensemble`` the mean over the 8 flips/rotations (EDSR's x8).
    ``model``: a network, or a :class:`lightsr.runtimes.Runtime` (which carries its device)."""
    device = model.device if isinstance(getattr(model, "device", None), torch.device) else next(
        model.parameters()).device
    x = _to_tensor(lr, device)
    if not self_ensemble:
        return tensor_to_array(model(x)[0])
    acc = None
    for rot, flip in _ENSEMBLE:
        xi = torch.rot90(x, rot, dims=(2, 3))
        xi = torch.flip(xi, dims=(3,)) if flip else xi
        yi = model(xi)
        yi = torch.flip(yi, dims=(3,)) if flip else yi
        yi = torch.rot90(yi, -rot, dims=(2, 3))
        acc = yi if acc is None else acc + yi
    return tensor_to_array((acc / len(_ENSEMBLE))[0])


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
    degrade: str | None = None,
) -> list[SetScore]:
    """PSNR/SSIM of ``model`` (``None``: the bicubic baseline) on each set; per-image scores included.

    ``degrade`` (e.g. ``"noise:10,jpeg:60"``, :func:`lightsr.degradations.parse_degrade`) is applied to every LR
    image first, seeded by ``<set>/<image name>``, so every run and machine scores the same inputs."""
    from tqdm import tqdm

    ops = None
    if degrade:
        from lightsr.degradations import apply_degrade, parse_degrade

        ops = parse_degrade(degrade)

    if model is not None and getattr(model, "scale", scale) != scale:
        raise UsageError(f"--scale {scale} does not match the model's ×{model.scale}")
    results = []
    for set_name in sets:
        images = load_set(data_root, set_name, scale)
        scores = []
        bar = tqdm(images, desc=f"{set_name} ×{scale}", disable=None if progress else True, leave=False,
                   file=sys.stderr)
        for im in bar:
            lr = im.lr if ops is None else apply_degrade(im.lr, ops, f"{set_name}/{im.name}")
            if model is None:
                sr = imresize(lr, scale)
            else:
                sr = super_resolve(model, lr, self_ensemble)
                if im.hr.ndim == 2 and gray_mode == "raw":
                    # The network sees the gray image as RGB; its gray answer is the channel mean.
                    sr = np.round(sr.astype(np.float64).mean(axis=2)).astype(np.uint8)
            hr = im.hr
            if sr.ndim != hr.ndim:
                hr = np.repeat(hr[..., None], 3, axis=2)
            if save_dir is not None:
                save_image(Path(save_dir) / set_name / f"{im.name}.png", sr)  # atomic; errors name the file
            scores.append(ImageScore(
                im.name,
                calculate_psnr(sr, hr, crop_border=scale, test_y=test_y, gray_mode=gray_mode),
                calculate_ssim(sr, hr, crop_border=scale, test_y=test_y, gray_mode=gray_mode),
            ))
        results.append(SetScore(set_name, scale, float(np.mean([s.psnr for s in scores])),
                                float(np.mean([s.ssim for s in scores])), scores))
    return results


def markdown_table(results: list[SetScore], label: str, degrade: str | None = None) -> str:
    """One row per set; with ``degrade`` a column names the degradation of the LR inputs."""
    d_head, d_sep, d_cell = (" LR degraded by |", "---|", f" {degrade} |") if degrade else ("", "", "")
    lines = [f"| {label} |{d_head} set | scale | PSNR | SSIM | images |", f"|---|{d_sep}---|---|---|---|---|"]
    lines += [f"| {label} |{d_cell} {r.set} | ×{r.scale} | {r.psnr:.4f} | {r.ssim:.4f} | {r.count} |"
              for r in results]
    return "\n".join(lines)


def write_reports(results: list[SetScore], out: str | Path, meta: dict) -> tuple[Path, Path]:
    """``<out>.json`` (summary + per-image) and ``<out>.csv`` (one row per image)."""
    base = str(out)
    if base.endswith((".json", ".csv")):
        base = base.rsplit(".", 1)[0]
    jpath, cpath = Path(base + ".json"), Path(base + ".csv")
    payload = {**meta, "sets": [{**asdict(r), "count": r.count} for r in results]}
    rows = io.StringIO(newline="")
    w = csv.writer(rows)
    w.writerow(["set", "scale", "image", "psnr", "ssim"])
    for r in results:
        for s in r.images:
            w.writerow([r.set, r.scale, s.name, f"{s.psnr:.6f}", f"{s.ssim:.6f}"])
    for path, text in ((jpath, json.dumps(payload, indent=1)), (cpath, rows.getvalue())):
        with atomic_write(path) as tmp:  # a report is complete or absent, never half-written
            with tmp.open("w", newline="") as f:
                f.write(text)
    return jpath, cpath

