"""Checkpoint loading: layout detection, containers, lightsr's format, and the errors users hit."""

from __future__ import annotations

import json
import logging
import os
import pickle

import numpy as np
import pytest
import torch

import lightsr
from conftest import require_shared
from lightsr.checkpoints import CheckpointError, detect, load_state_dict, read_checkpoint


def _golden_io(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    d = np.load(require_shared(f"golden/{case}.npz"))
    return torch.from_numpy(d["input_a"]), torch.from_numpy(d["output_a"])


def _max_err(model: torch.nn.Module, case: str) -> float:
    x, ref = _golden_io(case)
    with torch.no_grad():
        return (model(x) - ref).abs().max().item()


@pytest.mark.parametrize(
    ("rel", "key", "layout", "arch", "scale"),
    [
        ("golden/elan_light_x2_random.pth", None, "official ELAN", "elan_light", 2),
        ("golden/elan_x4_random.pth", None, "official ELAN", "elan", 4),
        ("weights/ELAN-light_x4_FriedRiceLab.pth", None, "FriedRiceLab ELAN", "elan_light", 4),
        ("weights/HASN_x4_official.pth", "params", "official HASN (BasicSR)", "hasn", 4),
        ("golden/hasn_x3_random.pth", None, "official HASN (BasicSR)", "hasn", 3),
    ],
)
def test_detects_each_foreign_layout(rel: str, key: str | None, layout: str, arch: str, scale: int) -> None:
    sd, _ = read_checkpoint(require_shared(rel), param_key=key)
    name, found_layout, config, _ = detect(sd)
    assert (name, found_layout, config["scale"]) == (arch, layout, scale)


def test_prefers_params_ema_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    path = require_shared("weights/HASN_x4_official.pth")
    with caplog.at_level(logging.INFO, logger="lightsr"):
        model = lightsr.load_model(path)
    assert "using 'params_ema'" in caplog.text
    assert _max_err(model, "hasn_x4_official_params_ema") <= 1e-5
    assert _max_err(model, "hasn_x4_official_params") > 1e-3  # the two entries really differ
    assert _max_err(lightsr.load_model(path, param_key="params"), "hasn_x4_official_params") <= 1e-5


def test_safetensors_round_trip_is_identical(tmp_path) -> None:
    model = lightsr.load_model(require_shared("weights/ELAN-light_x4_FriedRiceLab.pth"))
    out = lightsr.save_model(model, tmp_path / "elan.safetensors")
    again = lightsr.load_model(out)
    assert again.info == model.info
    x, _ = _golden_io("elan_light_x4_friedricelab")
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


@pytest.mark.parametrize("name", lightsr.list_models())
def test_plain_state_dict_of_own_layout_with_wrappers(tmp_path, name: str) -> None:
    """A DDP/compile-wrapped ``state_dict`` inside a trainer container loads without hints."""
    torch.manual_seed(1)
    model = lightsr.create_model(name, scale=3).eval()
    sd = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "ckpt.pth")
    loaded = lightsr.load_model(tmp_path / "ckpt.pth")
    assert (loaded.arch, loaded.scale) == (name, 3)
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("container, prefix", [
    ("params-ema", ""), ("params_ema", "netG."), ("model_state_dict", "module."), ("generator_g", ""),
])
def test_containers_of_spandrel_based_trainers(tmp_path, container: str, prefix: str) -> None:
    """traiNNer-redux/neosr-style files (``params-ema``, a ``netG.`` prefix, one arbitrary top-level entry) load
    without hints, from a file and from memory; a prefix only some keys have is kept."""
    name = lightsr.list_models()[0]
    torch.manual_seed(2)
    model = lightsr.create_model(name, scale=2).eval()
    sd = {f"{prefix}{k}": v for k, v in model.state_dict().items()}
    torch.save({container: sd}, tmp_path / "ckpt.pth")
    x = torch.rand(1, 3, 8, 10)
    for loaded in (lightsr.load_model(tmp_path / "ckpt.pth"), load_state_dict({container: sd})):
        assert (loaded.arch, loaded.scale) == (name, 2)
        with torch.no_grad():
            assert torch.equal(model(x), loaded(x))
    partial = dict(model.state_dict())
    key = next(iter(partial))
    partial[f"netG.{key}"] = partial.pop(key)
    with pytest.raises(CheckpointError):
        load_state_dict(partial)


