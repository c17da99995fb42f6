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

import contextlib
import inspect
import json
import logging
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lightsr import _json
from lightsr._files import atomic_write, write_error
from lightsr.errors import CheckpointError, WriteError, first_line
from lightsr.models.base import SRNet
from lightsr.models.registry import create_model, find_spec, list_models, model_spec, specs
from lightsr.models.spec import ModelSpec

log = logging.getLogger("lightsr")

StateDict = dict[str, torch.Tensor]

# Containers that checkpoints of popular trainers wrap the weights in, by priority (EMA first: it is what
# BasicSR-trained papers evaluate unless told otherwise).
_CONTAINER_KEYS = ("params_ema", "params-ema", "params", "model_state_dict", "state_dict", "model_ema", "model", "net",
                   "network", "generator")
# Prefixes that wrappers and trainers put before every key (DataParallel/DDP, torch.compile, GAN trainers' netG).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "netG.")


# --------------------------------------------------------------------------------------------- reading


# safetensors refuses headers above 100 MB; so does the sniffing below.
_MAX_HEADER = 100_000_000


def _file_kind(path: Path) -> str:
    """What a weights file is, from its bytes (a name's suffix can lie): safetensors, torch or unknown.

    A safetensors file is recognised by parsing its header — an 8-byte little-endian length that fits in the file,
    then that many bytes of JSON object — before any pickle signature is looked at: the length's first byte can
    be anything, 0x80 (a pickle's first byte) included.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
        n = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
        if head[8:9] == b"{" and 2 <= n <= min(size - 8, _MAX_HEADER):
            try:
                header = _json.loads(head[8:9] + f.read(n - 1))
            except (UnicodeDecodeError, ValueError):
                header = None
            if isinstance(header, dict):
                return "safetensors"
    if head[:4] == b"PK\x03\x04":  # torch.save's zip archive
        return "torch"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):  # a pickle (legacy torch.save)
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":  # a safetensors file whose header does not fit: safetensors says why
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
        from safetensors import safe_open

        if param_key is not None:
            raise CheckpointError(f"{path}: --param-key {param_key} does not apply: a safetensors file holds one flat "
                                  "set of weights")

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # whatever the parser raises on untrusted bytes means a bad file
            raise CheckpointError(f"{path}: not a readable safetensors file ({first_line(e, 160)})") from None
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
    except Exception as e:  # what torch's restricted unpickler raises on bytes that are not a checkpoint
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({first_line(e, 160)})") from None
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
            if not found and len(obj) == 1 and isinstance(next(iter(obj.values())), Mapping):
                found = list(obj)  # a single entry holding everything, whatever its name
            if not found:
                raise CheckpointError(
                    f"{source}: no weights found (top-level keys: {', '.join(map(str, list(obj)[:8]))})"
                )
            if len(found) > 1:
                log.info("%s: has %s; using %r (choose with param_key)", source, " and ".join(found), found[0])
            obj = obj[found[0]]
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        raise CheckpointError(f"{source}: the selected entry is not a dict of tensors")
    sd = dict(obj)
    # A prefix is stripped only when every key has it: a network may have a submodule of that name.
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                stripped = True
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
                try:
                    converted = layout.convert(sd, source) if layout.convert else dict(sd)
                    config = spec.config_from_weights(converted, source)
                except KeyError as e:
                    raise CheckpointError(f"{source}: looks like {layout.name} but key {e} is missing") from None
                except (IndexError, ValueError, TypeError, ZeroDivisionError, RuntimeError) as e:
                    if isinstance(e, CheckpointError):
                        raise
                    raise CheckpointError(f"{source}: looks like {layout.name} but its tensors have impossible "
                                          f"shapes ({type(e).__name__}: {str(e)[:120]})") from None
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
    sd, meta = read_checkpoint(path, param_key=param_key)
    return load_state_dict(sd, meta, name=name, scale=scale, device=device, source=str(path))


def load_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    name: str | None = None,
    scale: int | None = None,
    device: str | torch.device = "cpu",
    source: str = "state dict",
) -> SRNet:
    """:func:`load_model` for weights already in memory: a tensor dict (containers are unwrapped) and lightsr's
    safetensors metadata if any; ``source`` names it in errors. ``device="meta"`` checks everything and returns
    the network without weights or memory (the weights would load)."""
    sd = unwrap(dict(state_dict), source=source)
    meta = dict(metadata or {})
    # The tensors decide what the network is; lightsr's metadata only adds the settings they cannot show, and
    # only after it has been checked against them.
    det_name, layout, config, sd = detect(sd, source)
    if "arch" in meta:
        det_name, config = _with_metadata(meta, det_name, config, source)
    elif model_spec(det_name).undetectable:
        log.info("%s: %s cannot be read from the weights of a %s file; the defaults fill in (lightsr.save_model "
                 "stores them)", source, ", ".join(model_spec(det_name).undetectable), layout)
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
    detected = f"{det_name} ×{det_scale}"
    # Built on the meta device first (no memory): the file's tensors must fit it exactly before the real one is.
    _check_fits(_build(build_name, det_scale, kwargs, source, device="meta"), sd, source, detected)
    if device == "meta":  # checked, not built (what a detector needs to know: it would load)
        return _build(build_name, det_scale, kwargs, source, device="meta")
    model = _build(build_name, det_scale, kwargs, source)
    model.load_state_dict(sd, strict=True)
    log.info("loaded %s ×%d from %s (%s layout)", model.arch, det_scale, source, layout)
    return model.to(device).eval()


def _fits_defaults(name: str, config: dict[str, Any]) -> bool:
    return all(_same(config.get(k), v) for k, v in model_spec(name).defaults.items() if k in config)


def _with_metadata(meta: Mapping[str, str], det_name: str, config: dict[str, Any], source: str
                   ) -> tuple[str, dict[str, Any]]:
    """The registry name and config of a lightsr file: its metadata, validated against what the tensors show."""
    arch = meta["arch"]
    spec = find_spec(arch)
    if spec is None:
        raise CheckpointError(f"{source}: metadata arch {_json.short(arch)} is not a known network "
                              f"({', '.join(list_models())})")
    if spec.family != model_spec(det_name).family:
        raise CheckpointError(f"{source}: metadata says arch {_json.short(arch)}, but the tensors are a {det_name} "
                              "network")
    text = meta.get("scale", "")
    if not (text.isascii() and text.isdigit()) or int(text) != config["scale"]:
        raise CheckpointError(f"{source}: metadata scale {_json.short(text)} disagrees with the tensors "
                              f"(×{config['scale']})")
    try:
        stored = _json.loads(meta.get("config", "{}"))
    except ValueError as e:
        what = str(e) if str(e).startswith("nested deeper") else "not JSON"
        raise CheckpointError(f"{source}: metadata config is {what}") from None
    if not isinstance(stored, dict):
        raise CheckpointError(f"{source}: metadata config is a {type(stored).__name__}, not an object")
    params = set(inspect.signature(spec.network).parameters) - {"scale"}
    for key, value in stored.items():
        if key not in params:
            raise CheckpointError(f"{source}: metadata config has unknown key {_json.short(key)} (known: "
                                  f"{', '.join(sorted(params))})")
        if key in config and key not in spec.undetectable and not _same(value, config[key]):
            raise CheckpointError(f"{source}: metadata config {key}={_json.short(value)}, but the tensors show "
                                  f"{config[key]!r}")
    merged = {**config, **stored}
    if spec.check_config is not None:
        try:
            spec.check_config(merged)
        except ValueError as e:
            raise CheckpointError(f"{source}: metadata config {e}") from None
    return arch, merged


def _build(name: str, scale: int, kwargs: dict[str, Any], source: str, device: str | None = None) -> SRNet:
    """``create_model`` with a configuration read from a file: what the constructor refuses is a one-line error."""
    try:
        with torch.device(device) if device else contextlib.nullcontext():
            return create_model(name, scale=scale, **kwargs)
    except (TypeError, ValueError, RuntimeError, ArithmeticError) as e:  # e.g. zero channels from empty tensors
        raise CheckpointError(f"{source}: its configuration cannot build {name} ({first_line(e, 160)})") from None


def _check_fits(model: SRNet, sd: StateDict, source: str, detected: str) -> None:
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
    # Weights must be floating point (bool or integer weights would load, cast, and make a blank image); integer
    # buffers (BatchNorm's batch counter) must be integers.
    for k, v in own.items():
        if sd[k].is_floating_point() != v.is_floating_point() or sd[k].dtype in (torch.bool, torch.complex64,
                                                                                  torch.complex128):
            want = "floating point" if v.is_floating_point() else "an integer"
            raise CheckpointError(f"{source}: tensor {k} is {str(sd[k].dtype).replace('torch.', '')}, not {want}")


# -------------------------------------------------------------------------------------------- saving


def save_model(model: SRNet, path: str | Path, extra: Mapping[str, str] | None = None) -> Path:
    """Write ``model`` as safetensors with the metadata :func:`load_model` needs; returns the path."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from lightsr._version import __version__

    path = Path(path)
    info = model.info
    config = {k: v for k, v in info.config.items() if k != "scale"}
    meta = {"arch": info.arch, "scale": str(info.scale), "config": json.dumps(config),
            "lightsr_version": __version__, **(dict(extra) if extra else {})}
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # A full disk, an unwritable folder or an interruption (Ctrl-C) leaves nothing half-written.
    try:
        with atomic_write(path) as tmp:
            try:
                save_file(sd, str(tmp), metadata=meta)
            except SafetensorError as e:
                raise write_error(path, e) from None
    except WriteError as e:
        raise CheckpointError(str(e)) from None
    return path
