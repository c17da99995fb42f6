"""int8 on OpenVINO: NNCF's post-training quantization of a network's ONNX export, checked and cached.

A network whose spec has an :class:`~lightsr.models.spec.Int8Spec` gets an int8 graph: its cached ONNX export
(:func:`lightsr.runtimes.graphs.cached_export`) quantized by NNCF (``nncf.quantize``, OpenVINO backend) as the spec
says — the layers it names left in float32, NNCF's scheme for the rest — and calibrated on natural images. It is
built on first use and cached beside the export as a verified artifact (:mod:`lightsr.runtimes.artifacts`) under
the export's key plus the calibration's identity (the SHA-256 of the exact calibration inputs); it is kept only
once it passes a check: scored like ``lightsr eval`` (Y-PSNR on the calibration images' downscaled centres against
the images), it may lose at most :data:`MAX_DROP_DB` against the float32 export.

Calibration needs no research images: by default the photos of scikit-image's data module that its docs release
into the public domain or under CC0 (:data:`CALIBRATION_PHOTOS`), downscaled by the network's scale like the
inputs it was trained on; or a folder of the user's own images, taken as the inputs they are
(:func:`calibration_set`, ``--calibration DIR``).

``nncf``, ``openvino`` and ``scikit-image`` (``pip install 'lightsr[int8]'``) are imported only when a graph is built.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lightsr import _optional
from lightsr.errors import LightSRError, UsageError
from lightsr.models.base import SRNet
from lightsr.models.registry import model_spec
from lightsr.runtimes import artifacts
from lightsr.runtimes.base import Runtime
from lightsr.runtimes.graphs import Whole, built_from, cached_export, export_dir, weights_key

if TYPE_CHECKING:
    from lightsr.models.spec import Int8Spec

log = logging.getLogger("lightsr")

# scikit-image's data module: photos its docs release into the public domain (astronaut: NASA; rocket: SpaceX)
# or under CC0 (the others); camera, brick, grass and gravel are grayscale and run as gray RGB.
CALIBRATION_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "brick", "grass", "gravel")
# Calibration inputs: PATCHES crops of PATCH×PATCH input pixels, taken in turn from the images at seeded places.
PATCH = 64
PATCHES = 48
# A calibration folder: at most this many images (evenly spaced in name order). The check scores a centre crop of
# at most CHECK_SIZE² pixels of each image.
MAX_IMAGES = 64
CHECK_SIZE = 512
# The check: the mean Y-PSNR over the check images may drop by at most this much from the float32 export's.
MAX_DROP_DB = 0.1
# What changes the calibration inputs' recipe; part of their identity.
RECIPE = 1
# The packages building an int8 graph needs, and the extra installing them.
REQUIRES = ("nncf", "openvino", "onnx")
EXTRA = "int8"


def available() -> bool:
    """Whether int8 graphs can be built here (NNCF, OpenVINO, onnx and scikit-image installed)."""
    return not _optional.missing(*REQUIRES, "skimage")


class QuantizationError(LightSRError, RuntimeError):
    """An int8 graph that failed its check; the message names the network, the figure and what to do instead."""


@dataclass(frozen=True)
class Calibration:
    """What an int8 graph is calibrated and checked on.

    ``inputs``: float32 ``1×3×h×w`` arrays in [0, 1], the network inputs NNCF collects statistics on. ``pairs``:
    ``(low-resolution input, image)`` uint8 pairs the check scores. ``source``: where they came from, in words.
    ``identity``: the SHA-256 of all of them, part of the cached graph's key.
    """

    inputs: tuple[np.ndarray, ...]
    pairs: tuple[tuple[np.ndarray, np.ndarray], ...]
    source: str
    identity: str


def _rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def _photos() -> list[np.ndarray]:
    data = _optional.load("skimage.data", "--precision int8 (its calibration photos, or --calibration DIR)", EXTRA)
    return [_rgb(getattr(data, name)()) for name in CALIBRATION_PHOTOS]


def _folder_images(folder: Path) -> list[np.ndarray]:
    from lightsr.formats import INPUT_EXTENSIONS
    from lightsr.imageio import ImageReadError, read_image

    if not folder.is_dir():
        raise UsageError(f"--calibration {folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in INPUT_EXTENSIONS and p.is_file())
    if not files:
        raise UsageError(f"--calibration {folder}: no images ({', '.join(INPUT_EXTENSIONS)})")
    if len(files) > MAX_IMAGES:
        files = [files[round(i * (len(files) - 1) / (MAX_IMAGES - 1))] for i in range(MAX_IMAGES)]
    try:
        return [read_image(p, "RGB") for p in files]
    except ImageReadError as e:
        raise UsageError(f"--calibration: {e}") from None


def _crops(images: Sequence[np.ndarray], n: int, size: int, seed: int) -> list[np.ndarray]:
    """``n`` crops of at most ``size``² pixels, taken in turn from each image at seeded places."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = images[i % len(images)]
        h, w = img.shape[:2]
        y, x = int(rng.integers(0, max(h - size, 0) + 1)), int(rng.integers(0, max(w - size, 0) + 1))
        out.append(img[y:y + size, x:x + size])
    return out


