"""Training data: MATLAB-exact LR patches, alignment, augmentation, deterministic sampling, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import require_shared
from lightsr.data import (
    DatasetError,
    IterationBatchSampler,
    SRPatchDataset,
    bicubic_lr_patch,
    list_images,
)
from lightsr.errors import LightSRError
from lightsr.imageio import read_image
from lightsr.resize import imresize, modcrop


def _write(folder: Path, name: str, arr: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    Image.fromarray(arr).save(p)
    return p


def _random_images(folder: Path, sizes, seed=0) -> list[Path]:
    rng = np.random.default_rng(seed)
    out = []
    for i, (h, w) in enumerate(sizes):
        # Smooth-ish content (low-pass noise) so that bicubic rounding is exercised like on real images.
        base = rng.integers(0, 256, (h // 4 + 2, w // 4 + 2, 3)).astype(np.float64)
        img = np.asarray(Image.fromarray(base.astype(np.uint8)).resize((w, h), Image.BILINEAR))
        img = np.clip(img.astype(np.int16) + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
        out.append(_write(folder, f"img{i:03d}.png", img))
    return out


# ------------------------------------------------------------------------------------------ LR patches


def test_lr_patch_is_the_window_of_the_whole_image_lr():
    """On-the-fly LR patches equal the corresponding window of imresize(modcrop(HR, s), 1/s), bit for bit."""
    t91 = require_shared("data/train/T91")
    bsd = require_shared("data/train/BSD200")
    paths = list_images(t91)[:3] + list_images(bsd)[:2]
    rng = np.random.default_rng(1)
    n = 0
    for p in paths:
        hr = read_image(p)
        for s in (2, 3, 4):
            full = imresize(modcrop(hr, s), 1 / s)
            lh, lw = full.shape[:2]
            for size in (8, 24):
                corners = [(0, 0), (lh - size, lw - size), (0, lw - size), (lh - size, 0)]
                spots = corners + [(int(rng.integers(0, lh - size + 1)), int(rng.integers(0, lw - size + 1)))
                                   for _ in range(6)]
                for ly, lx in spots:
                    got = bicubic_lr_patch(hr, s, ly, lx, size)
                    np.testing.assert_array_equal(got, full[ly:ly + size, lx:lx + size], err_msg=f"{p} ×{s}")
                    n += 1
    assert n == 5 * 3 * 2 * 10
    # The margin matters: resizing the bare HR patch (mirrored at the patch edge) is not the benchmark's LR.
    hr = read_image(paths[0])
    full = imresize(modcrop(hr, 4), 0.25)
    bare = imresize(hr[40:40 + 96, 40:40 + 96], 0.25)
    assert not np.array_equal(bare, full[10:34, 10:34])


def _find(hay: np.ndarray, needle: np.ndarray) -> list[tuple[int, int]]:
    """Positions where ``needle`` occurs in ``hay`` (exhaustive; fine for small test images)."""
    h, w = needle.shape[:2]
    hits = []
    for y in range(hay.shape[0] - h + 1):
        for x in range(hay.shape[1] - w + 1):
            if hay[y, x, 0] == needle[0, 0, 0] and np.array_equal(hay[y:y + h, x:x + w], needle):
                hits.append((y, x))
    return hits


def test_samples_are_aligned_crops(tmp_path):
    """Without augmentation, the HR patch is a crop of the image at a multiple of the scale, and the LR patch
    is the window of the whole image's bicubic LR at that position divided by the scale."""
    _random_images(tmp_path / "hr", [(70, 90), (64, 64), (101, 77)])
    for s in (2, 3, 4):
        ds = SRPatchDataset([tmp_path / "hr"], scale=s, patch_size=12 * s, hflip=False, rot=False, seed=3)
        for index in range(len(ds)):
            lr, hr_patch = ds.sample(0, index)
            img = read_image(ds.hr_cache.paths[index])
            hits = _find(modcrop(img, s), hr_patch)
            assert hits, "HR patch not found in its image"
            y, x = hits[0]
            assert y % s == 0 and x % s == 0
            full_lr = imresize(modcrop(img, s), 1 / s)
            np.testing.assert_array_equal(lr, full_lr[y // s:y // s + 12, x // s:x // s + 12])
            assert lr.shape == (12, 12, 3) and hr_patch.shape == (12 * s, 12 * s, 3)


def test_augmentation_is_one_of_the_8_dihedral_transforms_applied_to_both(tmp_path):
    _random_images(tmp_path / "hr", [(80, 80), (96, 72)])
    plain = SRPatchDataset([tmp_path / "hr"], 2, 32, repeat=40, hflip=False, rot=False, seed=5)
    aug = SRPatchDataset([tmp_path / "hr"], 2, 32, repeat=40, hflip=True, rot=True, seed=5)

    def transforms(a):
        out = []
        for t in (False, True):
            for v in (False, True):
                for h in (False, True):
                    b = a[:, ::-1] if h else a
                    b = b[::-1] if v else b
                    out.append(b.transpose(1, 0, 2) if t else b)
        return out

    used = set()
    for i in range(len(plain)):
        lr0, hr0 = plain.sample(7, i)
        lr1, hr1 = aug.sample(7, i)
        matches = [k for k, (a, b) in enumerate(zip(transforms(lr0), transforms(hr0), strict=True))
                   if np.array_equal(a, lr1) and np.array_equal(b, hr1)]
        assert matches, f"sample {i}: augmented pair is not a common flip/transpose of the plain pair"
        used.add(matches[0])
    assert len(used) == 8  # all 8 transforms occur in 80 samples


# ------------------------------------------------------------------------------------------ determinism


def test_samples_depend_only_on_seed_epoch_index(tmp_path):
    _random_images(tmp_path / "hr", [(60, 60), (64, 80), (90, 70)])
    a = SRPatchDataset([tmp_path / "hr"], 4, 32, repeat=3, seed=11)
    b = SRPatchDataset([tmp_path / "hr"], 4, 32, repeat=3, seed=11, cache_max_bytes=0)  # decoded every time
    for key in [(0, 0), (0, 5), (3, 5), (2, 8)]:
        for x, y in zip(a[key], b[key], strict=True):
            assert torch.equal(x, y)
    assert b.hr_cache.num_cached == 0 and a.hr_cache.num_cached == 3
    # Different epoch or seed: a different crop (for some index; equal by chance at most rarely).
    c = SRPatchDataset([tmp_path / "hr"], 4, 32, repeat=3, seed=12)
    assert any(not torch.equal(a[(0, i)][1], a[(1, i)][1]) for i in range(9))
    assert any(not torch.equal(a[(0, i)][1], c[(0, i)][1]) for i in range(9))


def test_sampler_global_batch_is_independent_of_world_size_and_start():
    n, batch, iters = 50, 8, 20  # 6 iterations per epoch, 2 samples dropped per epoch
    one = IterationBatchSampler(n, batch, seed=4, max_iters=iters)
    full = list(one)
    assert len(full) == iters and all(len(b) == batch for b in full)
    for world in (2, 4):
        ranks = [list(IterationBatchSampler(n, batch, 4, iters, rank=r, world_size=world)) for r in range(world)]
        for it in range(iters):
            assert [k for r in range(world) for k in ranks[r][it]] == full[it]
    resumed = list(IterationBatchSampler(n, batch, 4, iters, start_iter=13))
    assert resumed == full[13:]
    # Within an epoch every sample appears at most once, and the epoch tag follows the iteration.
    for e in range(3):
        keys = [k for b in full[e * 6:(e + 1) * 6] for k in b]
        assert {k[0] for k in keys} == {e}
        assert len({k[1] for k in keys}) == 48
    assert [k[1] for k in full[0]] != [k[1] for k in full[6]]
    with pytest.raises(DatasetError, match="only 5 training samples"):
        IterationBatchSampler(5, 8, 0, 10)


def test_workers_do_not_change_the_batches(tmp_path):
    _random_images(tmp_path / "hr", [(64, 64), (72, 96), (80, 64), (96, 96)])
    ds = SRPatchDataset([tmp_path / "hr"], 2, 24, repeat=4, seed=2)

    def batches(workers):
        sampler = IterationBatchSampler(len(ds), 4, seed=2, max_iters=6, start_iter=1)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=workers)
        return [(lr.clone(), hr.clone()) for lr, hr in loader]

    a, b = batches(0), batches(2)
    assert len(a) == 5
    for (la, ha), (lb, hb) in zip(a, b, strict=True):
        assert la.dtype == torch.uint8 and la.shape == (4, 3, 12, 12) and ha.shape == (4, 3, 24, 24)
        assert torch.equal(la, lb) and torch.equal(ha, hb)


# ------------------------------------------------------------------------------------------ paired folders


def test_paired_folders_match_on_the_fly_lr(tmp_path):
    """DIV2K-style LR files made by the same MATLAB bicubic give the same samples as LR made on the fly."""
    paths = _random_images(tmp_path / "HR", [(67, 90), (80, 81), (96, 64)])
    for p in paths:
        _write(tmp_path / "LR" / "X3", f"{p.stem}x3.png", imresize(modcrop(read_image(p), 3), 1 / 3))
    paired = SRPatchDataset([tmp_path / "HR"], 3, 36, lr_dirs=[tmp_path / "LR" / "X3"], repeat=2, seed=9)
    fly = SRPatchDataset([tmp_path / "HR"], 3, 36, repeat=2, seed=9)
    assert paired.paired and not fly.paired
    for i in range(len(fly)):
        for x, y in zip(paired[(1, i)], fly[(1, i)], strict=True):
            assert torch.equal(x, y)


def test_paired_errors_name_files(tmp_path):
    paths = _random_images(tmp_path / "HR", [(64, 64), (64, 64)])
    _write(tmp_path / "LR", f"{paths[0].stem}.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(DatasetError, match=rf"no LR image for {paths[1].name}"):
        SRPatchDataset([tmp_path / "HR"], 4, 32, lr_dirs=[tmp_path / "LR"])
    _write(tmp_path / "LR", f"{paths[1].stem}.png", np.zeros((20, 16, 3), np.uint8))
    with pytest.raises(DatasetError, match=rf"{paths[1]}: HR 64×64 is smaller than ×4 its LR"):
        SRPatchDataset([tmp_path / "HR"], 4, 32, lr_dirs=[tmp_path / "LR"])


# ------------------------------------------------------------------------------------------ folders and errors


def test_small_images_are_skipped_with_one_warning(tmp_path, caplog):
    _random_images(tmp_path / "a", [(64, 64), (30, 200), (63, 80)])
    _random_images(tmp_path / "b", [(10, 10), (100, 100)], seed=1)
    with caplog.at_level(logging.WARNING, logger="lightsr"):
        ds = SRPatchDataset([tmp_path / "a", tmp_path / "b"], 4, 64, repeat=2)
    warnings = [r.getMessage() for r in caplog.records if "smaller than" in r.getMessage()]
    assert len(warnings) == 1
    assert "skipping 3 training image(s)" in warnings[0]
    for name in ("a/img001.png", "a/img002.png", "b/img000.png"):
        assert name in warnings[0]
    assert ds.num_images == 2 and len(ds) == 4  # 64×64 and 100×100 remain; repeat 2


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'nope'}: training data folder not found$"):
        SRPatchDataset([tmp_path / "nope"], 4, 32)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'empty'}: no images"):
        SRPatchDataset([tmp_path / "empty"], 4, 32)
    _random_images(tmp_path / "tiny", [(8, 8)])
    with pytest.raises(DatasetError, match="no image is large enough"):
        SRPatchDataset([tmp_path / "tiny"], 4, 32)


def test_unreadable_images_are_named(tmp_path):
    good = _random_images(tmp_path / "d", [(64, 64)])[0]
    bad = tmp_path / "d" / "zz_garbage.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match=rf"^{bad}: cannot read image"):
        SRPatchDataset([tmp_path / "d"], 4, 32)
    # A valid header with truncated pixel data fails when decoded (preload), still naming the file.
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(LightSRError, match=rf"^{bad}: cannot read image") as e:
        SRPatchDataset([tmp_path / "d"], 4, 32)
    assert "\n" not in str(e.value)
