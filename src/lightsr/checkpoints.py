"""Reading and writing weights: lightsr's safetensors format and the official layouts.

``load_model(path)`` finds the architecture and scale from the state dict itself (key names and tensor shapes,
as spandrel does), so users can point it at whatever file they have:

* lightsr's own files: safetensors with metadata (``arch``, ``scale``, ``config``, ``lightsr_version``);
* every layout a registered network's spec lists (official code, other retrains; see
  ``lightsr/models/<arch>/layouts.py``), plain ``state_dict`` files of lightsr networks included.

Settings that leave no trace in the weights (a spec's ``undetectable``) come from lightsr's metadata; any other
file gets the network's defaults for them, and the log says so.

Containers are unwrapped (``params_ema``, ``params``, ``state_dict``, ``model``, …; ``module.`` and
``_orig_mod.`` prefixes). ``.pth`` files are read with ``torch.load(weights_only=True)``: a file that needs
arbitrary pickle code is refused. Anything that does not fit fails loudly — never a partial load.
"""

from __future__ import annotations

import json
import logging
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lightsr._files import default_permissions
from lightsr.bundled import DEFAULT_MODEL, bundled_path, bundled_weights
from lightsr.errors import CheckpointError
from lightsr.models.base import SRNet
from lightsr.models.registry import create_model, find_spec, list_models, model_spec, specs
from lightsr.models.spec import ModelSpec

log = logging.getLogger("lightsr")

StateDict = dict[str, torch.Tensor]

# Containers that checkpoints of popular trainers wrap the weights in, by priority (EMA first: it is what
# BasicSR-trained papers evaluate unless told otherwise).
_CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model_ema", "model", "net", "network", "generator")


# --------------------------------------------------------------------------------------------- reading


def _file_kind(path: Path) -> str:
    """What a weights file is, from its first bytes (a name's suffix can lie): safetensors, torch or unknown."""
    with path.open("rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch.save's zip archive / its legacy pickle
        return "torch"
    # safetensors: an 8-byte little-endian header length, then the JSON header (a truncated file is still one,
    # and safetensors says what is wrong with it).
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    return "unknown"


def read_checkpoint(path: str | Path, param_key: str | None = None) -> tuple[StateDict, dict[str, str]]:
    """Return ``(state_dict, metadata)`` of a safetensors or PyTorch (``.pth``) file, containers unwrapped."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        kind = _file_kind(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    if kind == "unknown":
        if path.suffix.lower() == ".onnx":
            raise CheckpointError(f"{path}: an ONNX model, not a weights file (run it with --onnx)")
        raise CheckpointError(f"{path}: not a checkpoint (neither a safetensors nor a PyTorch file)")
    if kind == "safetensors":
        from safetensors import SafetensorError, safe_open

        if param_key is not None:
            raise CheckpointError(f"{path}: --param-key {param_key} does not apply: a safetensors file holds one flat "
                                  "set of weights")

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
        return sd, meta
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pickle-protocol chatter; errors still raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is long; the line naming the offending global is the useful one.
        lines = [ln.strip() for ln in str(e).splitlines() if "global" in ln.lower()]
        why = f" ({lines[0][:160]})" if lines else ""
        raise CheckpointError(
            f"{path}: refused — the file needs arbitrary pickle code to load, which lightsr never runs{why}. "
            "Re-save its state_dict with torch.save or convert it to safetensors."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError) as e:  # what torch's restricted unpickler raises on bytes that are not a checkpoint
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({msg[:160]})") from None
    return unwrap(obj, param_key=param_key, source=str(path)), {}


def unwrap(obj: Any, param_key: str | None = None, source: str = "checkpoint") -> StateDict:
    """Find the tensor dict inside the usual training containers and strip wrapper prefixes."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a dict of tensors, found {type(obj).__name__}")
    if param_key is not None:
        if param_key not in obj:
            raise CheckpointError(
                f"{source}: has no key {param_key!r} (top-level keys: {', '.join(map(str, list(obj)[:8]))})"
            )
        obj = obj[param_key]
    else:
        while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
            found = [k for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)]
            if not found:
                raise CheckpointError(
                    f"{source}: no weights found (top-level keys: {', '.join(map(str, list(obj)[:8]))})"
                )
            if len(found) > 1:
                log.info("%s: has %s; using %r (choose with param_key)", source, " and ".join(found), found[0])
            obj = obj[found[0]]
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        raise CheckpointError(f"{source}: the selected entry is not a dict of tensors")
    sd = {}
    for k, v in obj.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        sd[k] = v
    return sd


def _is_tensor_dict(d: Mapping) -> bool:
    return len(d) > 0 and all(isinstance(v, torch.Tensor) for v in d.values())


# ---------------------------------------------------------------------------------- layout detection


def detect(sd: StateDict, source: str = "checkpoint") -> tuple[str, str, dict[str, Any], StateDict]:
    """Identify a state dict: ``(registry name, layout, config incl. scale, state dict in lightsr's layout)``.

    Each registered family's layouts are tried in turn (a layout is recognised by a key prefix only it has).
    """
    for spec in _families():
        for layout in spec.layouts:
            if any(k.startswith(layout.marker) for k in sd):
                converted = layout.convert(sd, source) if layout.convert else dict(sd)
                try:
                    config = spec.config_from_weights(converted, source)
                except KeyError as e:
                    raise CheckpointError(f"{source}: looks like {layout.name} but key {e} is missing") from None
                return _registry_name(spec.family, config), layout.name, config, converted
    raise CheckpointError(
        f"{source}: cannot recognise the architecture (first keys: {', '.join(list(sd)[:4])}); "
        f"known: {', '.join(list_models())}"
    )


