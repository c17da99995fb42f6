"""Degradations: each operator against an independent computation, the training track's determinism and config
checks, and ``--degrade`` in evaluation and comparison."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import require_shared
from lightsr.cli import main
from lightsr.degradations import (
    KERNEL_TYPES,
    apply_degrade,
    degrade_downscaled,
    degrade_real,
    filter2d,
    gaussian_noise,
    generalized_gaussian_kernel,
    jpeg,
    mixed_kernel,
    parse_degrade,
    plateau_kernel,
    poisson_noise,
    resize,
    sinc_kernel,
)
from lightsr.errors import UsageError
from lightsr.train.config import ConfigError, DegradationConfig, config_from_dict


def _t(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).float() / 255


def _photo(h: int = 48, w: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(x / 3.0 + c) * 80 + np.cos(y / 5.0) * 60 + 128 for c in range(3)], axis=2)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- kernels


@settings(max_examples=30, deadline=None)
@given(size=st.sampled_from([7, 11, 21]), sx=st.floats(0.2, 3), sy=st.floats(0.2, 3), theta=st.floats(-3.2, 3.2),
       beta=st.floats(0.5, 4))
def test_kernels_sum_to_one_and_follow_their_formulas(size, sx, sy, theta, beta):
    r = np.arange(size) - size // 2
    # An axis-aligned Gaussian is the outer product of two 1-D Gaussians (no matrix inverse involved).
    g = generalized_gaussian_kernel(size, sx, sy, 0.0, 1.0)
    ref = np.outer(np.exp(-r ** 2 / (2 * sy ** 2)), np.exp(-r ** 2 / (2 * sx ** 2)))
    np.testing.assert_allclose(g, ref / ref.sum(), rtol=1e-5, atol=1e-7)
    for k in (generalized_gaussian_kernel(size, sx, sy, theta, beta), plateau_kernel(size, sx, sy, theta, beta)):
        assert k.shape == (size, size) and k.dtype == np.float32
        assert abs(float(k.sum(dtype=np.float64)) - 1) < 1e-5 and (k >= 0).all()
        np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-7)  # point-symmetric for any rotation
    # Rotating by 90° swaps the axes' sigmas.
    np.testing.assert_allclose(generalized_gaussian_kernel(size, sx, sy, math.pi / 2, beta),
                               generalized_gaussian_kernel(size, sy, sx, 0.0, beta), atol=1e-6)
    # The plateau kernel at an axis point, from its formula: 1 / (1 + (d²/σ²)^β).
    p = plateau_kernel(size, sx, sx, 0.0, beta)
    ratio = (1 / (1 + (1 / sx ** 2) ** beta)) / 1.0
    assert p[size // 2, size // 2 + 1] / p[size // 2, size // 2] == pytest.approx(ratio, rel=1e-4)


def _bessel_j1(x: np.ndarray) -> np.ndarray:
    """J₁ from Bessel's integral (1/π)∫₀^π cos(τ − x sin τ) dτ by the trapezoid rule (exponentially accurate for
    this smooth periodic integrand), independent of torch's implementation."""
    tau = np.linspace(0, np.pi, 4001)
    vals = np.cos(tau[None, :] - x.reshape(-1, 1) * np.sin(tau[None, :]))
    w = np.full(tau.size, tau[1] - tau[0])
    w[[0, -1]] /= 2
    return (vals @ w / np.pi).reshape(x.shape)


@pytest.mark.parametrize("omega", [math.pi / 5, math.pi / 3, 2.5])
def test_sinc_kernel_is_the_circular_low_pass_filter(omega):
    size = 21
    k = sinc_kernel(size, omega)
    r = np.arange(size) - size // 2
    rad = np.hypot(*np.meshgrid(r, r))
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = np.where(rad > 0, omega * _bessel_j1(omega * rad) / (2 * np.pi * rad), omega ** 2 / (4 * np.pi))
    np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-4, atol=1e-6)
    # Its frequency response passes low frequencies and stops those well above the cut-off.
    resp = np.abs(np.fft.fft2(k, s=(256, 256)))
    f = np.fft.fftfreq(256) * 2 * np.pi
    fr = np.hypot(*np.meshgrid(f, f))
    assert resp[fr < 0.5 * omega].min() > 0.8 and resp[fr > 1.6 * omega].max() < 0.2