def test_low_memory_shift_conv_variant_of_official_elan(tmp_path) -> None:
    """The official code's other ShiftConv2d (a masked 3×3 conv) converts to the same network."""
    from lightsr.models.elan import shift_kernel

    sd, _ = read_checkpoint(require_shared("golden/elan_light_x2_random.pth"))
    out = {}
    for k, v in sd.items():
        if k.endswith("shift_conv.weight"):
            continue
        if k.endswith("shift_conv.conv1x1.weight"):
            base = k[: -len("conv1x1.weight")]
            mask = shift_kernel(v.shape[1]).transpose(0, 1).expand(v.shape[0], -1, -1, -1).clone()
            w = torch.randn(v.shape[0], v.shape[1], 3, 3)  # off-mask taps are ignored by the official code
            w = w * (1 - mask) + mask * v
            out[base + "w"], out[base + "m"] = w, mask
        elif k.endswith("shift_conv.conv1x1.bias"):
            out[k[: -len("conv1x1.bias")] + "b"] = v
        else:
            out[k] = v
    torch.save(out, tmp_path / "lowmem.pth")
    assert _max_err(lightsr.load_model(tmp_path / "lowmem.pth"), "elan_light_x2_random") <= 1e-5


def test_wrong_scale_is_refused_naming_the_detected_one() -> None:
    with pytest.raises(CheckpointError, match=r"hasn ×4 checkpoint, but scale 2 was requested"):
        lightsr.load_model(require_shared("weights/HASN_x4_official.pth"), scale=2)


def test_wrong_arch_is_refused() -> None:
    with pytest.raises(CheckpointError, match=r"is a hasn ×4 checkpoint .* not elan_light"):
        lightsr.load_model(require_shared("weights/HASN_x4_official.pth"), name="elan_light")


def test_truncated_file_is_refused(tmp_path) -> None:
    data = require_shared("golden/hasn_x2_random.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth: truncated or not a PyTorch checkpoint"):
        lightsr.load_model(tmp_path / "cut.pth")
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        lightsr.load_model(tmp_path / "cut.safetensors")


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_payload_is_refused_and_not_run(tmp_path) -> None:
    torch.save({"params": {"w": torch.zeros(1)}, "evil": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused — the file needs arbitrary pickle code"):
        lightsr.load_model(tmp_path / "evil.pth")
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(CheckpointError, match="refused"):
        lightsr.load_model(raw)


def test_missing_and_unexpected_keys_are_named(tmp_path) -> None:
    sd, _ = read_checkpoint(require_shared("golden/hasn_x2_random.pth"))
    sd = dict(sd)
    del sd["block_3.esa.conv2.weight"]
    sd["block_3.extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as e:
        lightsr.load_model(tmp_path / "bad.pth")
    msg = str(e.value)
    assert "does not fit hasn ×2" in msg
    assert "missing keys: blocks.2.esa.conv2.weight" in msg
    assert "unexpected keys: blocks.2.extra.weight" in msg


def test_unrecognised_and_missing_files() -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        lightsr.load_model("/nonexistent/model.pth")


def test_unknown_layout(tmp_path) -> None:
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="cannot recognise the architecture"):
        lightsr.load_model(tmp_path / "x.pth")


def test_files_are_recognised_by_content_not_name(tmp_path) -> None:
    net = lightsr.create_model("lksmn", scale=2, channels=12, num_blocks=1)
    odd = lightsr.save_model(net, tmp_path / "net.safetensors").rename(tmp_path / "NET.ST")
    assert lightsr.load_model(odd).scale == 2  # a safetensors file under any name
    with pytest.raises(CheckpointError, match="--param-key params does not apply: a safetensors file holds"):
        lightsr.load_model(odd, param_key="params")
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")
    with pytest.raises(CheckpointError, match=r"m\.onnx: an ONNX model, not a weights file"):
        lightsr.load_model(tmp_path / "m.onnx")
    (tmp_path / "img.pth").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        lightsr.load_model(tmp_path / "img.pth")
    # Bytes that look like a legacy pickle but are not one: refused in one line, not a KeyError traceback.
    (tmp_path / "junk.pth").write_bytes(b"\x80\x02e" + bytes(32))
    with pytest.raises(CheckpointError, match=r"junk\.pth: truncated or not a PyTorch checkpoint"):
        lightsr.load_model(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="is a folder"):
        lightsr.load_model(tmp_path)


# ------------------------------------------------------------------- metadata checked against the tensors


def _lksmn_file(tmp_path, meta: dict[str, str] | None = None, sd: dict | None = None):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = sd if sd is not None else {k: v.contiguous() for k, v in lightsr.create_model("lksmn", scale=4,
                                                                                         num_blocks=2).state_dict().items()}
    base = {"arch": "lksmn", "scale": "4", "config": json.dumps({"channels": 48, "num_blocks": 2})}
    path = tmp_path / "m.safetensors"
    save_file(state, str(path), metadata={**base, **(meta or {})})
    return path, state


@pytest.mark.parametrize(("meta", "message"), [
    ({"config": json.dumps({"num_blocks": 10_000_000})}, "metadata config num_blocks=10000000, but the tensors show 2"),
    ({"config": json.dumps({"channels": 200_000})}, "metadata config channels=200000, but the tensors show 48"),
    ({"scale": "abc"}, "metadata scale 'abc' disagrees with the tensors (×4)"),
    ({"scale": "3"}, "metadata scale '3' disagrees with the tensors (×4)"),
    ({"config": "{not json"}, "metadata config is not JSON"),
    ({"config": "[1, 2]"}, "metadata config is a list, not an object"),
    ({"config": json.dumps({"depth": 3})}, "metadata config has unknown key 'depth'"),
    ({"arch": "hasn"}, "metadata says arch 'hasn', but the tensors are a lksmn network"),
    ({"arch": "srcnn"}, "metadata arch 'srcnn' is not a known network"),
    ({"config": json.dumps({"kernels": [[3, 5, 1000], [5, 7, 3], [7, 9, 4]]})}, "metadata config kernels: expected"),
    ({"config": json.dumps({"kernels": "big"})}, "metadata config kernels: expected"),
    ({"config": "[" * 100_000 + "]" * 100_000}, "metadata config is nested deeper than 32 levels"),
    ({"config": '{"channels": ' + "[" * 33 + "]" * 33 + "}"}, "metadata config is nested deeper than 32 levels"),
    ({"config": '{"channels": ' + "[" * 31 + "]" * 31 + "}"}, "metadata config channels=[[[["),  # 32: read
    ({"arch": "x" * 100_000}, "metadata arch 'xxxx"),
])
def test_metadata_is_checked_against_the_tensors_before_building(tmp_path, meta, message) -> None:
    """Metadata that asks for a huge network, or disagrees with the tensors, is a one-line error naming the key,
    decided in milliseconds from the tensors' shapes — nothing is built from it."""
    import resource
    import time

    path, _ = _lksmn_file(tmp_path, meta)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError) as e:
        lightsr.load_model(path)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert str(path) in str(e.value) and len(str(e.value)) < len(str(path)) + 300  # untrusted values cut short
    # No allocation beyond the file's own tensors (a 10M-block LKSMN would need gigabytes).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB
    assert time.perf_counter() - t0 < 30  # generous: a hang would be the failure


def test_a_deeply_nested_header_is_one_line(tmp_path) -> None:
    """A safetensors header nested 100,000 levels deep: recognised as safetensors, refused in one line (it was a
    RecursionError)."""
    import struct

    body = ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(body)) + body)
    with pytest.raises(CheckpointError, match=r"not a readable safetensors file") as e:
        lightsr.load_model(path)
    assert "\n" not in str(e.value)


