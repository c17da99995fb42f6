"""One resolver for what a user names (``lightsr.sources``): every command, the Python API and the web app take the
same names by the same rules and refuse the same way.

References: the bundled files themselves (``lightsr.bundled``) and each entry point's own output for the file's
path; an unknown name's message is compared across the entry points, which must differ only in the option named.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lightsr
from lightsr.bundled import bundled_names, bundled_path, bundled_weights
from lightsr.cli import main
from lightsr.errors import CheckpointError

# A bundled network with a file at a scale other than 4 (the default): names must carry the scale through.
NAME, SCALE = next((n, s) for n in bundled_names() for s in sorted(bundled_weights(n)) if s != 4)
UNKNOWN = "lksnm_typo"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lightsr: error: "), err
    return err[0].removeprefix("lightsr: error: ")


def test_an_unknown_name_is_the_same_line_everywhere(tmp_path: Path, capsys) -> None:
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    runs = {
        "--model": [["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--model", UNKNOWN],
                    ["eval", "--model", UNKNOWN, "--data", str(tmp_path), "--sets", "x"],
                    ["export", "--model", UNKNOWN, "--onnx", str(tmp_path / "m.onnx")]],
        "--weights": [["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--weights", UNKNOWN],
                      ["eval", "--weights", UNKNOWN, "--data", str(tmp_path), "--sets", "x"],
                      ["profile", "--weights", UNKNOWN],
                      ["export", "--weights", UNKNOWN, "--onnx", str(tmp_path / "m.onnx")]],
        "--models": [["compare", str(tmp_path / "a.png"), "--models", UNKNOWN, "-o", str(tmp_path / "f.png")]],
    }
    tails = set()
    for option, commands in runs.items():
        for argv in commands:
            if argv[0] == "eval":  # eval checks its data first: give it a set
                (tmp_path / "x").mkdir(exist_ok=True)
                Image.new("RGB", (16, 16)).save(tmp_path / "x" / "a.png")
            assert main(argv) == 2, argv
            line = _error_line(capsys)
            assert line.startswith(f"{option} {UNKNOWN}: "), (argv, line)
            tails.add(line.removeprefix(f"{option} {UNKNOWN}: "))
    with pytest.raises(CheckpointError) as api:
        lightsr.load_model(UNKNOWN)
    with pytest.raises(CheckpointError) as upscaler:
        lightsr.Upscaler(UNKNOWN)
    from lightsr.serve import ModelEntry, WebApp

    with pytest.raises(CheckpointError) as web:
        WebApp([ModelEntry("typo", None, UNKNOWN, None)], tmp_path / "web").network("typo")
    tails |= {str(api.value).removeprefix(f"{UNKNOWN}: "), str(upscaler.value).removeprefix(f"model {UNKNOWN}: "),
              str(web.value).removeprefix(f"{UNKNOWN}: ")}
    assert len(tails) == 1, tails
    (tail,) = tails
    assert tail.startswith("no such file, nor a bundled or published name (") and NAME in tail
    assert not list(tmp_path.glob("b.png")) and not list(tmp_path.glob("*.onnx"))


def test_a_bundled_name_means_its_file_everywhere(tmp_path: Path, capsys) -> None:
    """``NAME`` at ``--scale``, ``NAME_xSCALE`` and the file's path load the same weights through the Python API,
    ``upscale``, ``profile`` and the web app."""
    path = bundled_path(NAME, SCALE)
    ref = lightsr.load_model(path)
    for what, scale in ((NAME, SCALE), (f"{NAME}_x{SCALE}", None), (str(path), None)):
        net = lightsr.load_model(what, scale=scale)
        assert net.info == ref.info
        assert all((a == b).all() for a, b in zip(net.state_dict().values(), ref.state_dict().values(), strict=True))
    rgb = (np.random.default_rng(0).random((10, 12, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    want = lightsr.Upscaler(path, tile=0, precision="fp32").upscale(rgb)
    for flags in (["--model", NAME, "--scale", str(SCALE)], ["--weights", f"{NAME}_x{SCALE}"], ["--weights", str(path)],
                  ["--weights", NAME, "--scale", str(SCALE)]):
        out = tmp_path / f"o{len(list(tmp_path.iterdir()))}.png"
        assert main(["upscale", str(tmp_path / "a.png"), "-o", str(out), "--precision", "fp32", "-q", *flags]) == 0
        assert np.array_equal(np.asarray(Image.open(out)), want), flags
    assert np.array_equal(lightsr.Upscaler(f"{NAME}_x{SCALE}", tile=0, precision="fp32").upscale(rgb), want)
    profiles = []
    for flags in (["--weights", f"{NAME}_x{SCALE}"], ["--weights", NAME, "--scale", str(SCALE)],
                  ["--weights", str(path)]):
        assert main(["profile", *flags, "--json", "--input-size", "32x24"]) == 0
        profiles.append(json.loads(capsys.readouterr().out))
    assert all(p == profiles[0] for p in profiles)
    assert (profiles[0]["arch"], profiles[0]["scale"], profiles[0]["params"]) == (ref.arch, SCALE,
                                                                                 ref.num_trainable_params())
    from lightsr.serve import ModelEntry, WebApp

    web = WebApp([ModelEntry("b", NAME, None, SCALE)], tmp_path / "web").network("b")
    assert web.info == ref.info


def test_a_registered_network_without_bundled_weights_says_which_scales_it_has(capsys) -> None:
    missing = [(n, s) for n in lightsr.list_models() for s in (2, 3, 4) if bundled_path(n, s) is None]
    if not missing:
        pytest.skip("every network is bundled at every scale")
    name, scale = missing[0]
    have = ", ".join(f"×{s}" for s in sorted(bundled_weights(name))) or "none"
    assert main(["profile", "--weights", name, "--scale", str(scale)]) == 2
    assert _error_line(capsys) == (f"--weights {name}: no bundled weights for ×{scale} (bundled: {have}); pass a "
                                   "checkpoint file or a published name")
