"""The boundary, fuzzed: mutated checkpoints, images, configs, server answers and options give a correct result or
a LightSRError.

Property-based (Hypothesis). Each property starts from valid inputs lightsr writes itself and mutates them the
way damaged or hostile files differ: flipped, inserted or removed bytes, truncation, header lengths, metadata
values (nested to any depth), tensor shapes and dtypes; image headers, modes and sizes; config values of every
type; cached graphs and their manifests; a download server's status line, headers, chunking and body (served
by a local server on 127.0.0.1); ``--degrade`` specs; folder trees with symbolic links for ``upscale -r``'s
``**``. The outcome must be either a
result (and then a correct one: a loaded network runs, a decoded image has the declared shape, a download is the
exact file, a glob lists each real file once) or a :class:`lightsr.errors.LightSRError` with a one-line message
— never another exception, and never a file left behind.

``LIGHTSR_FUZZ_EXAMPLES`` sets the examples per property (default: a small CI profile;
``LIGHTSR_FUZZ_CACHE_EXAMPLES`` those of the cached-graph property, each of whose examples rebuilds an export);
``python scripts/fuzz.py`` runs the long profile in a child process under an address-space limit and prints
the counts.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
import struct
import time
from collections import Counter
from collections.abc import Callable
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


def _nested(depth: int, kind: str) -> str:
    """JSON nested ``depth`` levels deep (arrays, objects or both alternating), around a number."""
    opens, closes = [], []
    for i in range(depth):
        array = kind == "[" or (kind == "mix" and i % 2 == 1)
        opens.append("[" if array else '{"k":')
        closes.append("]" if array else "}")
    return "".join(opens) + "1" + "".join(reversed(closes))


deep_json = st.builds(_nested, st.integers(1, 5000), st.sampled_from(["[", "{", "mix"]))


@FUZZ
@given(which=st.sampled_from(["elan", "hasn", "lksmn"]), field=st.sampled_from(["arch", "scale", "config", "key"]),
       value=json_values,
       raw=st.one_of(st.text(max_size=30), st.sampled_from(["4", "2", "lksmn", "hasn", "{}"]), deep_json),
       use_raw=st.booleans(),
       header_len=st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_mutated_checkpoint_metadata(tmp_path_factory, checkpoints, which, field, value, raw, use_raw,
                                     header_len) -> None:
    data = checkpoints[f"{which}.safetensors"]
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header["__metadata__"]
    if field == "key":  # one key of the config replaced (by raw text: possibly not JSON, or nested deeply)
        config = json.loads(meta["config"])
        key = sorted(config)[len(raw) % len(config)]
        config[key] = value
        meta["config"] = json.dumps(config)
        if use_raw:
            meta["config"] = meta["config"].replace(json.dumps(key) + ": " + json.dumps(value), f'"{key}": {raw}', 1)
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


# ---------------------------------------------------------------------------------------------- downloads


PAYLOAD = bytes(np.random.default_rng(7).integers(0, 256, 3000, dtype=np.uint8))
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(scope="module")
def hostile_server():
    import hostile_http

    with hostile_http.HostileServer() as server:
        yield server


def _chunked_body(data: bytes, cuts: list[float], size_text: Callable[[int], str], trailers: list[bytes]) -> bytes:
    points = sorted({int(c * len(data)) for c in cuts} | {0, len(data)})
    out = b"".join(size_text(b - a).encode("latin-1") + b"\r\n" + data[a:b] + b"\r\n"
                   for a, b in itertools.pairwise(points) if b > a)
    return out + b"0\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n"


header_text = st.text(st.characters(codec="latin-1"), max_size=20)
statuses = st.one_of(
    st.sampled_from(["HTTP/1.1 200 OK", "HTTP/1.0 200 OK", "HTTP/1.1 206 Partial", "HTTP/1.1 301 Moved",
                     "HTTP/1.1 302 Found", "HTTP/1.1 307 Temporary", "HTTP/1.1 404 Not Found",
                     "HTTP/1.1 500 Error", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK", "HTTP/1.1 2OO OK",
                     "HTTP/9.9 200 OK", "ICY 200 OK", "HTTP/1.1", "", "HTTP/1.1 200 OK" + " " * 70_000]),
    header_text.map(lambda t: "HTTP/1.1 " + t))
headers = st.lists(st.one_of(
    st.tuples(st.just("Content-Length"), st.one_of(st.sampled_from(["3000", "0", "-1", "2999", "3001", "1e3",
                                                                      " 3000 ", "3000, 3000", "99999999999999"]),
                                                   st.integers(0, 10**6).map(str), header_text)),
    st.tuples(st.just("Transfer-Encoding"), st.sampled_from(["chunked", "gzip, chunked", "identity", "x"])),
    st.tuples(st.just("Location"), st.one_of(st.sampled_from(["/f", "/other", "http://127.0.0.1:1/x",
                                                              "file:///etc/passwd", "ftp://127.0.0.1/x",
                                                              "data:,x", "http://[::1", "//", "\x00"]),
                                             header_text)),
    st.tuples(st.sampled_from(["Content-Encoding", "Connection", "X-A"]), header_text),
    st.tuples(header_text, header_text)), max_size=6)
bodies = st.one_of(
    st.just("payload"), st.sampled_from(["empty", "short", "long"]),
    st.tuples(st.just("chunked"), st.lists(st.floats(0, 1), max_size=6),
              st.sampled_from(["hex", "HEX", "wrong", "garbage", "huge"]),
              st.lists(st.binary(max_size=30), max_size=3)),
    st.binary(max_size=200).map(lambda b: ("raw", b)))


def _response(status: str, hdrs: list[tuple[str, str]], body, many: int, edits) -> bytes:
    sizes: dict[str, Callable[[int], str]] = {"hex": lambda n: f"{n:x}", "HEX": lambda n: f"{n:X}",
                                              "wrong": lambda n: f"{n + 1:x}", "garbage": lambda n: "zz",
                                              "huge": lambda n: "f" * 40}
    if body == "payload":
        data = PAYLOAD
    elif body == "empty":
        data = b""
    elif body == "short":
        data = PAYLOAD[:1000]
    elif body == "long":
        data = PAYLOAD + b"x" * 100
    elif body[0] == "chunked":
        data = _chunked_body(PAYLOAD, body[1], sizes[body[2]], body[3])
    else:
        data = body[1]
    lines = [status, *(f"{k}: {v}" for k, v in hdrs), *(["X-Many: y"] * many)]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    return _mutate(head + data, edits)


@FUZZ
@given(status=statuses, hdrs=headers, body=bodies, many=st.sampled_from([0, 0, 0, 99, 101, 300]),
       edits=byte_edits)
def test_download_from_a_hostile_server(tmp_path_factory, hostile_server, status, hdrs, body, many,
                                        edits) -> None:
    """Whatever a server answers, a download is the exact file or one line — soon, and nothing stays behind."""
    import hostile_http
    from lightsr.download import download

    answer = _response(status, hdrs, body, many, edits)
    hostile_server.default = hostile_http.raw(answer)
    folder = tmp_path_factory.mktemp("d")
    dest = folder / "f.bin"

    def fetch():
        download(f"{hostile_server.url}/f", dest, size=len(PAYLOAD), sha256=PAYLOAD_SHA, label="fuzz", timeout=20)
        assert dest.read_bytes() == PAYLOAD
        return dest

    start = time.monotonic()
    result = _outcome("download", fetch)
    assert time.monotonic() - start < 60  # generous: the deadline is 20 s, the answers end at once
    assert sorted(p.name for p in folder.iterdir()) == ([] if result is None else ["f.bin"])


# --------------------------------------------------------------------------------------------- --degrade


degrade_parts = st.one_of(
    st.tuples(st.sampled_from(["jpeg", "noise", "blur"]), st.integers(1, 20)).map(lambda t: f"{t[0]}:{t[1]}"),
    st.tuples(st.sampled_from(["jpeg", "noise", "blur", "JPEG", "sharpen", ""]),
              st.sampled_from([":", "", "::", " : "]),
              st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                        st.integers(-10, 300).map(str), st.text(max_size=8))).map("".join),
    st.text(max_size=12))


@FUZZ
@given(parts=st.lists(degrade_parts, min_size=0, max_size=40).map(lambda p: p if len(p) % 3 else p[:9]),
       sep=st.sampled_from([",", ",", ", ", ",,", ";"]))
def test_degrade_specs(parts, sep) -> None:
    from lightsr.degradations import MAX_DEGRADE_OPS, parse_degrade

    spec = sep.join(parts)

    def parse():
        ops = parse_degrade(spec)
        assert 1 <= len(ops) <= MAX_DEGRADE_OPS and len(ops) == spec.count(",") + 1
        assert all(math.isfinite(op.value) for op in ops)
        return ops

    _outcome("degrade", parse)


# ------------------------------------------------------------------------------------------ globs, links


tree_paths = st.lists(st.lists(st.sampled_from(["a", "b", ".h"]), min_size=1, max_size=3).map("/".join),
                      max_size=6)


@FUZZ
@given(dirs=tree_paths, files=tree_paths, links=st.lists(st.tuples(tree_paths.map(lambda p: (p or ["a"])[0]),
                                                                 st.sampled_from([".", "..", "../..", "a", "/"])),
                                                       max_size=4),
       pattern=st.sampled_from(["**/*.png", "**", "*/**/*.png", "a/**/*.png", "**/.*.png", "**/a*.png",
                                "*/*/*.png", ".h/**"]))
def test_recursive_globs_through_symlinks(tmp_path_factory, dirs, files, links, pattern) -> None:
    """``upscale -r 'ROOT/PATTERN'`` lists what glob's rules give when ``**`` never enters a symlinked folder,
    each real file once — and ends, whatever links point back up the tree."""
    from lightsr.commands.upscale import _collect

    root = tmp_path_factory.mktemp("g")
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in files:
        target = root / (f + ".png")
        if target.parent.is_dir() and not target.exists():
            Image.new("RGB", (1, 1)).save(target)
    for at, to in links:
        link = root / at / "link"
        if link.parent.is_dir() and not os.path.lexists(link):
            link.symlink_to(root if to == "/" else to, target_is_directory=True)

    parts = pattern.split("/")
    if parts[-1] == "**":
        parts.append("*")
    first = next(i for i, q in enumerate(parts) if any(c in q for c in "*?["))
    hidden = any(q.startswith(".") for q in parts[first:])  # the pattern spells a dot where it has wildcards
    want = {p.resolve() for p in _expand(root, parts, hidden) if p.is_file() and p.suffix == ".png"}
    got, errors = _collect([f"{root}/{pattern}"], True)
    OUTCOMES["glob accepted" if got else "glob refused"] += 1
    resolved = [f.resolve() for f, _ in got]
    assert len(resolved) == len(set(resolved)) and set(resolved) == want
    assert bool(errors) == (not got)


def _expand(path: Path, parts: list[str], hidden: bool):
    """The reference: glob's rules (``**``: zero or more folders; a name starting with a dot matches a part that
    spells the dot, and anything only when ``hidden``: the wildcard part of the pattern has a dotted part), where
    ``**`` descends into real folders only while a named or wildcard part may pass through a link."""
    import fnmatch

    if not parts:
        yield path
        return
    head, rest = parts[0], parts[1:]
    if not path.is_dir():
        return
    entries = sorted(os.scandir(path), key=lambda e: e.name)
    if head == "**":
        yield from _expand(path, rest, hidden)
        for e in entries:
            if e.is_dir(follow_symlinks=False) and (hidden or not e.name.startswith(".")):
                yield from _expand(path / e.name, parts, hidden)
        return
    for e in entries:
        if fnmatch.fnmatchcase(e.name, head) and (hidden or not e.name.startswith(".") or head.startswith(".")):
            yield from _expand(path / e.name, rest, hidden)


# ------------------------------------------------------------------------------------------- cached graphs

# Each mutated cache is rebuilt (an export and its check): the property runs fewer examples than the others.
CACHE_EXAMPLES = int(os.environ.get("LIGHTSR_FUZZ_CACHE_EXAMPLES", str(min(EXAMPLES, 40))))


@pytest.fixture(scope="module")
def graph_cache(tmp_path_factory):
    """A checked, recorded export of a tiny network in a cache of its own, its bytes (graph and manifest) to
    restore before each example, another network's export of the same scale, and the reference output."""
    pytest.importorskip("onnxruntime")
    from lightsr.runtimes import artifacts, build

    home = tmp_path_factory.mktemp("graphcache")
    old = os.environ.get("LIGHTSR_HOME")
    os.environ["LIGHTSR_HOME"] = str(home)
    try:
        torch.manual_seed(0)
        net = lightsr.create_model("hasn", scale=2, channels=8, num_blocks=1).eval()
        other = lightsr.create_model("lksmn", scale=2, channels=12, num_blocks=1, heads=2).eval()
        path = Path(build(net, "onnxruntime", "fp32").path)
        other_bytes = Path(build(other, "onnxruntime", "fp32").path).read_bytes()
    finally:
        if old is None:
            os.environ.pop("LIGHTSR_HOME")
        else:
            os.environ["LIGHTSR_HOME"] = old
    x = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = net(x)
    manifest = artifacts.manifest_path(path)
    return {"home": home, "net": net, "path": path, "graph": path.read_bytes(), "manifest": manifest,
            "manifest_bytes": manifest.read_bytes(), "other": other_bytes, "x": x, "ref": ref}


