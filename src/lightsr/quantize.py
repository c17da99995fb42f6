"""int8 graphs for OpenVINO: NNCF's post-training quantization of a network's ONNX export.

A network whose spec has :class:`~lightsr.models.spec.Int8Spec` gets an int8 graph: its cached ONNX export
quantized by NNCF (``nncf.quantize``, OpenVINO backend), calibrated on natural images, with the layers its spec
names left in float32. The graph is built on first use and cached beside the export under the export's key plus
the calibration's identity (the SHA-256 of the exact calibration inputs), and kept only once it passes a check:
on the calibration photos' downscaled versions, scored like ``lightsr eval`` (Y-PSNR against the photos), it may
lose at most :data:`MAX_DROP_DB` against the float32 graph.

Calibration needs no research images: by default the photos of scikit-image's data module that its docs release
into the public domain or under CC0 (:data:`CALIBRATION_PHOTOS`), downscaled by the network's scale like the
inputs it was trained on; or a folder of the user's own images, taken as the inputs they are
(:func:`calibration_set`).

``nncf`` and ``openvino`` (``pip install 'lightsr[int8]'``) are imported only when a graph is built or run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lightsr.errors import LightSRError, UsageError

if TYPE_CHECKING:
    import torch

    from lightsr.models.base import SRNet
    from lightsr.models.spec import Int8Spec

log = logging.getLogger("lightsr")

# scikit-image's data module: photos its docs release into the public domain (astronaut, rocket: NASA, SpaceX)
# or under CC0 (the others); camera, brick, grass and gravel are grayscale and run as gray RGB.
CALIBRATION_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "brick", "grass", "gravel")
# Calibration inputs: PATCHES crops of PATCH×PATCH input pixels, spread over the images (seeded).
PATCH = 64
PATCHES = 48
# A calibration folder: at most this many images (evenly spaced in name order) and this many pixels each
# before cropping; the check scores a centre crop of at most CHECK_SIZE² of each image.
MAX_IMAGES = 64
CHECK_SIZE = 512
# The check: mean Y-PSNR over the check images may drop by at most this much from the float32 graph's.
MAX_DROP_DB = 0.1
# What changes the calibration inputs' recipe; part of their identity.
RECIPE = 1


class QuantizationError(LightSRError, RuntimeError):
    """An int8 graph that could not be made or failed its check; the message names the network and the figure."""


@dataclass(frozen=True)
class Calibration:
    """What an int8 graph is calibrated and checked on.

    ``inputs``: float32 ``1×3×h×w`` arrays in [0, 1], the network's inputs NNCF collects statistics on.
    ``pairs``: ``(low-resolution input, image)`` uint8 pairs the check scores. ``source``: where they came from,
    in words. ``identity``: SHA-256 of everything above, part of the cached graph's key.
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
    try:
        from skimage import data
    except ImportError:
        raise UsageError("--precision int8 calibrates on scikit-image's public-domain photos: pip install "
                         "'lightsr[int8]' (or pass --calibration DIR)") from None
    return [_rgb(getattr(data, name)()) for name in CALIBRATION_PHOTOS]


def _folder_images(folder: Path) -> list[np.ndarray]:
    from lightsr.formats import INPUT_EXTENSIONS
    from lightsr.imageio import read_image

    if not folder.is_dir():
        raise UsageError(f"--calibration {folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in INPUT_EXTENSIONS and p.is_file())
    if not files:
        raise UsageError(f"--calibration {folder}: no images ({', '.join(INPUT_EXTENSIONS)})")
    if len(files) > MAX_IMAGES:
        files = [files[round(i * (len(files) - 1) / (MAX_IMAGES - 1))] for i in range(MAX_IMAGES)]
    return [read_image(p, "RGB") for p in files]  # one-line errors naming the file


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
    will be upscaled). Checked on each image's centre, downscaled, against the image itself."""
    from lightsr.resize import imresize, modcrop

    if folder is None:
        images = _photos()
        source = "scikit-image's public-domain/CC0 photos (" + ", ".join(CALIBRATION_PHOTOS) + ")"
        inputs = [imresize(modcrop(im, scale), 1 / scale) for im in images]
    else:
        images = _folder_images(Path(folder))
        source = f"{len(images)} images of {folder}"
        inputs = images
    small = min(min(im.shape[:2]) for im in images)
    if small < 2 * scale:
        raise UsageError(f"--calibration {folder}: an image of {small} pixels is too small at ×{scale}")
    patches = [np.ascontiguousarray(p.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255)
               for p in _crops(inputs, PATCHES, PATCH, seed=0)]
    pairs = []
    for im in images:
        hr = modcrop(_centre(im, CHECK_SIZE), scale)
        pairs.append((imresize(hr, 1 / scale), hr))
    h = hashlib.sha256(f"lightsr int8 calibration {RECIPE} x{scale}".encode())
    for a in [*patches, *(x for pair in pairs for x in pair)]:
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return Calibration(tuple(patches), tuple(pairs), source, h.hexdigest())


