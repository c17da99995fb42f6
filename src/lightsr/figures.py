"""Figures people look at instead of tables: :func:`compare_figure` (``lightsr compare``) and the
PSNR-vs-complexity plot of ``lightsr eval --plot`` (:func:`complexity_plot`); the commands are in
:mod:`lightsr.commands`.

:func:`compare_figure` draws what SR papers show: the HR image with a marked region, then that region zoomed
(nearest neighbour, so pixels stay pixels) for HR, bicubic and each model, with each method's PSNR under its
crop. The LR input is made from the HR image with the MATLAB-exact bicubic downscale
(:func:`lightsr.resize.imresize`), as in the benchmark protocol, unless an LR image is given.

matplotlib is an optional extra (``pip install "lightsr[plot]"``); it is imported only here, through its
object-oriented API (``Figure`` + the Agg canvas), so no global backend state is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightsr._files import atomic_write, check_creatable
from lightsr.errors import UsageError


@dataclass
class Panel:
    """One drawn panel: its title and where it lies in the saved image, in pixels ``(left, top, right, bottom)``."""

    title: str
    box: tuple[int, int, int, int]
    psnr: float | None = None


@dataclass
class FigureResult:
    """A figure written to ``path``: its pixel size and the panels drawn."""
    path: Path
    size: tuple[int, int]  # (width, height) of the saved image in pixels
    panels: list[Panel] = field(default_factory=list)


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError('drawing figures needs matplotlib: pip install "lightsr[plot]"') from None
    return Figure, FigureCanvasAgg


def check_figure_path(path: str | Path, option: str) -> str:
    """The figure format ``path``'s extension asks for; a one-line error naming ``option`` if none is usable.

    Called before any work, so that a typo costs nothing; also checks that matplotlib is installed.
    """
    check_creatable(path, option)
    Figure, FigureCanvasAgg = _matplotlib()
    supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in supported:
        raise UsageError(f"{option} {path}: the file name must end with one of "
                         f"{', '.join('.' + k for k in sorted(supported))}")
    return fmt


def _save(fig: Any, canvas: Any, path: Path, axes: list[tuple[Any, str, float | None]], dpi: int) -> FigureResult:
    """Save ``fig`` atomically and report each axis' pixel box in the saved image (no ``bbox_inches``: boxes
    stay exact)."""
    fmt = check_figure_path(path, "output")
    fig.set_dpi(dpi)
    canvas.draw()
    width, height = canvas.get_width_height()
    panels = []
    for ax, title, psnr in axes:
        x0, y0, x1, y1 = ax.get_window_extent().extents
        panels.append(Panel(title, (int(np.ceil(x0)), int(np.ceil(height - y1)), int(x1), int(height - y0)), psnr))
    with atomic_write(path) as tmp:  # complete or absent; a failed write is one line naming the file
        fig.savefig(tmp, dpi=dpi, format=fmt)
    return FigureResult(path, (width, height), panels)


# ------------------------------------------------------------------------------------------------- compare


def unique_labels(labels: list[str]) -> list[str]:
    """``labels`` with repeats made distinct (``a``, ``a-2``, …), never colliding with a given label."""
    taken = set(labels)
    out: list[str] = []
    for label in labels:
        if label not in out:
            out.append(label)
            continue
        k = 2
        while f"{label}-{k}" in taken or f"{label}-{k}" in out:
            k += 1
        out.append(f"{label}-{k}")
    return out


def read_rgb(path: str | Path) -> np.ndarray:
    """uint8 pixels of an image file for a figure (EXIF orientation applied, 16-bit rounded, alpha dropped)."""
    from lightsr.imageio import load_image, to_uint8

    px = to_uint8(load_image(path).pixels)
    if px.ndim == 3 and px.shape[2] in (2, 4):  # gray+alpha / RGBA: the colour channels only
        px = px[..., :-1]
    return px[..., 0] if px.ndim == 3 and px.shape[2] == 1 else px


def pick_crop(hr: np.ndarray, bicubic: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """The ``size``×``size`` window (x, y, w, h) where bicubic is furthest from HR: where SR has work to do."""
    err = (hr.astype(np.float64) - bicubic.astype(np.float64)) ** 2
    err = err.sum(axis=2) if err.ndim == 3 else err
    h, w = err.shape
    size = min(size, h, w)
    integral = np.pad(err.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = (integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size])
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(x), int(y), size, size


def compare_figure(
    hr: np.ndarray,
    models: Sequence[tuple[str, Any]],
    out: str | Path,
    scale: int = 4,
    crop: tuple[int, int, int, int] | None = None,
    lr: np.ndarray | None = None,
    dpi: int = 100,
    degrade: str | None = None,
    degrade_key: str = "compare",
) -> FigureResult:
    """Side-by-side zoomed crops of HR, bicubic and each ``(label, model)`` with Y-PSNR (crop border = scale).

    ``hr``: uint8 ``H×W×3`` (or ``H×W``); it is modcropped to a multiple of ``scale``. ``crop``: ``(x, y, w, h)``
    in HR pixels (default: the square where bicubic errs most). ``lr``: the LR input (default: MATLAB bicubic
    downscale of ``hr``). ``models``: anything :class:`lightsr.Upscaler` accepts (an SRNet, a name, a path).
    ``degrade``: a :func:`lightsr.degradations.parse_degrade` spec applied to the LR input, its noise seeded by
    ``degrade_key`` (the command line passes the image's name), named in the HR panel's title.
    """
    from lightsr.metrics import calculate_psnr
    from lightsr.resize import imresize, modcrop
    from lightsr.upscaler import Upscaler

    Figure, FigureCanvasAgg = _matplotlib()
    hr = np.asarray(hr)
    if hr.dtype != np.uint8 or hr.ndim not in (2, 3):
        raise UsageError(f"HR image must be uint8 H×W or H×W×3, got {hr.dtype} {hr.shape}")
    if min(hr.shape[:2]) < 4 * scale:
        raise UsageError(f"HR image {hr.shape[1]}×{hr.shape[0]} is too small to compare at ×{scale} "
                         f"(at least {4 * scale}×{4 * scale})")
    hr = modcrop(np.repeat(hr[..., None], 3, axis=2) if hr.ndim == 2 else hr[..., :3], scale)
    if lr is None:
        lr = imresize(hr, 1 / scale)
    lr = np.repeat(lr[..., None], 3, axis=2) if lr.ndim == 2 else lr[..., :3]
    if degrade:
        from lightsr.degradations import apply_degrade, parse_degrade

        lr = apply_degrade(lr, parse_degrade(degrade), degrade_key)
    if (lr.shape[0] * scale, lr.shape[1] * scale) != hr.shape[:2]:
        raise UsageError(f"--lr: LR image {lr.shape[1]}×{lr.shape[0]} ×{scale} does not match the HR image "
                         f"{hr.shape[1]}×{hr.shape[0]} (after cropping to a multiple of {scale})")
    if crop is not None:
        x, y, w, h = crop
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > hr.shape[1] or y + h > hr.shape[0]:
            raise UsageError(f"--crop {x},{y},{w},{h} lies outside the {hr.shape[1]}×{hr.shape[0]} HR image")
    labels = unique_labels(["HR", "bicubic", *(label for label, _ in models)])
    images = [hr, imresize(lr, scale)] + [Upscaler(model, scale=scale).upscale(lr) for _, model in models]
    # Index 0 is the reference: every other panel gets its PSNR against it.
    results = [(label, img, None if i == 0 else calculate_psnr(img, hr, crop_border=scale, test_y=True))
               for i, (label, img) in enumerate(zip(labels, images, strict=True))]
    if crop is None:
        crop = pick_crop(hr, images[1], max(16, min(hr.shape[:2]) // 4))
    x, y, w, h = crop

    n = len(results)
    cols = (n + 1) // 2
    panel_in = 2.0  # inches per crop panel
    overview_w = 2 * panel_in * hr.shape[1] / hr.shape[0]
    fig = Figure(figsize=(overview_w + cols * panel_in + 0.4, 2 * panel_in + 0.9))
    canvas = FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, cols + 1, width_ratios=[overview_w / panel_in] + [1] * cols,
                            left=0.01, right=0.99, bottom=0.06, top=0.93, wspace=0.06, hspace=0.28)
    axes: list[tuple[Any, str, float | None]] = []
    ov = fig.add_subplot(grid[:, 0])
    ov.imshow(hr, interpolation="lanczos")
    from matplotlib.patches import Rectangle

    ov.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="red", linewidth=1.5))
    ov.set_title(f"HR {hr.shape[1]}×{hr.shape[0]}, ×{scale}" + (f", LR {degrade}" if degrade else ""), fontsize=9)
    ov.set_axis_off()
    for i, (label, img, psnr) in enumerate(results):
        ax = fig.add_subplot(grid[i // cols, 1 + i % cols])
        ax.imshow(img[y:y + h, x:x + w], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("reference" if psnr is None else f"{psnr:.2f} dB (Y)", fontsize=9)
        axes.append((ax, label, psnr))
    return _save(fig, canvas, Path(out), axes, dpi)


# ---------------------------------------------------------------------------------------- PSNR vs complexity


@dataclass
class ComplexityPoint:
    """One method on the PSNR-vs-cost figure: its label, parameters and multiply-adds."""
    label: str
    params: int | None  # None: the bicubic baseline (drawn as a line)
    macs: int | None
    psnr: dict[str, float]  # set name -> PSNR


def complexity_plot(points: Sequence[ComplexityPoint], out: str | Path, scale: int, dpi: int = 100) -> FigureResult:
    """PSNR against parameters and against multiply-adds (the papers' usual figure), one row per set."""
    Figure, FigureCanvasAgg = _matplotlib()
    sets = list(dict.fromkeys(s for p in points for s in p.psnr))
    if not sets:
        raise UsageError("nothing to plot: no evaluated sets")
    fig = Figure(figsize=(9.0, 3.2 * len(sets)))
    canvas = FigureCanvasAgg(fig)
    axes: list[tuple[Any, str, float | None]] = []
    models = [p for p in points if p.params is not None]
    colors = [f"C{i % 10}" for i in range(len(models))]
    for r, set_name in enumerate(sets):
        for c, (attr, unit, div) in enumerate((("params", "parameters (K)", 1e3), ("macs", "multiply-adds (G)", 1e9))):
            ax = fig.add_subplot(len(sets), 2, 2 * r + c + 1)
            for p, color in zip(models, colors, strict=True):
                if set_name in p.psnr:
                    xv = getattr(p, attr) / div
                    ax.scatter([xv], [p.psnr[set_name]], s=60, color=color, zorder=3)
                    ax.annotate(p.label, (xv, p.psnr[set_name]), textcoords="offset points", xytext=(5, 4),
                                fontsize=8)
            for p in points:
                if p.params is None and set_name in p.psnr:
                    ax.axhline(p.psnr[set_name], color="gray", linestyle="--", linewidth=1)
                    ax.annotate(p.label, (0.01, p.psnr[set_name]), xycoords=("axes fraction", "data"),
                                textcoords="offset points", xytext=(0, 3), fontsize=8, color="gray")
            ax.set_xlabel(f"{unit}" + (" for a 1280×720 output" if attr == "macs" else ""), fontsize=9)
            ax.set_ylabel(f"PSNR (dB), {set_name} ×{scale}", fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.margins(x=0.25, y=0.2)
            axes.append((ax, f"{set_name} vs {attr}", None))
    fig.tight_layout()
    return _save(fig, canvas, Path(out), axes, dpi)
