"""What generic code needs to know about an architecture, in one record per registered network.

Each architecture package (``lightsr/models/<arch>/``) builds its :class:`ModelSpec` next to the network and
the registry collects them; checkpoints, tiling, export, training and the upscaler read these records and never
name an architecture themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    from lightsr.models.base import SRNet

StateDict = dict[str, "torch.Tensor"]
# (state dict in lightsr's keys, source named in errors) → constructor arguments including ``scale``
ConfigReader = Callable[[StateDict, str], dict[str, Any]]
# (state dict in a foreign layout, source) → the same weights under lightsr's keys
Converter = Callable[[StateDict, str], StateDict]
# config → None, or ValueError("key: what is wrong") for a value outside what the network is meant to run with
ConfigCheck = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TilingSpec:
    """How to tile one architecture so that tiles compute what the whole image would.

    ``overlap``: default context, in input pixels, on each side of a core (tile 64 then agrees with the
    whole-image output to ≥ 48 dB on natural images, see tests/test_tiling.py). ``align``: core borders and
    context are multiples of it. ``bytes_per_pixel``: peak fp32 activation memory per input pixel of a tile
    (CPU, ×4, inference mode, output included; the largest of the training and inference forms, see
    benchmarks/README.md); about halved for 16-bit precisions. ``wrap``: the network mixes opposite image
    borders (ELAN's cyclically shifted windows), so border tiles take their context from the opposite border
    too (see :class:`lightsr.seams.SeamHooks`).

    ``global_context``: the network pools or attends over the whole image, so blended tiles are only
    approximate; its inference form tiles exactly instead, layer by layer
    (:attr:`lightsr.models.base.InferenceForm.forward_tiled`), keeping LR-resolution feature maps of the whole
    image. Its memory, measured like ``bytes_per_pixel`` (fp32; exactly halved for 16-bit maps):
    ``map_bytes_per_pixel`` per pixel of the image (the full-size maps) plus ``stream_bytes_per_pixel`` per
    pixel of one tile's window, the core plus ``stream_halo`` pixels on each side.
    """

    overlap: int = 48
    align: int = 1
    bytes_per_pixel: int = 16_000
    wrap: bool = False
    global_context: bool = False
    map_bytes_per_pixel: int = 0
    stream_bytes_per_pixel: int = 0
    stream_halo: int = 0


@dataclass(frozen=True)
class Int8Spec:
    """How the network's int8 graph is made (:mod:`lightsr.runtimes.int8`: NNCF's post-training quantization of its
    ONNX export for OpenVINO), chosen per network by measurement (``benchmarks/int8.py``).

    ``keep_f32``: regular expressions over the node names of the exported graph (its module paths, e.g.
    ``/model/head/Conv``, matched from the start) of the layers left in float32. ``model_type``:
    ``"transformer"`` is NNCF's scheme for attention networks — additions, multiplications, normalisations and
    divisions stay float32, activations are quantized asymmetrically — ``"cnn"`` its default (every input of a
    convolution, matmul, addition and multiplication quantized symmetrically).
    """

    keep_f32: tuple[str, ...] = ()
    model_type: Literal["cnn", "transformer"] = "transformer"


@dataclass(frozen=True)
class Layout:
    """A checkpoint layout: the key prefix that only this layout has, and how to bring it to lightsr's keys."""

    name: str
    marker: str
    convert: Converter | None = None  # None: the keys are lightsr's own
    notes: str = ""  # what this layout cannot express (settings read from defaults), for the docs


@dataclass(frozen=True)
class PublishedWeights:
    """A checkpoint published by others, fetched on first use (:mod:`lightsr.hub`).

    ``size``: the file's length in bytes (a download stops at one byte more). ``param_key``: the container entry
    its publisher evaluates (None: lightsr's default choice). ``scores``: ``(set, Y-PSNR, SSIM)`` ×scale as
    lightsr measures them (tests/test_evaluate.py checks them).
    """

    name: str
    scale: int
    url: str
    sha256: str
    size: int
    license: str
    source: str
    param_key: str | None = None
    scores: tuple[tuple[str, float, float], ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    """One registered network: how to build it, recognise its checkpoints, tile, export and train it.

    ``family``: networks sharing a class and its checkpoint layouts (``elan`` and ``elan_light``) name the same
    family; a checkpoint of the family is given the registry name whose ``defaults`` it matches.
    ``config_from_weights`` reads the constructor arguments from a state dict in lightsr's keys; settings in
    ``undetectable`` leave no trace in the weights: lightsr's own files store them, anything else gets the
    defaults (and the log says so); ``check_config`` bounds the values a file's metadata may give them (the
    tensors bound everything else). ``output_prefixes``: keys of the layers whose shape depends on the scale,
    the only ones a warm start from another scale may skip. ``precisions``: what the network runs in.
    ``published``: checkpoints of others that :mod:`lightsr.hub` downloads on demand. ``title``: the name the
    paper uses (spandrel's architecture name). ``int8``: how its OpenVINO int8 graph is made (None: no int8).
    """

    name: str
    network: type[SRNet]
    paper: str
    config_from_weights: ConfigReader
    defaults: dict[str, Any] = field(default_factory=dict)
    scales: tuple[int, ...] = (2, 3, 4)
    family: str = ""
    layouts: tuple[Layout, ...] = ()
    undetectable: tuple[str, ...] = ()
    check_config: ConfigCheck | None = None
    tiling: TilingSpec = field(default_factory=TilingSpec)
    output_prefixes: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ("fp32", "bf16", "fp16")
    published: tuple[PublishedWeights, ...] = ()
    title: str = ""  # the paper's name for it ("ELAN-light"); default: the registry name upper-cased
    # The form exported for the graph runtimes (--backend onnxruntime/openvino): the inference form unless its
    # rearrangements for eager CPU PyTorch (pixel chunks, convs on phases) make the graph slower there.
    graph_form: Literal["fused", "training"] = "fused"
    int8: Int8Spec | None = None

    def __post_init__(self) -> None:
        if self.int8 is not None and "int8" not in self.precisions:
            object.__setattr__(self, "precisions", (*self.precisions, "int8"))
        if not self.family:
            object.__setattr__(self, "family", self.name)
        if not self.title:
            object.__setattr__(self, "title", self.name.upper())
