"""The boundary, fuzzed: mutated checkpoints, images and configs give a correct result or a LightSRError.

Property-based (Hypothesis). Each property starts from valid inputs lightsr writes itself and mutates them the
way damaged or hostile files differ: flipped, inserted or removed bytes, truncation, header lengths, metadata
values, tensor shapes and dtypes; image headers, modes and sizes; config values of every type. The outcome must
be either a result (and then a correct one: a loaded network runs, a decoded image has the declared shape) or
a :class:`lightsr.errors.LightSRError` with a one-line message — never another exception.

``LIGHTSR_FUZZ_EXAMPLES`` sets the examples per property (default: a small CI profile);
``python scripts/fuzz.py`` runs the long profile in a child process under an address-space limit and prints
the counts.
"""

from __future__ import annotations

import io
import json
import os
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import lightsr
from lightsr.errors import LightSRError
from lightsr.models.registry import specs

EXAMPLES = int(os.environ.get("LIGHTSR_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 100, database=None,
                suppress_health_check=list(HealthCheck))
# Outcomes per property, printed by scripts/fuzz.py: how many inputs were accepted and how many refused.
OUTCOMES: Counter = Counter()


def _outcome(kind: str, fn) -> object | None:
    """Run ``fn``: a result, or a LightSRError with a one-line message; anything else fails the test."""
    try:
        result = fn()
    except LightSRError as e:
        assert "\n" not in str(e), str(e)
        OUTCOMES[f"{kind} refused"] += 1
        return None
    OUTCOMES[f"{kind} accepted"] += 1
    return result


def _write(tmp: Path, data: bytes, name: str) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


# -------------------------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, bytes]:
    """Small valid files of every registered family: lightsr safetensors and a torch.save'd container."""
    tmp = tmp_path_factory.mktemp("ckpt")
    small = {"elan": dict(num_blocks=2, channels=15, window_sizes=[2, 4, 8]),
             "hasn": dict(channels=12, num_blocks=1), "lksmn": dict(channels=12, num_blocks=1, heads=2)}
    out = {}
    torch.manual_seed(0)
    for family, cfg in small.items():
        name = next(s.name for s in specs() if s.family == family)
        net = lightsr.create_model(name, scale=2, **cfg)
        out[f"{family}.safetensors"] = lightsr.save_model(net, tmp / f"{family}.safetensors").read_bytes()
        buf = io.BytesIO()
        torch.save({"params_ema": net.state_dict(), "iter": 3}, buf)
        out[f"{family}.pth"] = buf.getvalue()
    return out


def _load_and_run(path: Path) -> None:
    net = lightsr.load_model(path)
    with torch.no_grad():
        y = net(torch.rand(1, 3, 5, 6))
    assert y.shape == (1, 3, 5 * net.scale, 6 * net.scale)


byte_edits = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]),
                                st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=0, max_size=4)


def _mutate(data: bytes, edits: list[tuple[str, float, int]]) -> bytes:
    b = bytearray(data)
    for op, where, value in edits:
        if not b:
            break
        i = int(where * len(b))
        if op == "flip":
            b[i] ^= value or 1
        elif op == "insert":
            b[i:i] = bytes([value]) * (1 + value % 7)
        elif op == "delete":
            del b[i:i + 1 + value % 64]
        else:
            del b[i:]
    return bytes(b)


@FUZZ
@given(which=st.sampled_from(["elan", "hasn", "lksmn"]), fmt=st.sampled_from(["safetensors", "pth"]),
       edits=byte_edits, head_bias=st.booleans())
def test_mutated_checkpoint_bytes(tmp_path_factory, checkpoints, which, fmt, edits, head_bias) -> None:
    data = checkpoints[f"{which}.{fmt}"]
    if head_bias:  # most structure (header length, JSON, zip directory) sits in the first kilobytes
        edits = [(op, where * min(1.0, 4096 / len(data)), v) for op, where, v in edits]
    path = _write(tmp_path_factory.mktemp("m"), _mutate(data, edits), f"x.{fmt}")
    _outcome("checkpoint bytes", lambda: _load_and_run(path))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


@FUZZ
@given(which=st.sampled_from(["elan", "hasn", "lksmn"]), field=st.sampled_from(["arch", "scale", "config", "key"]),
       value=json_values, raw=st.one_of(st.text(max_size=30), st.sampled_from(["4", "2", "lksmn", "hasn", "{}"])),
       use_raw=st.booleans(),
       header_len=st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_mutated_checkpoint_metadata(tmp_path_factory, checkpoints, which, field, value, raw, use_raw,
                                     header_len) -> None:
    data = checkpoints[f"{which}.safetensors"]
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header["__metadata__"]
    if field == "key":  # one key of the config replaced
        config = json.loads(meta["config"])
        config[sorted(config)[len(raw) % len(config)]] = value
        meta["config"] = json.dumps(config)
    else:
        meta[field] = raw if use_raw else json.dumps(value)
    body = json.dumps(header).encode()
    length = len(body) if header_len is None else header_len
    path = _write(tmp_path_factory.mktemp("m"), struct.pack("<Q", length) + body + data[8 + n:], "x.safetensors")
    _outcome("checkpoint metadata", lambda: _load_and_run(path))


@FUZZ
@given(which=st.sampled_from(["elan", "hasn", "lksmn"]), fmt=st.sampled_from(["safetensors", "pth"]),
       index=st.integers(0, 10_000), change=st.sampled_from(["shape", "dtype", "drop", "extra", "rename"]),
       dims=st.lists(st.integers(0, 9), min_size=0, max_size=5),
       dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.int64, torch.uint8,
                              torch.bool, torch.int8]))
