"""Evaluation protocol end to end: published bicubic rows, official checkpoints, reports and errors."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch

import lightsr
from conftest import require_shared
from lightsr.cli import main
from lightsr.errors import DatasetError
from lightsr.evaluate import evaluate, load_set, super_resolve

# Bicubic rows as published (e.g. VDSR/LapSRN tables; MATLAB scripts, gray taken as Y), two decimals.
PUBLISHED_BICUBIC = {
    2: {"Set5": (33.66, 0.9299), "Set14": (30.24, 0.8688), "B100": (29.56, 0.8431)},
    3: {"Set5": (30.39, 0.8682), "Set14": (27.55, 0.7742), "B100": (27.21, 0.7385)},
    4: {"Set5": (28.42, 0.8104), "Set14": (26.00, 0.7027), "B100": (25.96, 0.6675)},
}
# Set14 in the default gray mode (bridge as RGB), measured by an independent script.
SET14_RGB_MODE = {2: (30.33, 0.8699), 3: (27.63, 0.7759), 4: (26.09, 0.7048)}


@pytest.fixture(scope="module")
def bench():
    return require_shared("data/benchmark")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_reproduces_published_rows(bench, scale: int) -> None:
    raw = {r.set: r for r in evaluate(None, bench, ["Set5", "Set14", "B100"], scale, gray_mode="raw",
                                      progress=False)}
    for name, (psnr, ssim) in PUBLISHED_BICUBIC[scale].items():
        # Published values are rounded to 0.01 dB, so they stand for an interval of ±0.005 around them:
        # the ±0.01 tolerance is applied to that interval (the largest gap measured is 0.0134 dB).
        assert abs(raw[name].psnr - psnr) <= 0.015, (name, raw[name].psnr)
        assert abs(raw[name].ssim - ssim) <= 0.001, (name, raw[name].ssim)
    rgb = evaluate(None, bench, ["Set14"], scale, gray_mode="rgb", progress=False)[0]
    assert abs(rgb.psnr - SET14_RGB_MODE[scale][0]) <= 0.01
    assert abs(rgb.ssim - SET14_RGB_MODE[scale][1]) <= 0.001
    # Only bridge is gray: the two modes differ by ~0.09 dB on Set14 and not at all elsewhere.
    assert 0.05 < rgb.psnr - raw["Set14"].psnr < 0.15


# What the official code gives under this protocol (measured with the official code itself).
OFFICIAL = {
    ("weights/HASN_x4_official.pth", "params"): {
        "Set5": (32.176, 0.8947), "Set14": (28.608, 0.7815), "B100": (27.571, 0.7360)},
    ("weights/ELAN-light_x4_FriedRiceLab.pth", None): {
        "Set5": (32.438, 0.8979), "Set14": (28.790, 0.7862), "B100": (27.689, 0.7407)},
}


@pytest.mark.parametrize(("weights", "key"), list(OFFICIAL))
def test_official_checkpoints_score_as_with_the_official_code(bench, weights: str, key: str | None) -> None:
    """Set5 and Set14 by default; B100 too with LIGHTSR_FULL_EVAL=1 (100 images: minutes per checkpoint on two
    cores, more than the suite's budget allows)."""
    # The inference form, as `lightsr eval` runs by default (tests/test_fused.py checks it equals the
    # training form); it is also what keeps this test fast.
    model = lightsr.load_model(require_shared(weights), param_key=key).fuse()
    sets = ["Set5", "Set14"] + (["B100"] if os.environ.get("LIGHTSR_FULL_EVAL") == "1" else [])
    for r in evaluate(model, bench, sets, 4, progress=False):
        psnr, ssim = OFFICIAL[(weights, key)][r.set]
        assert abs(r.psnr - psnr) <= 0.005, (r.set, r.psnr)
        assert abs(r.ssim - ssim) <= 0.0005, (r.set, r.ssim)


def test_plain_hr_folder_makes_the_same_lr_as_matlab(bench, tmp_path) -> None:
    shutil.copytree(bench / "Set5" / "HR", tmp_path / "Set5")
    plain = load_set(tmp_path, "Set5", 3)
    edsr = load_set(bench, "Set5", 3)
    for a, b in zip(plain, edsr, strict=True):
        assert a.name == b.name
        assert np.array_equal(a.lr, b.lr) and np.array_equal(a.hr, b.hr)


def test_self_ensemble_is_the_mean_of_eight_transforms() -> None:
    torch.manual_seed(0)
    model = lightsr.create_model("hasn", scale=2).eval()
    lr = (np.random.default_rng(0).random((17, 23, 3)) * 255).astype(np.uint8)
    x = torch.from_numpy(lr.transpose(2, 0, 1).copy()).float().div(255)[None]
    outs = []
    with torch.no_grad():
        for k in range(4):
            for flip in (False, True):
                t = torch.rot90(x, k, (2, 3))
                t = t.flip(3) if flip else t
                y = model(t)
                y = y.flip(3) if flip else y
                outs.append(torch.rot90(y, -k, (2, 3)))
    ref = torch.stack(outs).mean(0)[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    got = super_resolve(model, lr, self_ensemble=True)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1  # summation order may flip a rounding
    assert not np.array_equal(got, super_resolve(model, lr))


def test_cli_writes_consistent_json_and_csv(bench, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["eval", "--bicubic", "--scale", "4", "--data", str(bench), "--sets", "Set5",
                 "--output", str(out), "--no-progress", "--save-images", str(tmp_path / "sr")]) == 0
    table = capsys.readouterr().out
    assert "| bicubic | Set5 | ×4 | 28.4290 | 0.8111 | 5 |" in table
    summary = json.loads(out.with_suffix(".json").read_text())
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert len(rows) == 5 and summary["sets"][0]["count"] == 5
    assert abs(np.mean([float(r["psnr"]) for r in rows]) - summary["sets"][0]["psnr"]) < 1e-5
    assert len(list((tmp_path / "sr" / "Set5").glob("*.png"))) == 5


def test_clear_errors(bench, tmp_path, capsys) -> None:
    with pytest.raises(DatasetError, match="Set99: benchmark set not found"):
        load_set(bench, "Set99", 4)
    # An LR image of the wrong size.
    (tmp_path / "S" / "HR").mkdir(parents=True)
    (tmp_path / "S" / "LR_bicubic" / "X2").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (40, 30)).save(tmp_path / "S" / "HR" / "a.png")
    Image.new("RGB", (19, 15)).save(tmp_path / "S" / "LR_bicubic" / "X2" / "ax2.png")
    with pytest.raises(DatasetError, match=r"ax2\.png: LR size 19×15 ×2 does not match HR a\.png"):
        load_set(tmp_path, "S", 2)
    # An unreadable image, through the CLI: one line, exit status 2.
    (tmp_path / "T").mkdir()
    (tmp_path / "T" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert main(["eval", "--bicubic", "--scale", "2", "--data", str(tmp_path), "--sets", "T"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.png: cannot read image" in err[0]


def test_sixteen_bit_gray_is_read_at_its_values(tmp_path) -> None:
    from PIL import Image

    from lightsr.evaluate import _read
    from lightsr.imageio import read_image

    values = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)  # 0, 257, … = 8-bit 0 … 255
    Image.fromarray(values).save(tmp_path / "g.png")
    expect = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(_read(tmp_path / "g.png"), expect)  # evaluation's reader
    assert np.array_equal(read_image(tmp_path / "g.png", "L"), expect)  # training data's reader
    assert np.array_equal(read_image(tmp_path / "g.png", "RGB"), np.repeat(expect[..., None], 3, axis=2))


def test_gray_palette_is_scored_as_one_channel_and_colour_palette_as_rgb(tmp_path) -> None:
    from PIL import Image

    from lightsr.evaluate import _read

    rng = np.random.default_rng(0)
    idx = rng.integers(0, 4, (8, 8), dtype=np.uint8)
    for name, palette in (("gray", [0, 0, 0, 90, 90, 90, 180, 180, 180, 255, 255, 255]),
                          ("colour", [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])):
        im = Image.fromarray(idx, "P")
        im.putpalette(palette)
        im.save(tmp_path / f"{name}.png")
    table = np.array([0, 90, 180, 255], np.uint8)
    assert np.array_equal(_read(tmp_path / "gray.png"), table[idx])
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    assert np.array_equal(_read(tmp_path / "colour.png"), colours[idx])


def test_eval_threads_sets_the_threads_the_models_run_with(bench, capsys, monkeypatch) -> None:
    import lightsr.evaluate as E

    seen, real, before = [], E.evaluate, torch.get_num_threads()
    monkeypatch.setattr(E, "evaluate", lambda *a, **k: (seen.append(torch.get_num_threads()), real(*a, **k))[1])
    want = 2 if before == 1 else 1
    try:
        assert main(["eval", "--model", "lksmn", "--scale", "4", "--data", str(bench), "--sets", "Set5",
                     "--threads", str(want), "-q"]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen == [want] and "Set5" in capsys.readouterr().out
    for bad in ("0", "two"):
        with pytest.raises(SystemExit):
            main(["eval", "--bicubic", "--scale", "4", "--threads", bad])
        err = capsys.readouterr().err.strip().splitlines()
        assert "argument --threads: " in err[-1] and bad in err[-1]


def test_eval_checks_sets_outputs_and_device_before_any_model_runs(bench, tmp_path, capsys, monkeypatch) -> None:
    import lightsr.evaluate as E

    monkeypatch.setattr(E, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking the options"))
    (tmp_path / "f").write_text("")
    for extra, message in ((["--sets", "Set5", "Nope"], "Nope: benchmark set not found"),
                           (["--sets", "Set5", "--output", str(tmp_path / "f" / "r")], "f is a file, not a folder"),
                           (["--sets", "Set5", "--device", "cuda:0" if not torch.cuda.is_available() else "bogus"],
                            "--device")):
        assert main(["eval", "--model", "lksmn", "--data", str(bench), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    with pytest.raises(SystemExit):
        main(["profile", "--model", "lksmn", "--scale", "-2"])
    assert main(["profile", "--model", "foo"]) == 2
    assert "unknown model 'foo'" in capsys.readouterr().err


def test_profile_counts(capsys) -> None:
    for name, params in (("elan_light", 601_488), ("hasn", 435_272)):
        assert main(["profile", "--model", name, "--scale", "4", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["params"] == params


def test_profile_times_the_form_it_names(capsys, monkeypatch) -> None:
    """Latency is timed on the inference form unless --no-fuse; the report names the form that ran."""
    import lightsr.profile as prof_mod

    timed = []
    # profile times a backend Runtime; on the torch backend its module is the network form that runs.
    monkeypatch.setattr(prof_mod, "measure_latency",
                        lambda m, hw, runs: timed.append(type(getattr(m, "module", m)).__name__) or 1.0)
    for flags, form, cls in (([], "fused", "FusedLKSMN"), (["--no-fuse"], "training form", "LKSMN")):
        assert main(["profile", "--model", "lksmn", "--latency", "16x16", "--runs", "1", "--json", *flags]) == 0
        assert json.loads(capsys.readouterr().out)["form"] == form
        assert timed.pop() == cls


def test_profile_macs_match_an_independent_conv_count() -> None:
    """HASN is all convolutions: the flop counter must agree with MACs summed from the layer shapes."""
    from lightsr.profile import count_macs

    model = lightsr.create_model("hasn", scale=4).eval()
    total = 0

    def hook(m, _inp, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.rand(1, 3, 45, 80))
    expected = total
    assert count_macs(model, (45, 80))[0] == expected


def test_an_hr_image_too_small_for_the_scale_is_one_line(tmp_path, capsys) -> None:
    """PSNR/SSIM skip a scale-pixel border and SSIM needs 11×11 inside it: at ×4 the smallest image scored is
    20×20 (a multiple of 4 ≥ 2·4 + 11); 20×19 (16 rows after modcrop) and a 3×2 image (nothing after it) are
    refused in one line naming the file."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "T").mkdir()
    args = ["eval", "--bicubic", "--scale", "4", "--data", str(tmp_path), "--sets", "T", "--no-progress"]
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "T" / "ok.png")
    assert main(args) == 0
    assert "| bicubic | T | ×4 |" in capsys.readouterr().out
    for w, h in ((20, 19), (3, 2)):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "T" / "small.png")
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err == (f"lightsr: error: {tmp_path / 'T' / 'small.png'}: {w}×{h} pixels is too small to score at ×4 "
                       "(at least 20×20: PSNR/SSIM skip a 4-pixel border, SSIM needs 11×11)\n")


def test_eval_outputs_are_checked_writable_before_any_work(bench, tmp_path, capsys, monkeypatch) -> None:
    import errno

    import lightsr.evaluate as E
    from conftest import deny_writes
    from lightsr.errors import WriteError
    from lightsr.evaluate import SetScore, write_reports

    (tmp_path / "ro").mkdir()
    with monkeypatch.context() as m:
        deny_writes(m, tmp_path / "ro")
        m.setattr(E, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking the outputs"))
        for option, value in (("--output", tmp_path / "ro" / "report"), ("--save-images", tmp_path / "ro" / "sr")):
            assert main(["eval", "--bicubic", "--scale", "4", "--data", str(bench), "--sets", "Set5", option,
                         str(value)]) == 2
            assert capsys.readouterr().err == (f"lightsr: error: {option} {value}: cannot write in {tmp_path / 'ro'} "
                                               "(Permission denied)\n")
    # A write that fails anyway (the disk filled up during the evaluation): one line, nothing partial.
    result = [SetScore("Set5", 4, 30.0, 0.9)]
    with monkeypatch.context() as m:
        real_replace = os.replace

        def replace(src, dst):
            if str(dst).endswith(".csv"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_replace(src, dst)

        m.setattr(os, "replace", replace)
        with pytest.raises(WriteError) as info:
            write_reports(result, tmp_path / "rep", {})
    assert str(info.value) == f"{tmp_path / 'rep.csv'}: cannot write (No space left on device); nothing written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep.json", "ro"]  # no rep.csv, no temporary