# ------------------------------------------------------------------------------------------ quantization


def require_int8() -> None:
    """One-line :class:`UsageError` naming the extra when NNCF or OpenVINO is missing."""
    import importlib.util

    needs = [m for m in ("nncf", "openvino", "onnx") if importlib.util.find_spec(m) is None]
    if needs:
        raise UsageError(f"--precision int8 needs {' and '.join(needs)}: pip install 'lightsr[int8]'")


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs and draws progress bars on stdout, where ``upscale -o -`` writes an image: silenced."""
    from nncf.common.logging.logger import nncf_logger

    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr if log.isEnabledFor(logging.INFO) else open(os.devnull, "w")
                                        ) as out:
            try:
                yield
            finally:
                if out is not sys.stderr:
                    out.close()
    finally:
        nncf_logger.setLevel(level)


def quantize_graph(path: str | os.PathLike, spec: Int8Spec, inputs: Sequence[np.ndarray],
                   validate: bool = True) -> Any:
    """The ONNX graph at ``path`` quantized by NNCF as ``spec`` says, calibrated on ``inputs`` (float32 arrays of
    the graph's input); an ``openvino.Model``. ``validate``: every ``keep_f32`` pattern must match a node."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(path))
    model_type = nncf.ModelType.TRANSFORMER if spec.model_type == "transformer" else None
    ignored = nncf.IgnoredScope(patterns=list(spec.keep_f32), validate=validate) if spec.keep_f32 else None
    with _quiet_nncf():
        return nncf.quantize(model, nncf.Dataset(list(inputs)), subset_size=len(inputs), model_type=model_type,
                             ignored_scope=ignored)


def check_psnr(run: Any, pairs: Sequence[tuple[np.ndarray, np.ndarray]], scale: int) -> float:
    """Mean Y-PSNR of ``run`` on ``pairs`` under the papers' protocol (as :func:`lightsr.evaluate.evaluate`)."""
    from lightsr.evaluate import super_resolve
    from lightsr.metrics import calculate_psnr

    return float(np.mean([calculate_psnr(super_resolve(run, lr), hr, crop_border=scale, test_y=True)
                          for lr, hr in pairs]))


# ------------------------------------------------------------------------------------------------ the cache

MANIFEST = "int8.json"


def int8_spec(model: SRNet) -> Int8Spec:
    """The network's :class:`Int8Spec`, or a one-line error for a network without one."""
    from lightsr.models.registry import model_spec

    spec = model_spec(model.info.arch).int8
    if spec is None:
        raise UsageError(f"--precision int8: {model.info.arch} has no int8 graph (no measured quantization yet)")
    return spec


def cached_int8(model: SRNet, calibration: Calibration, threads: int | None = None) -> Path:
    """The int8 graph (OpenVINO IR ``model.xml``) of ``model``'s export for ``calibration``: quantized on first
    use, checked (:data:`MAX_DROP_DB`), then kept in the export cache; later calls reuse it."""
    from lightsr.backends import OpenVinoModel, cached_export, export_dir, weights_key
    from lightsr.models.registry import model_spec

    spec = int8_spec(model)
    form = model_spec(model.info.arch).graph_form
    key = f"{weights_key(model, 17)[:20]}-{calibration.identity[:16]}"
    folder = export_dir() / f"{model.info.arch}_x{model.info.scale}-{form}-int8-{key}"
    if (folder / MANIFEST).is_file():
        return folder / "model.xml"
    export = cached_export(model, "openvino")
    log.info("building the int8 graph of %s ×%d (once; calibrated on %s)", model.info.arch, model.scale,
             calibration.source)
    tmp = folder.parent / f".{folder.name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        import nncf
        import openvino as ov

        ov.save_model(quantize_graph(export, spec, calibration.inputs), str(tmp / "model.xml"))
        runs = {p: OpenVinoModel(f, "fp32", model.scale, threads)
                for p, f in (("fp32", export), ("int8", tmp / "model.xml"))}
        for run in runs.values():
            run.device = _cpu()
        scores = {p: check_psnr(run, calibration.pairs, model.scale) for p, run in runs.items()}
        drop = scores["fp32"] - scores["int8"]
        if not drop <= MAX_DROP_DB:
            raise QuantizationError(f"{model.info.arch} ×{model.scale}: the int8 graph loses {drop:.3f} dB Y-PSNR "
                                    f"(> {MAX_DROP_DB}) on {calibration.source}; nothing kept, use fp32")
        (tmp / MANIFEST).write_text(json.dumps({
            "calibration": calibration.source, "calibration_sha256": calibration.identity,
            "check_psnr": scores, "keep_f32": list(spec.keep_f32), "model_type": spec.model_type,
            "nncf": nncf.__version__, "openvino": ov.__version__}, indent=1))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same folder first: its graph passed the same check
            if not (folder / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / "model.xml"


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")