def test_mixed_kernels_draw_the_types_their_probabilities_allow():
    rng = np.random.default_rng(0)
    for i, kind in enumerate(KERNEL_TYPES):
        probs = tuple(1.0 if j == i else 0.0 for j in range(6))
        ks = [mixed_kernel(rng, 11, probs, (0.5, 3), (0.5, 4), (1, 2)) for _ in range(8)]
        for k in ks:
            assert abs(float(k.sum()) - 1) < 1e-5
        # Isotropic kernels are symmetric under transposition; anisotropic ones (σx ≠ σy, rotated) are not.
        symmetric = [np.allclose(k, k.T, atol=1e-6) for k in ks]
        assert all(symmetric) if kind.endswith("_iso") or kind == "iso" else not all(symmetric), kind
    # Plain Gaussians only: every kernel is exp(-r²/2σ²) along an axis, whatever σ was drawn.
    k = mixed_kernel(np.random.default_rng(3), 11, (1, 0, 0, 0, 0, 0), (1.0, 1.0), (0.5, 4), (1, 2))
    np.testing.assert_allclose(k, generalized_gaussian_kernel(11, 1.0, 1.0, 0.0), atol=1e-7)


def test_shape_parameters_are_drawn_as_real_esrgan_draws_them():
    from lightsr.degradations import _beta

    rng = np.random.default_rng(0)
    plateau = np.array([_beta(rng, (1.0, 2.0)) for _ in range(2000)])
    assert 0.45 < np.mean(plateau == 1.0) < 0.55 and plateau.max() <= 2.0  # the lower half is exactly 1
    gen = np.array([_beta(rng, (0.5, 4.0)) for _ in range(2000)])
    assert 0.45 < np.mean(gen < 1) < 0.55 and gen.min() >= 0.5 and gen.max() <= 4.0
    narrow = np.array([_beta(rng, (0.2, 0.8)) for _ in range(200)])
    assert narrow.min() >= 0.2 and narrow.max() <= 0.8  # never outside the configured range


def test_filter2d_equals_a_direct_correlation():
    img = _t(_photo(20, 17))
    k = np.random.default_rng(1).random((7, 7)).astype(np.float32)
    out = filter2d(img, k)
    padded = np.pad(img[0].numpy(), ((0, 0), (3, 3), (3, 3)), mode="reflect")
    ref = np.zeros(img.shape[1:], np.float64)
    for dy in range(7):
        for dx in range(7):
            ref += k[dy, dx] * padded[:, dy:dy + 20, dx:dx + 17]
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-5)


def test_area_resize_by_an_integer_factor_is_the_block_mean():
    img = _t(_photo(24, 16))
    out = resize(img, (6, 4), "area")[0].numpy()
    ref = img[0].numpy().reshape(3, 6, 4, 4, 4).mean(axis=(2, 4))
    np.testing.assert_allclose(out, ref, atol=1e-6)


# ------------------------------------------------------------------------------------------- noise and JPEG


def test_gaussian_noise_has_its_sigma_and_gray_noise_is_shared_by_the_channels():
    img = torch.full((1, 3, 256, 256), 0.5)
    rng = np.random.default_rng(0)
    color = gaussian_noise(img, 12.0, False, rng) - img
    assert float(color.std()) * 255 == pytest.approx(12.0, rel=0.02)
    assert abs(float(color.mean())) < 1e-3
    assert not torch.equal(color[:, 0], color[:, 1])
    gray = gaussian_noise(img, 12.0, True, rng) - img
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])


