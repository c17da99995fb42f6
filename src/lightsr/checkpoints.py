"""Reading and writing weights: lightsr's safetensors format and the official layouts.

``load_model(path)`` finds the architecture and scale from the state dict itself (key names and tensor shapes,
as spandrel does), so users can point it at whatever file they have:

* lightsr's own files: safetensors with metadata (``arch``, ``scale``, ``config``, ``lightsr_version``);
* the official ELAN repository's layout (``head.0``, ``modules_lfe.lfe_0.conv0.shift_conv.*``, both shift-conv
  variants), FriedRiceLab's ELAN layout (``modules_lfe.0.lfe.0.{weight,bias,mask}``);
* the official HASN / BasicSR layout (``conv_1``, ``block_1.dwconv.conv``, …);
* plain ``state_dict`` files of lightsr networks.

Containers are unwrapped (``params_ema``, ``params``, ``state_dict``, ``model``, …; ``module.`` and
``_orig_mod.`` prefixes). ``.pth`` files are read with ``torch.load(weights_only=True)``: a file that needs
arbitrary pickle code is refused. Anything that does not fit fails loudly — never a partial load.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lightsr._files import default_permissions
from lightsr.errors import LightSRError
from lightsr.models.base import SRNet
from lightsr.models.registry import create_model, list_models, model_spec

log = logging.getLogger("lightsr")

StateDict = dict[str, torch.Tensor]

# Containers that checkpoints of popular trainers wrap the weights in, by priority (EMA first: it is what
# BasicSR-trained papers evaluate unless told otherwise).
_CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model_ema", "model", "net", "network", "generator")


class CheckpointError(LightSRError, ValueError):
    """A checkpoint that cannot be read or does not fit; the message names the file and the reason."""


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


def _scale_from_out_channels(n_out: int, source: str) -> int:
    s = math.isqrt(n_out // 3)
    if s * s * 3 != n_out:
        raise CheckpointError(f"{source}: upsampler has {n_out} output channels, not 3·scale²")
    return s


def _block_indices(sd: StateDict, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def _elan_config(sd: StateDict, source: str) -> dict[str, Any]:
    """Read ELAN's hyper-parameters from a state dict already in lightsr's layout."""
    channels = sd["head.weight"].shape[0]
    blocks = _block_indices(sd, r"body\.(\d+)\.")
    calc = [sd[f"body.{j}.gmsa.project_inp.0.weight"].shape[0] == 2 * channels for j in blocks]
    starts = [j for j, c in zip(blocks, calc, strict=True) if c]
    n_share = (starts[1] - starts[0] - 1) if len(starts) > 1 else len(blocks) - 1
    return dict(
        scale=_scale_from_out_channels(sd["tail.0.weight"].shape[0], source),
        num_blocks=len(blocks),
        channels=channels,
        n_share=n_share,
        exp_ratio=sd["body.0.lfe.conv0.weight"].shape[0] // channels,
        window_sizes=[4, 8, 16],
    )


def _hasn_config(sd: StateDict, source: str) -> dict[str, Any]:
    channels = sd["head.weight"].shape[0]
    return dict(
        scale=_scale_from_out_channels(sd["upsampler.0.weight"].shape[0], source),
        channels=channels,
        num_blocks=len(_block_indices(sd, r"blocks\.(\d+)\.")),
        mlp_ratio=sd["blocks.0.f1.weight"].shape[0] // channels,
    )


def _lksmn_config(sd: StateDict, source: str) -> dict[str, Any]:
    from lightsr.models.lksmn import config_from_state_dict

    cfg = config_from_state_dict(sd)
    cfg["scale"] = _scale_from_out_channels(sd["upsampler.0.weight"].shape[0], source)
    return cfg


def _check_constant(t: torch.Tensor, expected: torch.Tensor, what: str, source: str) -> None:
    if t.shape != expected.shape or not torch.allclose(t.float(), expected, atol=1e-4):
        raise CheckpointError(f"{source}: {what} differs from ELAN's fixed constant; this variant is unsupported")


def _check_mean_shift(sd: StateDict, source: str) -> None:
    from lightsr.models.elan import RGB_MEAN, RGB_RANGE

    mean = torch.tensor(RGB_MEAN) * RGB_RANGE
    eye = torch.eye(3).view(3, 3, 1, 1)
    for name, sign in (("sub_mean", -1.0), ("add_mean", 1.0)):
        if f"{name}.weight" in sd:
            _check_constant(sd.pop(f"{name}.weight"), eye, f"{name}.weight", source)
            _check_constant(sd.pop(f"{name}.bias"), sign * mean, f"{name}.bias (rgb_range 255)", source)


def _convert_elan_official(sd: StateDict, source: str) -> StateDict:
    from lightsr.models.elan import shift_kernel

    sd = dict(sd)
    _check_mean_shift(sd, source)
    per_group = len(_block_indices(sd, r"body\.0\.modules_lfe\.lfe_(\d+)\."))
    out: StateDict = {}
    rx_lfe = re.compile(r"body\.(\d+)\.modules_lfe\.lfe_(\d+)\.(conv[01])\.shift_conv\.(.+)")
    rx_gmsa = re.compile(r"body\.(\d+)\.modules_gmsa\.gmsa_(\d+)\.(.+)")
    masked: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if m := rx_lfe.match(k):
            j = int(m.group(1)) * per_group + int(m.group(2))
            dst, rest = f"body.{j}.lfe.{m.group(3)}", m.group(4)
            if rest == "weight":  # 'fast-training-speed' variant: the fixed depthwise shift kernel
                _check_constant(v, shift_kernel(v.shape[0]), k, source)
            elif rest.startswith("conv1x1."):
                out[f"{dst}.{rest[len('conv1x1.'):]}"] = v
            elif rest in ("w", "b", "m"):  # 'low-training-memory' variant: a masked 3×3 conv
                masked.setdefault(dst, {})[rest] = v
            else:
                raise CheckpointError(f"{source}: unexpected key {k!r}")
        elif m := rx_gmsa.match(k):
            j = int(m.group(1)) * per_group + int(m.group(2))
            out[f"body.{j}.gmsa.{m.group(3)}"] = v
        elif k.startswith("head.0."):
            out["head." + k[len("head.0."):]] = v
        else:
            out[k] = v
    for dst, parts in masked.items():
        w, b, mask = parts["w"], parts["b"], parts["m"]
        # The mask keeps one tap per input channel: the shift pattern; the kept taps are the 1×1 weights.
        _check_constant(mask[0:1].transpose(0, 1), shift_kernel(mask.shape[1]), f"{dst} mask", source)
        out[f"{dst}.weight"] = (w * mask).sum(dim=(2, 3), keepdim=True)
        out[f"{dst}.bias"] = b
    return out


def _convert_elan_friedricelab(sd: StateDict, source: str) -> StateDict:
    from lightsr.models.elan import shift_kernel

    sd = dict(sd)
    _check_mean_shift(sd, source)
    per_group = len(_block_indices(sd, r"body\.0\.modules_lfe\.(\d+)\."))
    out: StateDict = {}
    rx_lfe = re.compile(r"body\.(\d+)\.modules_lfe\.(\d+)\.lfe\.([02])\.(weight|bias|mask)")
    rx_gmsa = re.compile(r"body\.(\d+)\.modules_gmsa\.(\d+)\.(.+)")
    for k, v in sd.items():
        if m := rx_lfe.match(k):
            j = int(m.group(1)) * per_group + int(m.group(2))
            conv = "conv0" if m.group(3) == "0" else "conv1"
            if m.group(4) == "mask":
                _check_constant(v, shift_kernel(v.shape[0]), k, source)
            else:
                out[f"body.{j}.lfe.{conv}.{m.group(4)}"] = v
        elif m := rx_gmsa.match(k):
            j = int(m.group(1)) * per_group + int(m.group(2))
            out[f"body.{j}.gmsa.{m.group(3)}"] = v
        else:
            out[k] = v
    return out


def _convert_hasn_official(sd: StateDict, source: str) -> StateDict:
    out: StateDict = {}
    rx_block = re.compile(r"block_(\d+)\.(.+)")
    for k, v in sd.items():
        if m := rx_block.match(k):
            rest = re.sub(r"^(dwconv2?|f[123]|g)\.conv\.", r"\1.", m.group(2))
            rest = rest.replace("cab.cab.", "cab.body.")
            out[f"blocks.{int(m.group(1)) - 1}.{rest}"] = v
        elif k.startswith("conv_1."):
            out["head." + k[len("conv_1."):]] = v
        elif k.startswith("conv_2."):
            out["body_conv." + k[len("conv_2."):]] = v
        else:
            out[k] = v
    return out


# (family, layout name, marker key, converter or None when already lightsr's layout)
_LAYOUTS = (
    ("elan", "official ELAN", "body.0.modules_lfe.lfe_0.conv0.shift_conv.", _convert_elan_official),
    ("elan", "FriedRiceLab ELAN", "body.0.modules_lfe.0.lfe.0.", _convert_elan_friedricelab),
    ("elan", "lightsr", "body.0.lfe.conv0.weight", None),
    ("hasn", "official HASN (BasicSR)", "block_1.dwconv.conv.weight", _convert_hasn_official),
    ("hasn", "lightsr", "blocks.0.dwconv.weight", None),
    ("lksmn", "lightsr", "blocks.0.msma.", None),
)
_CONFIG_READERS = {"elan": _elan_config, "hasn": _hasn_config, "lksmn": _lksmn_config}


def detect(sd: StateDict, source: str = "checkpoint") -> tuple[str, str, dict[str, Any], StateDict]:
    """Identify a state dict: ``(registry name, layout, config incl. scale, state dict in lightsr's layout)``."""
    for family, layout, marker, convert in _LAYOUTS:
        if any(k.startswith(marker) for k in sd):
            converted = convert(sd, source) if convert else dict(sd)
            try:
                config = _CONFIG_READERS[family](converted, source)
            except KeyError as e:
                raise CheckpointError(f"{source}: looks like {layout} but key {e} is missing") from None
            return _registry_name(family, config), layout, config, converted
    raise CheckpointError(
        f"{source}: cannot recognise the architecture (first keys: {', '.join(list(sd)[:4])}); "
        f"known: {', '.join(list_models())}"
    )


def _registry_name(family: str, config: dict[str, Any]) -> str:
    """The registry entry whose defaults match ``config`` (``elan_light`` vs ``elan``), else the family."""
    for name in list_models():
        spec = model_spec(name)
        if spec.module.endswith("." + family) and all(
            _same(config.get(k), v) for k, v in spec.defaults.items()
        ):
            return name
    return family


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
    det_scale = int(config["scale"])
    if name is not None and model_spec(name).module != model_spec(det_name).module:
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
    model.source = {"path": source, "layout": layout, "param_key": param_key}
    log.info("loaded %s ×%d from %s (%s layout)", model.arch, det_scale, source, layout)
    return model.to(device).eval()


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

    from lightsr import __version__

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
