"""The edges of the data path: image file ↔ uint8 array ↔ float tensor in [0, 1].

Everything between these functions is RGB float in [0, 1]; conversions happen here and only here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from lightsr.errors import LightSRError


class ImageReadError(LightSRError, ValueError):
    """An image that cannot be read; the message names the file."""


def read_image(path: str | Path, mode: str = "RGB") -> np.ndarray:
    """Decode an image file to a uint8 ``H×W×3`` (``mode='RGB'``) or ``H×W`` (``mode='L'``) array."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert(mode))
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"{path}: cannot read image ({e})") from None


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Write a uint8 array atomically (temp file in the same folder, then rename): never a partial file."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(img).save(tmp, format=Image.registered_extensions().get(path.suffix.lower()))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def uint8_to_tensor(img: np.ndarray) -> torch.Tensor:
    """``H×W×C`` uint8 → ``1×C×H×W`` float32 in [0, 1]."""
    if img.ndim == 2:
        img = img[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0).unsqueeze(0)


def tensor_to_uint8(t: torch.Tensor) -> np.ndarray:
    """``1×C×H×W`` (or ``C×H×W``) float in [0, 1] → ``H×W×C`` uint8, clamped and rounded to nearest."""
    if t.ndim == 4:
        t = t[0]
    arr = t.detach().float().clamp_(0, 1).mul_(255.0).round_().to(torch.uint8).cpu().numpy()
    return arr.transpose(1, 2, 0)