def test_poisson_noise_variance_follows_the_signal():
    rng = np.random.default_rng(0)
    levels = torch.linspace(0.1, 0.9, 8).repeat_interleave(64)
    img = levels.view(1, 1, 8, 64).expand(1, 3, 8, 64).reshape(1, 3, 8, 64).repeat(1, 1, 32, 1).contiguous()
    noise = poisson_noise(img, 1.0, False, rng) - img
    assert abs(float(noise.mean())) < 2e-3
    # Var(Poisson(x·v)/v) = x / v with v = 2^ceil(log2(8 levels)) = 8: noise grows with brightness.
    v = 8.0
    lo, hi = noise[..., img[0, 0] < 0.2], noise[..., img[0, 0] > 0.8]
    assert float(lo.var()) == pytest.approx(0.1 / v, rel=0.15)
    assert float(hi.var()) == pytest.approx(0.9 / v, rel=0.15)
    gray = poisson_noise(img, 1.0, True, rng) - img
    assert torch.equal(gray[:, 0], gray[:, 2])


def test_gray_poisson_noise_counts_the_levels_of_the_8_bit_luma():
    """On a colour image, gray shot noise has the variance of Poisson(Y·v)/v with v from Y's own 8-bit levels."""
    rng = np.random.default_rng(1)
    img = torch.from_numpy(rng.random((1, 3, 128, 128), dtype=np.float32))
    luma = np.round((0.299 * img[0, 0] + 0.587 * img[0, 1] + 0.114 * img[0, 2]).numpy().astype(np.float64) * 255)
    v = 2.0 ** math.ceil(math.log2(len(np.unique(luma))))
    assert v <= 256
    noise = (poisson_noise(img, 1.0, True, rng) - img)[0, 0].numpy().astype(np.float64)
    expected = float(np.mean(luma / 255) / v)  # Var = E[Y]/v
    assert noise.var() == pytest.approx(expected, rel=0.1)


@pytest.mark.parametrize("quality", [10, 40, 95])
def test_jpeg_is_pillows_round_trip(quality):
    arr = _photo(37, 29)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    ref = np.asarray(Image.open(buf).convert("RGB"))
    out = (jpeg(_t(arr), quality)[0] * 255).round().byte().permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(out, ref)


# ------------------------------------------------------------------------------------------- the training track


@pytest.mark.parametrize("order", ["fixed", "shuffled"])
def test_real_track_has_two_jpegs_as_real_esrgans_second_order_model(monkeypatch, order):
    import lightsr.degradations as D

    calls = []
    real_jpeg = D.jpeg
    monkeypatch.setattr(D, "jpeg", lambda img, q: calls.append(q) or real_jpeg(img, q))
    cfg = DegradationConfig(type="real", order=order)
    for seed in range(4):
        calls.clear()
        D.degrade_real(_photo(64, 64), 4, cfg, np.random.default_rng(seed))
        assert len(calls) == 2  # the first stage's, and the final one (the second stage's)
        assert all(30 <= q <= 95 for q in calls)