def test_non_float_weights_are_refused(tmp_path) -> None:
    """Bool weights used to load (cast to 0/1) and make an all-white image."""
    torch.manual_seed(0)
    sd = {k: v.contiguous() for k, v in lightsr.create_model("lksmn", scale=4, num_blocks=2).state_dict().items()}
    sd["shallow.weight"] = sd["shallow.weight"] > 0
    path, _ = _lksmn_file(tmp_path, sd=sd)
    with pytest.raises(CheckpointError, match=r"tensor shallow.weight is bool, not floating point"):
        lightsr.load_model(path)
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match=r"tensor shallow.weight is bool, not floating point"):
        lightsr.load_model(tmp_path / "m.pth")


def test_consistent_metadata_loads_and_integer_buffers_stay_integers(tmp_path) -> None:
    path, state = _lksmn_file(tmp_path)
    model = lightsr.load_model(path)
    assert model.info.config["num_blocks"] == 2
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    # ELAN's BatchNorm counters are int64 buffers: they load, and a float one is refused.
    net = lightsr.create_model("elan_light", scale=2, num_blocks=2)
    saved = lightsr.save_model(net, tmp_path / "e.safetensors")
    assert lightsr.load_model(saved).info == net.info
    sd = net.state_dict()
    sd["body.0.gmsa.project_inp.1.num_batches_tracked"] = torch.tensor(1.0)
    torch.save(sd, tmp_path / "e.pth")
    with pytest.raises(CheckpointError, match="num_batches_tracked is float32, not an integer"):
        lightsr.load_model(tmp_path / "e.pth")


def test_a_failed_save_leaves_nothing(tmp_path, monkeypatch) -> None:
    import safetensors.torch

    def full_disk(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(CheckpointError, match="cannot write \\(No space left on device\\)"):
        lightsr.save_model(lightsr.create_model("lksmn", scale=2, num_blocks=1), tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch) -> None:
    """Ctrl-C while the new file is being written: the previous file stays as it was, nothing else appears."""
    import safetensors.torch

    dest = lightsr.save_model(lightsr.create_model("lksmn", scale=2, num_blocks=1), tmp_path / "m.safetensors")
    before = dest.read_bytes()
    real_save = safetensors.torch.save_file

    def interrupted(sd, filename, metadata=None):
        real_save(sd, filename, metadata=metadata)  # the temporary is complete, the rename has not happened
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lightsr.save_model(lightsr.create_model("lksmn", scale=2, num_blocks=2), dest)
    assert list(tmp_path.iterdir()) == [dest] and dest.read_bytes() == before
