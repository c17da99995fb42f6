"""What a user names as a model: one resolver for every command, the Python API and the web app.

``--model``, ``--weights``, ``--models``, ``--onnx``, ``lightsr.load_model``, ``Upscaler(model)``, the web page's
choices and the trainer's distillation teacher all go through :func:`weights_file`, with these rules in this
order and the same messages:

1. an existing path: a checkpoint file (any layout lightsr reads) or, where the caller runs them, an exported
   ``.onnx`` file;
2. a published checkpoint's name (``lightsr models`` lists them): downloaded on first use and checksummed
   (:mod:`lightsr.hub`), with the container entry its publisher evaluates;
3. a bundled file's name, ``<name>_x<scale>``;
4. a bundled network or variant name (the network's own, or one trained for other inputs): its bundled weights
   at ``scale`` (default 4).

Anything else is one line naming the option and listing the names; a registered network without bundled weights at
that scale says which scales it has. A network object (:class:`SRNet`) is taken as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightsr.bundled import bundled_names, bundled_weights, default_upscale_model
from lightsr.checkpoints import load_model as _load
from lightsr.errors import CheckpointError, UsageError
from lightsr.hub import fetch, published
from lightsr.models.base import SRNet
from lightsr.models.registry import create_model as _create
from lightsr.models.registry import list_models, model_spec
from lightsr.runtimes.base import OnnxFile


def _where(option: str) -> str:
    return f"{option} " if option else ""


def bundled_file(name: str, scale: int | None = None, option: str = "--model") -> Path:
    """The bundled weights of network or variant ``name`` at ``scale`` (default 4); one-line errors name
    ``option`` and what is missing."""
    want = 4 if scale is None else scale
    have = bundled_weights(name)
    if name not in bundled_names() and name not in list_models():
        raise _unknown(name, option)
    if want not in have:
        raise CheckpointError(f"{_where(option)}{name}: no bundled weights for ×{want} (bundled: "
                              f"{', '.join(f'×{s}' for s in sorted(have)) or 'none'}); pass a checkpoint file or a "
                              "published name")
    return have[want]


def _unknown(text: str, option: str) -> CheckpointError:
    if os.sep in text or "/" in text or Path(text).suffix:  # a path: the list of names would be noise
        kind = "ONNX file" if Path(text).suffix.lower() == ".onnx" else "checkpoint file"
        return CheckpointError(f"{_where(option)}{text}: no such {kind}")
    return CheckpointError(f"{_where(option)}{text}: no such file, nor a bundled or published name (bundled: "
                           f"{', '.join(bundled_names()) or 'none'}, or NAME_x<scale>; published: "
                           f"{', '.join(sorted(published())) or 'none'}; `lightsr models` lists them)")


def weights_file(text: str | os.PathLike, scale: int | None = None, option: str = "") -> tuple[Path, str | None]:
    """The file behind what a user named as weights (the rules of the module docstring), and the container entry
    its publisher evaluates (None: detected). ``option`` names where it was named in the one-line errors."""
    text = os.fspath(text)
    if Path(text).exists():
        return Path(text), None
    table = published()
    if text in table:
        return fetch(text), table[text][1].param_key
    files = {f"{n}_x{s}": p for n in bundled_names() for s, p in bundled_weights(n).items()}
    if text in files:
        return files[text], None
    return bundled_file(text, scale, option), None


def resolve(what: str | os.PathLike | SRNet | OnnxFile | None, scale: int | None = None, *, arch: str | None = None,
            param_key: str | None = None, option: str = "model", onnx: bool = True) -> SRNet | OnnxFile:
    """What ``what`` names, ready for a runtime: a network (loaded, in eval mode, on the CPU) or, with ``onnx``, an
    exported ``.onnx`` file. None: :func:`~lightsr.bundled.default_upscale_model` at ``scale``. ``arch``: the
    network the weights must be (``--model`` beside ``--weights``); ``scale``: the scale they must have;
    ``param_key``: the container entry to read (default: the publisher's, else detected)."""
    if isinstance(what, OnnxFile):  # resolved already; its scale is in its metadata, read when it is opened
        return what
    if isinstance(what, SRNet):
        if scale is not None and scale != what.scale:
            raise UsageError(f"scale {scale} requested, but the network is ×{what.scale}")
        return what
    if what is None:
        what = default_upscale_model(scale)
    if not isinstance(what, (str, os.PathLike)):
        raise TypeError(f"{option or 'model'} must be a name, a path or an SRNet, not {type(what).__name__}")
    path, key = weights_file(what, scale, option)
    if onnx and path.suffix.lower() == ".onnx" and path.is_file():
        return OnnxFile(path)
    return _load(path, arch, scale, param_key if param_key is not None else key)


def load_network(what: str | os.PathLike | SRNet | None, scale: int | None = None, *, arch: str | None = None,
                 param_key: str | None = None, option: str = "model") -> SRNet:
    """:func:`resolve` for callers that need the PyTorch network (an ``.onnx`` file is an error naming it)."""
    net = resolve(what, scale, arch=arch, param_key=param_key, option=option, onnx=False)
    assert isinstance(net, SRNet)
    return net


def load_model(path: str | os.PathLike, name: str | None = None, scale: int | None = None,
               param_key: str | None = None, device: str = "cpu") -> SRNet:
    """:func:`lightsr.checkpoints.load_model`, where ``path`` may also name weights instead of a file (the rules of
    the module docstring: a published name, a bundled file's or network's name)."""
    file, key = weights_file(path, scale)
    return _load(file, name, scale, param_key if param_key is not None else key, device)


def create_model(name: str, scale: int = 4, pretrained: bool | str = False, **overrides: Any) -> SRNet:
    """A network by registry name, like timm's ``create_model``.

    ``pretrained=False``: randomly initialised (``overrides`` replace the paper's defaults). ``True``: lightsr's
    bundled weights of ``name`` at ``scale``; ``name`` may also be a bundled variant of a network (its weights
    file names the network; ``create_model(variant, pretrained=True)`` is ``create_model(network,
    pretrained=variant)``). A published checkpoint's name (``lightsr models`` lists them): those weights,
    downloaded on first use.
    """
    if pretrained is False or pretrained is None:
        return _create(name, scale=scale, **overrides)
    if overrides:
        raise UsageError(f"create_model({name!r}, pretrained=…): the weights fix the configuration; drop "
                         f"{', '.join(overrides)}")
    if pretrained is True:
        if name not in list_models() and name not in bundled_names():
            model_spec(name)  # the one-line 'unknown model' error
        return _load(bundled_file(name, scale, option="create_model"))
    variants = [n for n in bundled_names() if n not in list_models()]
    if isinstance(pretrained, str) and pretrained in variants:  # create_model(network, pretrained=variant)
        model = _load(bundled_file(pretrained, scale, option="create_model"))
        if model_spec(model.arch).family != model_spec(name).family:
            raise UsageError(f"pretrained={pretrained!r} holds {model.arch} weights, not {name}")
        return model
    if not isinstance(pretrained, str) or pretrained not in published():
        have = ", ".join(sorted(published()) + variants) or "none"
        raise UsageError(f"pretrained={pretrained!r}: expected True (bundled weights), bundled variant weights or "
                         f"a published checkpoint ({have})")
    spec, entry = published()[pretrained]
    if spec.family != model_spec(name).family or entry.scale != scale:
        raise UsageError(f"pretrained={pretrained!r} is a {spec.name} ×{entry.scale} checkpoint, not {name} ×{scale}")
    return load_model(pretrained)