def test_real_track_is_a_pure_function_of_its_generator():
    hr = _photo(64, 48)
    cfg = DegradationConfig(type="real")
    a = degrade_real(hr, 4, cfg, np.random.default_rng(5))
    b = degrade_real(hr, 4, cfg, np.random.default_rng(5))
    c = degrade_real(hr, 4, cfg, np.random.default_rng(6))
    assert a.shape == (16, 12, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    shuffled = DegradationConfig(type="real", order="shuffled")
    assert degrade_real(hr, 4, shuffled, np.random.default_rng(5)).shape == (16, 12, 3)


def test_training_samples_keep_their_crop_and_clean_prob_one_is_the_bicubic_track():
    from lightsr.data import SRPatchDataset

    t91 = require_shared("data/train/T91")
    bic = SRPatchDataset([t91], 4, 32, seed=3, verbose=False, cache_max_bytes=0)
    real = SRPatchDataset([t91], 4, 32, seed=3, verbose=False, cache_max_bytes=0,
                          degradation=DegradationConfig(type="real"))
    clean = SRPatchDataset([t91], 4, 32, seed=3, verbose=False, cache_max_bytes=0,
                           degradation=DegradationConfig(type="real", clean_prob=1.0))
    for idx in (0, 17):
        lb, hb = bic.sample(1, idx)
        lr, hr = real.sample(1, idx)
        lc, _ = clean.sample(1, idx)
        np.testing.assert_array_equal(hb, hr)  # the same HR patch: degradations draw from their own stream
        np.testing.assert_array_equal(lb, lc)
        assert lr.shape == lb.shape and not np.array_equal(lr, lb)
        np.testing.assert_array_equal(lr, real.sample(1, idx)[0])


@pytest.mark.parametrize("gaussian, noise_prob", [(1.0, 1.0), (0.0, 1.0), (1.0, 0.5), (0.0, 0.0)])
def test_downscaled_path_is_noise_then_pillows_jpeg_on_the_bicubic_lr(gaussian, noise_prob):
    """Against a computation of its own: the same draws from a copy of the generator, numpy noise, Pillow JPEG.
    With ``downscaled_noise_prob`` 1 (the default) no draw decides on the noise, as before the key existed."""
    lr = _photo(20, 18)
    cfg = DegradationConfig(type="real", downscaled_prob=1.0, downscaled_noise_prob=noise_prob)
    cfg.second.gaussian_noise_prob, cfg.second.gray_noise_prob = gaussian, 0.5
    noisy = []
    for seed in range(12):
        out = degrade_downscaled(lr, cfg, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        x = lr.astype(np.float64) / 255
        noisy.append(noise_prob >= 1 or rng.random() < noise_prob)
        if noisy[-1]:
            gray = rng.random() < 0.5
            if rng.random() < gaussian:
                sigma = rng.uniform(*cfg.second.noise_range)
                n = rng.standard_normal((1 if gray else 3, *lr.shape[:2]), dtype=np.float32).transpose(1, 2, 0)
                x = x + n.astype(np.float64) * (sigma / 255)
            else:  # shot noise at a scale from the second stage's range (poisson_noise has its own tests)
                scale = rng.uniform(*cfg.second.poisson_scale_range)
                x = poisson_noise(_t(lr), scale, gray, rng)[0].permute(1, 2, 0).numpy().astype(np.float64)
        q = int(rng.integers(cfg.second.jpeg_range[0], cfg.second.jpeg_range[1] + 1))
        before = np.clip(np.round(np.clip(x, 0, 1) * 255), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(before).save(buf, "JPEG", quality=q)
        ref = np.asarray(Image.open(buf).convert("RGB"))
        if noisy[-1]:  # float32 noise in torch vs float64 here: a value may round the other way before JPEG, rarely.
            assert np.mean(out == ref) > 0.97 and np.abs(out.astype(int) - ref).max() <= 8
        else:  # the bicubic LR saved as JPEG, nothing else
            np.testing.assert_array_equal(out, ref)
    assert all(noisy) if noise_prob == 1 else not any(noisy) if noise_prob == 0 else 0 < sum(noisy) < len(noisy)


def test_one_draw_picks_the_path_so_runs_without_the_downscaled_share_sample_as_before():
    """Each degraded sample is, by one uniform draw ``u`` from its generator: the bicubic LR (``u < clean_prob``),
    the bicubic LR through :func:`degrade_downscaled` (``u < clean_prob + downscaled_prob``), else the
    real-world track on the patch's region — rebuilt here from the public functions. With ``downscaled_prob`` 0
    this is the sampling of runs made before the key existed, so their resumes stay exact."""
    from lightsr.data import _DEGRADE_STREAM, DEGRADE_MARGIN, SRPatchDataset, bicubic_lr_patch

    t91 = require_shared("data/train/T91")
    kw = {"seed": 3, "verbose": False, "cache_max_bytes": 0, "hflip": False, "rot": False}
    bic = SRPatchDataset([t91], 4, 32, **kw)
    paths = set()
    for clean, down in ((0.2, 0.0), (0.3, 0.4), (0.0, 1.0)):
        cfg = DegradationConfig(type="real", clean_prob=clean, downscaled_prob=down)
        ds = SRPatchDataset([t91], 4, 32, degradation=cfg, **kw)
        for idx in range(12):
            lr, hr = ds.sample(2, idx)
            lb, hb = bic.sample(2, idx)
            np.testing.assert_array_equal(hr, hb)  # the crop is the bicubic track's
            rng = np.random.default_rng((3, _DEGRADE_STREAM, 2, idx))
            u = rng.random()
            if u < clean:
                paths.add("clean")
                np.testing.assert_array_equal(lr, lb)
            elif u < clean + down:
                paths.add("downscaled")
                np.testing.assert_array_equal(lr, degrade_downscaled(lb, cfg, rng))
            else:
                paths.add("real")
                item = ds.items[idx % len(ds.items)]
                hr_img = ds.hr_cache[ds._hr_index[item.hr]]
                srng = np.random.default_rng((3, 2, 2, idx))  # the sample stream: the crop's draws
                n = ds.lr_patch
                ly = int(srng.integers(0, item.lr_size[0] - n + 1))
                lx = int(srng.integers(0, item.lr_size[1] - n + 1))
                y0, x0 = max(0, ly - DEGRADE_MARGIN), max(0, lx - DEGRADE_MARGIN)
                y1 = min(item.lr_size[0], ly + n + DEGRADE_MARGIN)
                x1 = min(item.lr_size[1], lx + n + DEGRADE_MARGIN)
                region = degrade_real(hr_img[y0 * 4:y1 * 4, x0 * 4:x1 * 4], 4, cfg, rng)
                np.testing.assert_array_equal(lr, region[ly - y0:ly - y0 + n, lx - x0:lx - x0 + n])
                assert not np.array_equal(lr, bicubic_lr_patch(hr_img, 4, ly, lx, n, item.lr_size))
    assert paths == {"clean", "downscaled", "real"}


def _cfg(**deg) -> dict:
    return {"data": {"hr_dirs": ["x"], "degradation": deg}}


@pytest.mark.parametrize("deg, key", [
    ({"type": "real", "first": {"jpeg_range": [0, 95]}}, "data.degradation.first.jpeg_range"),
    ({"type": "real", "second": {"noise_range": [20, 10]}}, "data.degradation.second.noise_range"),
    ({"type": "real", "first": {"kernel_size": 8}}, "data.degradation.first.kernel_size"),
    ({"type": "real", "first": {"kernel_prob": [0, 0, 0, 0, 0, 0]}}, "data.degradation.first.kernel_prob"),
    ({"type": "real", "clean_prob": 1.5}, "data.degradation.clean_prob"),
    ({"type": "real", "clean_prob": 0.5, "downscaled_prob": 0.6}, "data.degradation.downscaled_prob"),
    ({"type": "real", "downscaled_noise_prob": -0.1}, "data.degradation.downscaled_noise_prob"),
    ({"type": "real", "first": {"blur_sigmas": [1, 2]}}, "data.degradation.first.blur_sigmas"),
    ({"type": "bsrgan"}, "data.degradation.type"),
    ({"type": "real", "first": {"resize_range": [1.2, 1.5]}}, "data.degradation.first.resize_range"),
    ({"order": "shuffled"}, "data.degradation"),
])
def test_degradation_config_errors_name_the_key(deg, key):
    with pytest.raises(ConfigError) as e:
        config_from_dict(_cfg(**deg))
    assert str(e.value).startswith(key + ":") and "\n" not in str(e.value)


def test_second_stage_defaults_are_real_esrgans_second_order():
    cfg = config_from_dict(_cfg(type="real", second={"noise_range": [1, 10]}))
    d = cfg.data.degradation
    assert d.first.blur_sigma == (0.2, 3.0) and d.first.resize_range == (0.15, 1.5)
    assert d.second.blur_sigma == (0.2, 1.5) and d.second.blur_prob == 0.8 and d.second.noise_range == (1.0, 10.0)
    with pytest.raises(ConfigError, match=r"^data\.degradation\.type: .*lr_dirs"):
        config_from_dict({"data": {"hr_dirs": ["x"], "lr_dirs": ["y"], "degradation": {"type": "real"}}})
    with pytest.raises(ConfigError, match=r"^val\.degrade: "):
        config_from_dict({"data": {"hr_dirs": ["x"]}, "val": {"degrade": "jpeg:200"}})


# ------------------------------------------------------------------------------------------- --degrade


@pytest.mark.parametrize("spec, msg", [("jpeg:0", "JPEG quality"), ("jpeg:50.5", "JPEG quality"),
                                       ("noise:-1", "noise σ"), ("blur:x", "blur σ"), ("sharpen:2", "jpeg:Q"),
                                       ("jpeg", "jpeg:Q"), ("noise:nan", "noise σ"), ("", "jpeg:Q")])
def test_parse_degrade_errors_are_one_line(spec, msg):
    with pytest.raises(UsageError, match=msg) as e:
        parse_degrade(spec)
    assert "\n" not in str(e.value)


def test_degrade_chains_a_few_operations_only(capsys):
    """Eight operations are read; a ninth, or a spec of thousands (they took minutes per image), is one short line
    that does not repeat the spec."""
    from lightsr.degradations import MAX_DEGRADE_OPS

    assert MAX_DEGRADE_OPS == 8
    assert len(parse_degrade(",".join(["noise:1"] * 8))) == 8
    for n in (9, 100_000):
        with pytest.raises(UsageError, match=rf"^--degrade noise:1,noise:1,.*…: at most 8 operations, got {n}$") as e:
            parse_degrade(",".join(["noise:1"] * n))
        assert len(str(e.value)) < 120
    with pytest.raises(UsageError, match=r"^val\.degrade: .*at most 8 operations"):
        parse_degrade(",".join(["jpeg:90"] * 9), "val.degrade:")
    with pytest.raises(UsageError, match=r"got 'x{39}…'$"):  # a long bad part is cut too
        parse_degrade("x" * 10_000)
    with pytest.raises(UsageError, match=r"^--degrade jpeg:1\\n\\x00: jpeg needs .*, got '1\\n\\x00'$"):
        parse_degrade("jpeg:1\n\0")  # control characters (a config value, an environment variable) escaped
    # eval, not compare: the minimum-versions environment has no matplotlib, which compare checks first.
    assert main(["eval", "--bicubic", "--scale", "4", "--sets", "Set5", "--data", "/nonexistent",
                 "--degrade", ",".join(["jpeg:90"] * 50)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at most 8 operations, got 50" in err[0]


def test_apply_degrade_is_seeded_by_name_and_each_op_is_what_it_says():
    img = _photo(40, 30)
    ops = parse_degrade("noise:10,jpeg:60")
    a, b = apply_degrade(img, ops, "Set5/baby"), apply_degrade(img, ops, "Set5/baby")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, apply_degrade(img, ops, "Set5/bird"))
    # jpeg:Q is Pillow's round trip.
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=60)
    np.testing.assert_array_equal(apply_degrade(img, parse_degrade("jpeg:60"), "k"),
                                  np.asarray(Image.open(buf).convert("RGB")))
    # noise:σ adds noise of that σ (rounded to 8 bits), zero mean.
    flat = np.full((200, 200, 3), 128, np.uint8)
    diff = apply_degrade(flat, parse_degrade("noise:10"), "k").astype(np.float64) - 128
    assert diff.std() == pytest.approx(10, rel=0.03) and abs(diff.mean()) < 0.1
    # blur keeps a constant image and a gray image stays 2-D.
    np.testing.assert_array_equal(apply_degrade(flat, parse_degrade("blur:1.5"), "k"), flat)
    gray = img[..., 0]
    assert apply_degrade(gray, ops, "g").shape == gray.shape
    with pytest.raises(UsageError, match="gray or RGB"):
        apply_degrade(np.dstack([img, img[..., :1]]), ops, "rgba")


def test_eval_degrade_names_the_degradation_and_changes_the_scores(tmp_path, capsys):
    root = require_shared("data/benchmark")
    args = ["eval", "--bicubic", "--scale", "4", "--sets", "Set5", "--data", str(root), "--no-progress"]
    assert main(args) == 0
    clean = capsys.readouterr().out
    assert main([*args, "--degrade", "jpeg:40", "--output", str(tmp_path / "r")]) == 0
    degraded = capsys.readouterr().out
    psnr = lambda out: float(out.strip().splitlines()[-1].split("|")[-4])  # noqa: E731
    assert "jpeg:40" in degraded and psnr(degraded) < psnr(clean) - 0.3
    import json

    assert json.loads((tmp_path / "r.json").read_text())["degrade"] == "jpeg:40"
    assert main([*args, "--degrade", "jpeg:400"]) == 2
    err = capsys.readouterr().err
    assert "--degrade jpeg:400" in err and len(err.strip().splitlines()) == 1
