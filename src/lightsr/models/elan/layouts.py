"""ELAN checkpoint layouts: the official code's (both shift-conv variants), FriedRiceLab's, lightsr's own.

The window sizes leave no trace in the weights (attention has no parameters per window): lightsr's safetensors
files store them in their metadata; any other file is loaded with the paper's (4, 8, 16), and the log says so.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from lightsr.errors import CheckpointError
from lightsr.models._layouts import StateDict, block_indices, scale_from_out_channels
from lightsr.models.elan.constants import RGB_MEAN, RGB_RANGE, shift_kernel
from lightsr.models.spec import Layout


def config_from_state_dict(sd: StateDict, source: str) -> dict[str, Any]:
    """Constructor arguments, ``scale`` included, from a state dict in lightsr's keys."""
    channels = sd["head.weight"].shape[0]
    blocks = block_indices(sd, r"body\.(\d+)\.")
    calc = [sd[f"body.{j}.gmsa.project_inp.0.weight"].shape[0] == 2 * channels for j in blocks]
    starts = [j for j, c in zip(blocks, calc, strict=True) if c]
    n_share = (starts[1] - starts[0] - 1) if len(starts) > 1 else len(blocks) - 1
    return dict(
        scale=scale_from_out_channels(sd["tail.0.weight"].shape[0], source),
        num_blocks=len(blocks),
        channels=channels,
        n_share=n_share,
        exp_ratio=sd["body.0.lfe.conv0.weight"].shape[0] // channels,
        window_sizes=[4, 8, 16],
    )


def check_config(config: dict[str, Any]) -> None:
    """Window sizes a file may ask for: 1 to 8 of them, each 1…64 pixels (inputs are padded to their lcm)."""
    ws = config.get("window_sizes")
    if not (isinstance(ws, list) and 1 <= len(ws) <= 8
            and all(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 64 for w in ws)):
        raise ValueError(f"window_sizes: expected 1 to 8 integers in 1…64, got {ws!r}")
    if math.lcm(*ws) > 256:
        raise ValueError(f"window_sizes: {ws} pad every input to a multiple of {math.lcm(*ws)}; at most 256")


def _check_constant(t: torch.Tensor, expected: torch.Tensor, what: str, source: str) -> None:
    if t.shape != expected.shape or not torch.allclose(t.float(), expected, atol=1e-4):
        raise CheckpointError(f"{source}: {what} differs from ELAN's fixed constant; this variant is unsupported")


def _check_mean_shift(sd: StateDict, source: str) -> None:
    """Pop the official code's frozen MeanShift convs after checking they are the constants lightsr applies."""
    mean = torch.tensor(RGB_MEAN) * RGB_RANGE
    eye = torch.eye(3).view(3, 3, 1, 1)
    for name, sign in (("sub_mean", -1.0), ("add_mean", 1.0)):
        if f"{name}.weight" in sd:
            _check_constant(sd.pop(f"{name}.weight"), eye, f"{name}.weight", source)
            _check_constant(sd.pop(f"{name}.bias"), sign * mean, f"{name}.bias (rgb_range 255)", source)


def convert_official(sd: StateDict, source: str) -> StateDict:
    """The official repository's keys (``modules_lfe.lfe_0.conv0.shift_conv.*``, either shift-conv variant)."""
    sd = dict(sd)
    _check_mean_shift(sd, source)
    per_group = len(block_indices(sd, r"body\.0\.modules_lfe\.lfe_(\d+)\."))
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


def convert_friedricelab(sd: StateDict, source: str) -> StateDict:
    """FriedRiceLab's keys (``modules_lfe.0.lfe.0.{weight,bias,mask}``)."""
    sd = dict(sd)
    _check_mean_shift(sd, source)
    per_group = len(block_indices(sd, r"body\.0\.modules_lfe\.(\d+)\."))
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


_WINDOWS = "window sizes read as the paper's (4, 8, 16)"
LAYOUTS = (
    Layout("official ELAN", "body.0.modules_lfe.lfe_0.conv0.shift_conv.", convert_official, notes=_WINDOWS),
    Layout("FriedRiceLab ELAN", "body.0.modules_lfe.0.lfe.0.", convert_friedricelab, notes=_WINDOWS),
    Layout("lightsr", "body.0.lfe.conv0.weight", notes=_WINDOWS + " unless the file's metadata stores them"),
)
