"""LKSMN checkpoint layouts: lightsr's own keys (no other code exists), and the config read from weights.

The dilations of the multi-scale large-kernel attention leave no trace in the weights: lightsr's safetensors
files store them in their metadata; a plain state dict is loaded with each scale's default dilation
(:data:`~lightsr.models.lksmn.constants.DEFAULT_KERNELS`), and the log says so.
"""

from __future__ import annotations

from typing import Any

from lightsr.models._layouts import StateDict, scale_from_out_channels
from lightsr.models.lksmn.constants import DEFAULT_KERNELS
from lightsr.models.spec import Layout


def config_from_state_dict(sd: StateDict, source: str) -> dict[str, Any]:
    """Constructor arguments, ``scale`` included, read from a plain LKSMN state dict's shapes."""
    channels = sd["shallow.weight"].shape[0]
    num_blocks = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    kernels = []
    i = 0
    while f"blocks.0.msma.a.2.branches.{i}.0.weight" in sd:
        k = sd[f"blocks.0.msma.a.2.branches.{i}.0.weight"].shape[-1]
        dk = sd[f"blocks.0.msma.a.2.branches.{i}.1.weight"].shape[-1]
        dilation = DEFAULT_KERNELS[i][2] if i < len(DEFAULT_KERNELS) else 1
        kernels.append([k, dk, dilation])
        i += 1
    return dict(
        scale=scale_from_out_channels(sd["upsampler.0.weight"].shape[0], source),
        channels=channels,
        num_blocks=num_blocks,
        heads=sd["blocks.0.mdta.temperature"].shape[0],
        mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / channels,
        kernels=kernels,
        in_channels=sd["shallow.weight"].shape[1],
    )


def check_config(config: dict[str, Any]) -> None:
    """Scales a file may ask for: 1 to 8 of [kernel, dilated kernel, dilation], odd kernels up to 31, dilations
    1…16."""
    ks = config.get("kernels")

    def ok(k: object) -> bool:
        return (isinstance(k, list) and len(k) == 3 and all(isinstance(v, int) and not isinstance(v, bool) for v in k)
                and all(1 <= v <= 31 and v % 2 for v in k[:2]) and 1 <= k[2] <= 16)

    if not (isinstance(ks, list) and 1 <= len(ks) <= 8 and all(ok(k) for k in ks)):
        raise ValueError(f"kernels: expected 1 to 8 [odd kernel ≤ 31, odd kernel ≤ 31, dilation 1…16], got {ks!r}")


LAYOUTS = (Layout("lightsr", "blocks.0.msma.", notes="dilations read as the defaults"),)