def _families() -> list[ModelSpec]:
    """One spec per family (networks of one family share their layouts)."""
    seen: dict[str, ModelSpec] = {}
    for spec in specs():
        seen.setdefault(spec.family, spec)
    return list(seen.values())


def _registry_name(family: str, config: dict[str, Any]) -> str:
    """The registry entry of ``family`` whose defaults match ``config`` (a light vs a large variant), else the
    family's first."""
    members = [s for s in specs() if s.family == family]
    for spec in members:
        if all(_same(config.get(k), v) for k, v in spec.defaults.items()):
            return spec.name
    return family if find_spec(family) else members[0].name


def _same(a: Any, b: Any) -> bool:
    return list(a) == list(b) if isinstance(b, (tuple, list)) else a == b


# -------------------------------------------------------------------------------------------- loading


def load_model(
    path: str | Path,
    name: str | None = None,
    scale: int | None = None,
    param_key: str | None = None,
    device: str | torch.device = "cpu",
) -> SRNet:
    """Build the network a checkpoint describes, load it strictly and return it in eval mode.

    ``name``/``scale`` are optional: detected from the file when omitted; when given, they must agree with the
    file (a mismatch is an error naming what was detected). ``param_key`` picks a container entry
    (``params`` vs ``params_ema``).
    """
    source = str(path)
    sd, meta = read_checkpoint(path, param_key=param_key)
    if "arch" in meta:  # lightsr's own file: trust its metadata, then verify by loading strictly
        det_name, layout = meta["arch"], "lightsr"
        config = json.loads(meta.get("config", "{}"))
        config["scale"] = int(meta["scale"])
    else:
        det_name, layout, config, sd = detect(sd, source)
        guessed = model_spec(det_name).undetectable
        if guessed:
            log.info("%s: %s cannot be read from the weights of a %s file; the defaults fill in (lightsr.save_model "
                     "stores them)", source, ", ".join(guessed), layout)
    det_scale = int(config["scale"])
    if name is not None and model_spec(name).family != model_spec(det_name).family:
        raise CheckpointError(
            f"{source}: is a {det_name} ×{det_scale} checkpoint ({layout} layout), not {name}"
        )
    if scale is not None and int(scale) != det_scale:
        raise CheckpointError(
            f"{source}: is a {det_name} ×{det_scale} checkpoint, but scale {scale} was requested"
        )
    build_name = name if name is not None and _fits_defaults(name, config) else det_name
    kwargs = {k: v for k, v in config.items() if k != "scale"}
    model = create_model(build_name, scale=det_scale, **kwargs)
    _load_strict(model, sd, source, f"{det_name} ×{det_scale}")
    log.info("loaded %s ×%d from %s (%s layout)", model.arch, det_scale, source, layout)
    return model.to(device).eval()


def bundled_model(name: str, scale: int | None = None, option: str = "--model") -> SRNet:
    """The bundled weights of network ``name`` at ``scale`` (default 4); one-line errors name ``option`` and
    what is missing."""
    if name not in list_models():
        raise CheckpointError(f"{option} {name}: unknown network; choose from {', '.join(list_models())}")
    scale = 4 if scale is None else scale
    path = bundled_path(name, scale)
    if path is None:
        have = ", ".join(f"×{s}" for s in sorted(bundled_weights(name))) or "none"
        raise CheckpointError(f"{option} {name}: no bundled weights for ×{scale} (bundled: {have}); "
                              "pass --weights PATH")
    return load_model(path)


def resolve_model(name: str | None, weights: str | None, scale: int | None) -> SRNet:
    """The network a command asks for: a checkpoint, or the bundled weights of ``name`` (default
    :data:`~lightsr.bundled.DEFAULT_MODEL`) at ``scale`` (default 4)."""
    if weights:
        return load_model(weights, name=name, scale=scale)
    return bundled_model(name or DEFAULT_MODEL, scale)


def _fits_defaults(name: str, config: dict[str, Any]) -> bool:
    return all(_same(config.get(k), v) for k, v in model_spec(name).defaults.items() if k in config)


def _load_strict(model: SRNet, sd: StateDict, source: str, detected: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in sd and sd[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:3])}{' …' if len(unexpected) > 3 else ''}")
    if shape:
        problems.append(f"shape mismatch: {'; '.join(shape[:3])}{' …' if len(shape) > 3 else ''}")
    if problems:
        raise CheckpointError(f"{source}: does not fit {detected} ({'; '.join(problems)})")
    model.load_state_dict(sd, strict=True)


# -------------------------------------------------------------------------------------------- saving


def save_model(model: SRNet, path: str | Path, extra: Mapping[str, str] | None = None) -> Path:
    """Write ``model`` as safetensors with the metadata :func:`load_model` needs; returns the path."""
    from safetensors.torch import save_file

    from lightsr._version import __version__

    path = Path(path)
    info = model.info
    config = {k: v for k, v in info.config.items() if k != "scale"}
    meta = {"arch": info.arch, "scale": str(info.scale), "config": json.dumps(config),
            "lightsr_version": __version__, **(dict(extra) if extra else {})}
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(sd, str(tmp), metadata=meta)
    default_permissions(tmp, path)
    tmp.replace(path)
    return path
