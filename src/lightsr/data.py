"""Training data: random aligned LR/HR patches from image folders, reproducible per seed.

Two sources:

* **HR folders only** (any number): the LR patch is made on the fly by MATLAB-exact bicubic
  (:func:`lightsr.resize.imresize`, uint8 path), so it is bit-identical to the corresponding window of
  ``imresize(modcrop(HR, s), 1/s)`` — the LR the benchmarks and DIV2K's ``LR_bicubic`` use. To get that
  equality and not a patch with its own mirrored borders, a margin of :data:`LR_MARGIN` LR pixels of HR context is
  resized with the patch and cut off afterwards (at the image border there is no margin, and MATLAB mirrors
  there too).
* **Paired HR/LR folders**: LR files are matched to HR files by name (``0001.png`` ↔ ``0001.png`` or
  ``0001x4.png``, DIV2K's naming); the HR may be larger than ``s·LR`` (not modcropped), the extra is ignored.

Sampling is a pure function: the crop and flips of the sample at ``(epoch, index)`` come from a generator seeded
by ``(seed, epoch, index)``, and the order of an epoch from one seeded by ``(seed, epoch)``
(:class:`IterationBatchSampler`). Nothing depends on worker processes, their number or on what came before, so a
resumed run draws exactly the batches the uninterrupted run would have.

Images are decoded once into RAM while they fit in ``cache_max_bytes`` (in the main process before the
DataLoader forks, so workers share the pages); the rest are decoded at each use. Images too small for a patch
are skipped with one warning that lists them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lightsr.degradations import DegradationConfig, degrade_downscaled, degrade_real
from lightsr.errors import DatasetError
from lightsr.imageio import INPUT_EXTENSIONS, read_image
from lightsr.resize import imresize

__all__ = [
    "LR_MARGIN",
    "DatasetError",
    "ImageCache",
    "IterationBatchSampler",
    "SRPatchDataset",
    "augment",
    "list_images",
]

log = logging.getLogger("lightsr")

# LR pixels of context resized with a patch: MATLAB's antialiased cubic kernel for 1/s spans 4·s HR pixels, i.e.
# ±2 LR pixels around each output pixel, so 2 suffices; one more keeps us clear of the rounding of its edges.
LR_MARGIN = 3

# LR pixels of context degraded with a patch on the real-world track: covers the first stage's largest blur
# (21 HR pixels: 10 on each side, 2.5 LR pixels at ×4) and part of the later ones at LR size, at 1.6× the area
# of a 32-pixel patch (the blur dominates the cost of a sample).
DEGRADE_MARGIN = 4

# Domain tags keep the generators for epoch order and per-sample crops from ever sharing a seed sequence.
_ORDER_STREAM, _SAMPLE_STREAM, _DEGRADE_STREAM = 1, 2, 3


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; an error names a missing or empty folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: training data folder not found")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in INPUT_EXTENSIONS and p.is_file())
    if not paths:
        raise DatasetError(f"{folder}: no images ({', '.join(INPUT_EXTENSIONS)})")
    return paths


def _image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from the file header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read image ({e})") from None
    return h, w


def _decode(path: Path) -> np.ndarray:
    # Grayscale files become 3 equal channels: the networks are RGB and so is the loss.
    img = read_image(path, "RGB")
    return np.ascontiguousarray(img)


class ImageCache:
    """Decoded uint8 images by index: held in RAM up to a byte budget, the rest decoded at every access."""

    def __init__(self, paths: Sequence[Path], sizes: Sequence[tuple[int, int]], max_bytes: int,
                 threads: int = 0) -> None:
        self.paths = list(paths)
        self._arrays: dict[int, np.ndarray] = {}
        budget, chosen = max_bytes, []
        for i, (h, w) in enumerate(sizes):
            need = h * w * 3
            if need <= budget:
                chosen.append(i)
                budget -= need
        self.cached_bytes = max_bytes - budget
        # PIL releases the GIL while decoding, so threads give a real speed-up on the one-off preload.
        n = threads or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=n) as pool:
            for i, arr in zip(chosen, pool.map(lambda j: _decode(self.paths[j]), chosen), strict=True):
                if arr.shape[:2] != tuple(sizes[i]):
                    raise DatasetError(f"{self.paths[i]}: decoded size {arr.shape[1]}×{arr.shape[0]} differs "
                                       f"from its header {sizes[i][1]}×{sizes[i][0]}")
                self._arrays[i] = arr

    @property
    def num_cached(self) -> int:
        return len(self._arrays)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        arr = self._arrays.get(i)
        return arr if arr is not None else _decode(self.paths[i])


def augment(arrays: Sequence[np.ndarray], hflip: bool, vflip: bool, transpose: bool) -> list[np.ndarray]:
    """Apply the same flips / transpose to HWC arrays (BasicSR's ``augment`` with ``rot90`` as a transpose)."""
    out = []
    for a in arrays:
        if hflip:
            a = a[:, ::-1]
        if vflip:
            a = a[::-1]
        if transpose:
            a = a.transpose(1, 0, 2)
        out.append(np.ascontiguousarray(a))
    return out


@dataclass(frozen=True)
class _Item:
    hr: int  # index into the HR cache
    lr: int | None  # index into the LR cache (paired mode)
    hr_size: tuple[int, int]  # (h, w) as used: modcropped HR, or s·LR in paired mode
    lr_size: tuple[int, int]


class SRPatchDataset(Dataset):
    """Random aligned ``(LR, HR)`` patches; ``len = images × repeat``.

    Items are uint8 tensors ``3×p×p`` (LR, ``p = patch_size / scale``) and ``3×P×P`` (HR, ``P = patch_size``);
    the trainer converts them to float on the device, which keeps host-to-device copies 4× smaller.
    Index with ``(epoch, index)`` (what :class:`IterationBatchSampler` yields) or a plain ``index`` (epoch 0).
    """

    def __init__(self, hr_dirs: Sequence[str | Path], scale: int, patch_size: int,
                 lr_dirs: Sequence[str | Path] = (), repeat: int = 1, hflip: bool = True, rot: bool = True,
                 seed: int = 0, cache_max_bytes: int = 4 << 30, verbose: bool = True,
                 degradation: DegradationConfig | None = None) -> None:
        if patch_size % scale:
            raise DatasetError(f"patch size {patch_size} is not a multiple of the scale {scale}")
        if lr_dirs and len(lr_dirs) != len(hr_dirs):
            raise DatasetError(f"{len(lr_dirs)} LR folders for {len(hr_dirs)} HR folders")
        self.scale, self.patch_size, self.lr_patch = scale, patch_size, patch_size // scale
        self.repeat, self.hflip, self.rot, self.seed = repeat, hflip, rot, seed
        self.paired = bool(lr_dirs)
        self.degradation = degradation if degradation is not None and degradation.type != "bicubic" else None
        if self.degradation is not None and self.paired:
            raise DatasetError("degradations make LR from HR folders; paired LR folders are used as they are")

        hr_paths: list[Path] = []
        lr_paths: list[Path] = []
        for k, hd in enumerate(hr_dirs):
            found = list_images(hd)
            hr_paths += found
            if self.paired:
                lr_paths += _match_lr(found, Path(lr_dirs[k]), scale)
        hr_sizes = [_image_size(p) for p in hr_paths]
        lr_sizes = [_image_size(p) for p in lr_paths]

        items, small = [], []
        for i, (h, w) in enumerate(hr_sizes):
            if self.paired:
                lh, lw = lr_sizes[i]
                if h < lh * scale or w < lw * scale:
                    raise DatasetError(f"{hr_paths[i]}: HR {w}×{h} is smaller than ×{scale} its LR "
                                       f"{lr_paths[i].name} ({lw}×{lh})")
                lr_hw = (lh, lw)
            else:
                lr_hw = (h // scale, w // scale)
            if min(lr_hw) < self.lr_patch:
                small.append(hr_paths[i])
                continue
            items.append(_Item(i, i if self.paired else None, (lr_hw[0] * scale, lr_hw[1] * scale), lr_hw))
        if small and verbose:
            names = ", ".join(str(p) for p in small[:20]) + (f" and {len(small) - 20} more" if len(small) > 20 else "")
            log.warning("skipping %d training image(s) smaller than the %d×%d HR patch: %s",
                        len(small), patch_size, patch_size, names)
        if not items:
            raise DatasetError(f"{', '.join(map(str, hr_dirs))}: no image is large enough for a "
                               f"{patch_size}×{patch_size} HR patch at ×{scale}")
        self.items = items
        self.skipped = small

        # Only the images in use are cached; the budget is shared, HR first (LR is 1/s² of it).
        used = [it.hr for it in items]
        self._hr_index = {j: n for n, j in enumerate(used)}
        self.hr_cache = ImageCache([hr_paths[j] for j in used], [hr_sizes[j] for j in used], cache_max_bytes)
        self.lr_cache = None
        if self.paired:
            rest = max(0, cache_max_bytes - self.hr_cache.cached_bytes)
            self.lr_cache = ImageCache([lr_paths[j] for j in used], [lr_sizes[j] for j in used], rest)
        if verbose and self.hr_cache.num_cached < len(used):
            log.warning("image cache (data.cache_max_bytes = %d) holds %d of %d training images; the others are "
                        "decoded at every sample", cache_max_bytes, self.hr_cache.num_cached, len(used))

    @property
    def num_images(self) -> int:
        return len(self.items)

    def __len__(self) -> int:
        return len(self.items) * self.repeat

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        lr, hr = self.sample(int(epoch), int(index))
        return (torch.from_numpy(lr.transpose(2, 0, 1).copy()), torch.from_numpy(hr.transpose(2, 0, 1).copy()))

    def sample(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 HWC ``(lr, hr)`` for ``(epoch, index)``: a function of ``(seed, epoch, index)`` only."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} out of range for {len(self)} samples")
        n = index % len(self.items)
        item = self.items[n]
        rng = np.random.default_rng((self.seed, _SAMPLE_STREAM, epoch, index))
        s, p = self.scale, self.lr_patch
        ly = int(rng.integers(0, item.lr_size[0] - p + 1))
        lx = int(rng.integers(0, item.lr_size[1] - p + 1))
        flips = rng.random(3) < 0.5  # always drawn, so switching an augmentation off changes nothing else
        hr_img = self.hr_cache[self._hr_index[item.hr]]
        hr = hr_img[ly * s:(ly + p) * s, lx * s:(lx + p) * s]
        if self.paired:
            assert self.lr_cache is not None
            lr = self.lr_cache[self._hr_index[item.hr]][ly:ly + p, lx:lx + p]
        elif self.degradation is not None:
            lr = self._degraded_patch(hr_img, ly, lx, item.lr_size, (self.seed, _DEGRADE_STREAM, epoch, index))
        else:
            lr = bicubic_lr_patch(hr_img, s, ly, lx, p, item.lr_size)
        return tuple(augment((lr, hr), flips[0] and self.hflip, flips[1] and self.rot, flips[2] and self.rot))


    def _degraded_patch(self, hr_img: np.ndarray, ly: int, lx: int, lr_size: tuple[int, int],
                        seed: tuple[int, ...]) -> np.ndarray:
        """The LR patch at ``(ly, lx)`` through the real-world track, from a region with up to
        :data:`DEGRADE_MARGIN` LR pixels of context on each side (so that blur and resize see real neighbours,
        not reflected borders), drawn from its own generator (the crop and flips stay those of the bicubic track)."""
        assert self.degradation is not None
        rng = np.random.default_rng(seed)
        s, p = self.scale, self.lr_patch
        u = rng.random()  # one draw picks the path, so that a config without downscaled_prob samples as before
        if u < self.degradation.clean_prob:
            return bicubic_lr_patch(hr_img, s, ly, lx, p, lr_size)
        if u < self.degradation.clean_prob + self.degradation.downscaled_prob:
            return degrade_downscaled(bicubic_lr_patch(hr_img, s, ly, lx, p, lr_size), self.degradation, rng)
        y0, x0 = max(0, ly - DEGRADE_MARGIN), max(0, lx - DEGRADE_MARGIN)
        y1, x1 = min(lr_size[0], ly + p + DEGRADE_MARGIN), min(lr_size[1], lx + p + DEGRADE_MARGIN)
        lr = degrade_real(hr_img[y0 * s:y1 * s, x0 * s:x1 * s], s, self.degradation, rng)
        return lr[ly - y0:ly - y0 + p, lx - x0:lx - x0 + p]


def bicubic_lr_patch(hr: np.ndarray, scale: int, ly: int, lx: int, size: int,
                     lr_size: tuple[int, int] | None = None) -> np.ndarray:
    """The ``size×size`` window at ``(ly, lx)`` of ``imresize(modcrop(hr, scale), 1/scale)``, computed from a
    small neighbourhood only (uint8, bit-exact with the whole-image result)."""
    lh, lw = lr_size if lr_size is not None else (hr.shape[0] // scale, hr.shape[1] // scale)
    y0, x0 = max(0, ly - LR_MARGIN), max(0, lx - LR_MARGIN)
    y1, x1 = min(lh, ly + size + LR_MARGIN), min(lw, lx + size + LR_MARGIN)
    region = hr[y0 * scale:y1 * scale, x0 * scale:x1 * scale]
    lr = imresize(region, 1 / scale)
    return lr[ly - y0:ly - y0 + size, lx - x0:lx - x0 + size]


def _match_lr(hr_paths: Sequence[Path], lr_dir: Path, scale: int) -> list[Path]:
    """LR file of each HR file: same stem, or the stem with DIV2K's ``x<scale>`` suffix."""
    by_stem: dict[str, Path] = {}
    for p in list_images(lr_dir):
        by_stem.setdefault(p.stem, p)
    out = []
    for hp in hr_paths:
        lp = by_stem.get(hp.stem) or by_stem.get(f"{hp.stem}x{scale}")
        if lp is None:
            raise DatasetError(f"{lr_dir}: no LR image for {hp.name} (looked for {hp.stem}.* and "
                               f"{hp.stem}x{scale}.*)")
        out.append(lp)
    return out


class IterationBatchSampler(Sampler[list[tuple[int, int]]]):
    """This process's share of the global batch for iterations ``start_iter .. max_iters - 1``.

    Epoch ``e`` is a permutation of the ``num_samples`` indices drawn from ``(seed, e)``; iteration ``i`` takes
    global batch ``i mod B`` of epoch ``i div B`` (``B = num_samples // global_batch`` batches, the incomplete
    last one dropped), and rank ``r`` of ``W`` takes the ``r``-th contiguous ``global_batch / W`` of it. The
    global batch of an iteration is therefore the same for any number of processes, and starting at
    ``start_iter`` yields exactly what an uninterrupted run yields from there on.
    """

    def __init__(self, num_samples: int, global_batch: int, seed: int, max_iters: int, start_iter: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {world_size} processes")
        if num_samples < global_batch:
            raise DatasetError(f"only {num_samples} training samples (images × repeat) for a batch of "
                               f"{global_batch}; raise data.repeat")
        self.num_samples, self.global_batch, self.seed = num_samples, global_batch, seed
        self.start_iter, self.max_iters = start_iter, max_iters
        self.rank, self.world_size = rank, world_size
        self.per_rank = global_batch // world_size
        self.iters_per_epoch = num_samples // global_batch
        self._perm: tuple[int, np.ndarray] | None = None

    def epoch_of(self, iteration: int) -> int:
        """The epoch (pass over a fresh permutation of the samples) that 0-based ``iteration`` falls in."""
        return iteration // self.iters_per_epoch

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng((self.seed, _ORDER_STREAM, epoch)).permutation(self.num_samples))
        return self._perm[1]

    def global_batch_at(self, iteration: int) -> list[tuple[int, int]]:
        """``(epoch, sample index)`` of every sample of ``iteration``'s global batch, all ranks together."""
        epoch, k = divmod(iteration, self.iters_per_epoch)
        idx = self._permutation(epoch)[k * self.global_batch:(k + 1) * self.global_batch]
        return [(epoch, int(i)) for i in idx]

    def batch_at(self, iteration: int) -> list[tuple[int, int]]:
        """This rank's share of :meth:`global_batch_at` (contiguous, ``batch_size / world_size`` samples)."""
        g = self.global_batch_at(iteration)
        return g[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start_iter, self.max_iters):
            yield self.batch_at(it)

    def __len__(self) -> int:
        return max(0, self.max_iters - self.start_iter)