@settings(FUZZ, max_examples=CACHE_EXAMPLES)
@given(target=st.sampled_from(["graph", "graph", "manifest", "both"]),
       kind=st.sampled_from(["bytes", "bytes", "other", "negate", "remove"]), edits=byte_edits,
       scale=st.sampled_from([-1.0, 0.0, 0.5, 2.0]))
def test_mutated_cached_graphs(monkeypatch_module, graph_cache, target, kind, edits, scale) -> None:
    """The cached export (or its manifest) changed the ways a disk, a copy or another user changes it: the next
    runtime gives the network's own output within 1e-4, or a one-line LightSRError — never another output."""
    import onnx
    from onnx import numpy_helper

    from lightsr.runtimes import build

    c = graph_cache
    path, manifest = c["path"], c["manifest"]
    path.write_bytes(c["graph"])
    manifest.write_bytes(c["manifest_bytes"])
    for which in (("graph", "manifest") if target == "both" else (target,)):
        f = path if which == "graph" else manifest
        if kind == "remove":
            f.unlink()
        elif kind == "other" and which == "graph":
            f.write_bytes(c["other"])
        elif kind == "negate" and which == "graph":
            proto = onnx.load_from_string(c["graph"])
            init = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)) if t.data_type == 1 else -1)
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * scale, init.name))
            f.write_bytes(proto.SerializeToString())
        else:
            f.write_bytes(_mutate(f.read_bytes(), edits))
    monkeypatch_module.setenv("LIGHTSR_HOME", str(c["home"]))
    rt = _outcome("cached graph", lambda: build(c["net"], "onnxruntime", "fp32"))
    if rt is not None:
        with torch.no_grad():
            err = float((rt.forward(c["x"]) - c["ref"]).abs().max())
        assert err <= 1e-4, (target, kind, edits, scale, err)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()



def test_report(capsys) -> None:
    """Runs last (file order): the counts of this run, for scripts/fuzz.py."""
    with capsys.disabled():
        print("\nfuzz outcomes:", json.dumps(dict(sorted(OUTCOMES.items()))))