def _centre(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return img[y:y + size, x:x + size]


def calibration_set(scale: int, folder: str | os.PathLike | None = None) -> Calibration:
    """The calibration of an int8 graph at ``scale``: :data:`CALIBRATION_PHOTOS` downscaled by ``scale``
    (MATLAB-exact bicubic, the networks' training degradation), or the images in ``folder`` as they are (what
    will be upscaled). Checked on each image's centre, downscaled by ``scale``, against the image itself."""
    from lightsr.resize import imresize, modcrop

    if folder is None:
        images = _photos()
        source = "scikit-image's public-domain/CC0 photos"
        inputs = [imresize(modcrop(im, scale), 1 / scale) for im in images]
    else:
        images = _folder_images(Path(folder))
        source = f"{len(images)} images of {folder}"
        inputs = images
    for im in images:
        if min(im.shape[:2]) < 4 * scale:
            raise UsageError(f"--calibration {folder}: an image of {im.shape[1]}×{im.shape[0]} pixels is too small "
                             f"to check at ×{scale} (at least {4 * scale}×{4 * scale})")
    patches = [np.ascontiguousarray(p.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255)
               for p in _crops(inputs, PATCHES, PATCH, seed=0)]
    pairs = []
    for im in images:
        hr = modcrop(_centre(im, CHECK_SIZE), scale)
        pairs.append((imresize(hr, 1 / scale), hr))
    h = hashlib.sha256(f"lightsr int8 calibration {RECIPE} x{scale}".encode())
    for a in [*patches, *(x for pair in pairs for x in pair)]:
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return Calibration(tuple(patches), tuple(pairs), source, h.hexdigest())


# ------------------------------------------------------------------------------------------ quantization


def int8_spec(model: SRNet) -> Int8Spec:
    """The network's :class:`~lightsr.models.spec.Int8Spec`, or a one-line error for a network without one."""
    spec = model_spec(model.info.arch).int8
    if spec is None:
        raise UsageError(f"--precision int8: {model.info.arch} has no int8 recipe; use fp32 or bf16")
    return spec


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs and draws progress bars on stdout, where ``upscale -o -`` writes an image: its log goes quiet and
    whatever it prints goes to stderr."""
    from nncf.common.logging.logger import nncf_logger

    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        nncf_logger.setLevel(level)


def quantize_graph(path: str | os.PathLike, spec: Int8Spec, inputs: Sequence[np.ndarray],
                   validate: bool = True) -> Any:
    """The ONNX graph at ``path`` quantized by NNCF as ``spec`` says, calibrated on ``inputs`` (float32 arrays of
    the graph's input); an ``openvino.Model``. ``validate``: each ``keep_f32`` pattern must match a node."""
    nncf = _optional.load("nncf", "--precision int8", EXTRA)
    import openvino as ov

    model = ov.Core().read_model(str(path))
    model_type = nncf.ModelType.TRANSFORMER if spec.model_type == "transformer" else None
    ignored = nncf.IgnoredScope(patterns=list(spec.keep_f32), validate=validate) if spec.keep_f32 else None
    with _quiet_nncf():
        return nncf.quantize(model, nncf.Dataset(list(inputs)), subset_size=len(inputs), model_type=model_type,
                             ignored_scope=ignored)


def check_psnr(run: Callable[[torch.Tensor], torch.Tensor] | Runtime,
               pairs: Sequence[tuple[np.ndarray, np.ndarray]], scale: int) -> float:
    """Mean Y-PSNR of ``run`` (a runtime) on ``pairs`` under the papers' protocol (as ``lightsr eval`` scores)."""
    from lightsr.evaluate import super_resolve
    from lightsr.metrics import calculate_psnr

    return float(np.mean([calculate_psnr(super_resolve(run, lr), hr, crop_border=scale, test_y=True)
                          for lr, hr in pairs]))


def _runtime(whole: Whole, path: Path, model: SRNet, precision: str, threads: int | None) -> Runtime:
    cpu = torch.device("cpu")
    return Runtime(whole(path, "fp32", cpu, threads, model.scale), model.scale, model.info.arch, precision, cpu)


def cached_int8(model: SRNet, calibration: Calibration, whole: Whole, threads: int | None = None,
                opset: int = 17) -> Path:
    """The int8 graph (OpenVINO IR, ``model.xml``) of ``model``'s export calibrated on ``calibration``: quantized on
    first use, checked (:data:`MAX_DROP_DB`), then kept as a verified artifact; ``whole(path, "fp32", device,
    threads, scale)`` runs a graph (OpenVINO; the export's own check and the int8 check)."""
    _optional.require("--precision int8", REQUIRES, EXTRA)
    import nncf
    import openvino as ov

    spec = int8_spec(model)
    export = cached_export(model, whole, opset)
    form = model_spec(model.info.arch).graph_form
    # The recipe is part of the name: a new recipe in a later version builds beside the old graph, not over it.
    recipe = hashlib.sha256(json.dumps([list(spec.keep_f32), spec.model_type]).encode()).hexdigest()[:8]
    name = (f"{model.info.arch}_x{model.scale}-{form}-int8-{weights_key(model, opset)[:20]}-"
            f"{calibration.identity[:16]}-{recipe}")
    source = {**built_from(model, "int8 graph", opset), "export_sha256": artifacts.sha256_file(export),
              "calibration": calibration.identity, "keep_f32": list(spec.keep_f32), "model_type": spec.model_type,
              "nncf": nncf.__version__, "openvino": ov.__version__}

    def build(tmp: Path) -> None:
        log.info("building the int8 graph of %s ×%d (once; calibrated on %s)", model.info.arch, model.scale,
                 calibration.source)
        graph = quantize_graph(export, spec, calibration.inputs)
        # Uncompressed: ov.save_model would otherwise store the float32 layers' weights in float16.
        ov.save_model(graph, str(tmp / "model.xml"), compress_to_fp16=False)
        scores = {p: check_psnr(_runtime(whole, f, model, p, threads), calibration.pairs, model.scale)
                  for p, f in (("fp32", export), ("int8", tmp / "model.xml"))}
        drop = scores["fp32"] - scores["int8"]
        if not drop <= MAX_DROP_DB:
            raise QuantizationError(f"{model.info.arch} ×{model.scale}: its int8 graph loses {drop:.3f} dB Y-PSNR "
                                    f"(more than {MAX_DROP_DB}) on {calibration.source}; nothing was kept — use "
                                    "--precision fp32 (or another --calibration)")
        (tmp / "check.json").write_text(json.dumps({"calibration": calibration.source, "y_psnr": scores}, indent=1))

    folder = artifacts.cached(export_dir() / name, source, build, folder=True, what="cached int8 graph")
    return folder / "model.xml"


def build_int8(model: SRNet, device: torch.device, threads: int | None, whole: Whole,
               calibration: str | os.PathLike | None = None) -> Runtime:
    """``model``'s int8 graph (:func:`cached_int8`, calibrated on :func:`calibration_set`) as a runtime. Its tiles
    are blended (no exact tiling in int8): :attr:`Runtime.blended_tiles` says so."""
    _optional.require("--precision int8", REQUIRES, EXTRA)
    path = cached_int8(model, calibration_set(model.scale, calibration), whole, threads)
    return Runtime(whole(path, "fp32", device, threads, model.scale), model.scale, model.info.arch, "int8", device,
                   path=path, blended_tiles="int8 has no exact tiling")