def test_mutated_checkpoint_tensors(tmp_path_factory, checkpoints, which, fmt, index, change, dims, dtype) -> None:
    from safetensors.torch import load, save

    data = checkpoints[f"{which}.safetensors"]
    n = struct.unpack("<Q", data[:8])[0]
    meta = json.loads(data[8:8 + n])["__metadata__"]
    sd = dict(load(data))
    key = sorted(sd)[index % len(sd)]
    if change == "shape":
        sd[key] = torch.zeros(dims)
    elif change == "dtype":
        sd[key] = sd[key].to(dtype)
    elif change == "drop":
        del sd[key]
    elif change == "extra":
        sd[key + "_extra"] = torch.zeros(dims)
    else:
        sd["x" + key] = sd.pop(key)
    tmp = tmp_path_factory.mktemp("m")
    if fmt == "safetensors":
        path = _write(tmp, save(sd, metadata=meta), "x.safetensors")
    else:
        path = tmp / "x.pth"
        torch.save(sd, path)
    _outcome("checkpoint tensors", lambda: _load_and_run(path))


# ------------------------------------------------------------------------------------------------- images


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    """Valid small files in every format lightsr reads, in several modes."""
    g = np.random.default_rng(0)
    rgb = Image.fromarray(g.integers(0, 256, (13, 17, 3), dtype=np.uint8))
    out = {}
    for fmt, modes in {"PNG": ["RGB", "RGBA", "L", "LA", "P", "I;16"], "JPEG": ["RGB", "L"],
                       "WEBP": ["RGB", "RGBA"], "TIFF": ["RGB", "I;16", "CMYK"], "BMP": ["RGB"],
                       "GIF": ["P"]}.items():
        for mode in modes:
            im = rgb.convert("L").convert(mode) if mode == "I;16" else rgb.convert(mode)
            buf = io.BytesIO()
            im.save(buf, format=fmt)
            out[f"{mode}.{fmt.lower()}"] = buf.getvalue()
    return out


@FUZZ
@given(name=st.sampled_from(["RGB.png", "RGBA.png", "L.png", "LA.png", "P.png", "I;16.png", "RGB.jpeg", "L.jpeg",
                             "RGB.webp", "RGBA.webp", "RGB.tiff", "I;16.tiff", "CMYK.tiff", "RGB.bmp", "P.gif"]),
       edits=byte_edits, head_bias=st.booleans(),
       size=st.one_of(st.none(), st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))))
def test_mutated_images(tmp_path_factory, images, name, edits, head_bias, size) -> None:
    from lightsr.imageio import load_image

    data = bytearray(images[name])
    if size is not None and name.endswith(".png"):  # a PNG whose IHDR claims another size (CRC left stale)
        data[16:24] = struct.pack(">II", *size)
    if head_bias:  # headers and chunk tables sit in the first bytes
        edits = [(op, where * min(1.0, 256 / len(data)), v) for op, where, v in edits]
    data = _mutate(bytes(data), edits)
    path = _write(tmp_path_factory.mktemp("i"), data, "x." + name.split(".")[1])

    def decode():
        img = load_image(path, max_pixels=4_000_000)
        h, w, c = img.pixels.shape
        assert 1 <= c <= 4 and h * w <= 4_000_000 and img.pixels.dtype in (np.uint8, np.uint16)
        return img

    _outcome("image", decode)


# ------------------------------------------------------------------------------------------------ configs


@FUZZ
@given(section=st.sampled_from(["model", "data", "train", "val", "checkpoint", "log", "debug", "train.optimizer",
                                "train.scheduler", "top"]),
       key=st.sampled_from(["arch", "scale", "overrides", "hr_dirs", "patch_size", "batch_size", "max_iters", "lr",
                            "betas", "name", "milestones", "every", "sets", "repeat", "num_workers", "threads",
                            "ema_decay", "seed", "device", "grad_clip", "x"]),
       value=json_values)
def test_mutated_configs(section, key, value) -> None:
    from lightsr.train.config import config_from_dict

    raw: dict = {"model": {"arch": "lksmn", "scale": 4}, "data": {"hr_dirs": ["x"]}}
    target = raw
    if section != "top":
        for part in section.split("."):
            target = target.setdefault(part, {})
    target[key] = value
    _outcome("config", lambda: config_from_dict(raw))


def test_report(capsys) -> None:
    """Runs last (file order): the counts of this run, for scripts/fuzz.py."""
    with capsys.disabled():
        print("\nfuzz outcomes:", json.dumps(dict(sorted(OUTCOMES.items()))))
