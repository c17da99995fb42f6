"""Exported ``.onnx`` files a user names (``lightsr upscale --onnx``): what every runtime that runs such files
checks before the first image. :func:`open_exported` reads the file once (at most :data:`MAX_FILE_BYTES`) and
checks, on those bytes: an ONNX model with a graph, weights inside the file (no external data), lightsr's metadata
(``scale`` required; ``arch``, ``config``) and one float ``N×3×H×W`` input. The runtime then builds its session
from the same bytes (what was checked is what runs, and a file cannot make it read others) and runs
:data:`PROBE_SIZE` through it: the output must be ×scale of the input (:func:`check_output`).

A file is not one of lightsr's cached exports: nothing says how it was made, so anything else is a one-line
:class:`~lightsr.errors.OnnxModelError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightsr import _json, _optional
from lightsr.errors import OnnxModelError, first_line

# The largest scale factor a file's metadata may state (the networks are ×2–×4; ×16 leaves room).
MAX_SCALE = 16
# The input the load-time probe runs: odd, non-square, below every network's window and minimum size.
PROBE_SIZE = (7, 9)
# The largest file read: lightweight networks export to a few MB, the largest SR networks to a few hundred.
MAX_FILE_BYTES = 1 << 30


@dataclass(frozen=True)
class FileMetadata:
    """What lightsr wrote into an exported file: ``scale``, ``arch`` (None if absent), ``config`` (the network's
    keyword arguments, None if absent) and every entry as read (``entries``)."""

    scale: int
    arch: str | None
    config: dict[str, Any] | None
    entries: dict[str, str] = field(default_factory=dict)


def read_metadata(path: Path, meta: Mapping[str, str]) -> FileMetadata:
    """``scale`` (required), ``arch`` and ``config`` (JSON) as lightsr wrote them into the file at ``path``;
    anything else is an error naming the file and the entry."""
    def bad(key: str, expected: str) -> OnnxModelError:
        value = meta[key]
        shown = repr(value if len(value) <= 40 else value[:40] + "…")
        return OnnxModelError(f"{path}: bad lightsr metadata {key}={shown} (expected {expected})")

    if "scale" not in meta:
        raise OnnxModelError(f"{path}: no lightsr metadata (scale); export it with `lightsr export`")
    text = meta["scale"].strip()
    if not re.fullmatch(r"[0-9]{1,3}", text) or not 1 <= int(text) <= MAX_SCALE:
        raise bad("scale", f"an integer from 1 to {MAX_SCALE}")
    arch = meta.get("arch")
    if arch is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", arch):
        raise bad("arch", "a network name")
    config = None
    if "config" in meta:
        try:
            config = _json.loads(meta["config"])
        except ValueError:
            config = None
        if not isinstance(config, dict):
            raise bad("config", "a JSON object")
    return FileMetadata(int(text), arch, config, dict(meta))


def check_input(path: Path, inputs: Sequence[tuple[str, str, Sequence[int | str] | None]]) -> str:
    """The name of the graph's one input, if it is float32 of rank 4 with 3 channels (or a symbolic count);
    ``inputs``: (name, element type, dims — ints, or names where symbolic; None for an unknown rank) of each."""
    if len(inputs) == 1:
        name, kind, dims = inputs[0]
        if kind == "float" and dims is not None and len(dims) == 4 and (dims[1] == 3 or not isinstance(dims[1], int)):
            return name
    got = ", ".join(f"{name or '(unnamed)'} {kind} {'?' if dims is None else list(dims)}"
                    for name, kind, dims in inputs) or "no input"
    raise OnnxModelError(f"{path}: expected one float input N×3×H×W, the graph takes {got}")


def check_output(path: Path, out_shape: Sequence[int], in_shape: Sequence[int], scale: int) -> None:
    """The output of an ``N×3×H×W`` input is ``N×3×sH×sW`` for the metadata's scale ``s``."""
    n, _, h, w = in_shape
    expected = (n, 3, h * scale, w * scale)
    if tuple(out_shape) != expected:
        raise OnnxModelError(f"{path}: output {'×'.join(map(str, out_shape))} for a "
                             f"{'×'.join(map(str, in_shape))} input is not ×{scale} (its metadata "
                             f"scale); expected {'×'.join(map(str, expected))}")


@dataclass(frozen=True)
class ExportedFile:
    """An exported file read and checked by :func:`open_exported`: its bytes (build the runtime's session from
    these), their SHA-256, its metadata and the name of its input."""

    path: Path
    data: bytes = field(repr=False)
    sha256: str
    metadata: FileMetadata
    input_name: str


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor a graph holds: initializers (sparse ones too) and node attributes, subgraphs included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def open_exported(path: str | os.PathLike) -> ExportedFile:
    """The file at ``path`` read once and checked (the module's list); ``onnx`` is needed
    (``pip install 'lightsr[onnx]'``)."""
    path = Path(path)
    onnx = _optional.load("onnx", "ONNX support", "onnx")
    try:
        if not path.is_file():
            raise OnnxModelError(f"{path}: no such ONNX file")
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise OnnxModelError(f"{path}: cannot read it ({e.strerror or e})") from None
    if len(data) > MAX_FILE_BYTES:
        raise OnnxModelError(f"{path}: larger than the {MAX_FILE_BYTES >> 20} MiB an exported network may have")
    try:
        proto = onnx.load_from_string(data)
    except Exception as e:  # protobuf's DecodeError, onnx's own errors
        raise OnnxModelError(f"{path}: cannot load ONNX model ({first_line(e, 200)})") from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise OnnxModelError(f"{path}: cannot load ONNX model (no graph in it)")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in _tensors(proto.graph)):
        raise OnnxModelError(f"{path}: its weights are in external data files; lightsr runs self-contained "
                             "files, as `lightsr export` writes them")
    meta = read_metadata(path, {p.key: p.value for p in proto.metadata_props})
    weights = {t.name for t in proto.graph.initializer}
    inputs = []
    for i in proto.graph.input:
        if i.name in weights:  # an initializer listed as an input (older exporters): a constant, not an input
            continue
        tt = i.type.tensor_type
        kind = onnx.TensorProto.DataType.Name(tt.elem_type).lower() if i.type.HasField("tensor_type") else "?"
        dims = ([d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in tt.shape.dim]
                if tt.HasField("shape") else None)
        inputs.append((i.name, kind, dims))
    name = check_input(path, inputs)
    return ExportedFile(path, data, hashlib.sha256(data).hexdigest(), meta, name)
