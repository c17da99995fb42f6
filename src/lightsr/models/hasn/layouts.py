"""HASN checkpoint layouts: the official BasicSR code's keys, lightsr's own, and the config read from weights.

Every HASN setting (width, blocks, expansion ratio, scale) shows in the tensor shapes, so any layout loads
exactly without stored metadata.
"""

from __future__ import annotations

import re
from typing import Any

from lightsr.models._layouts import StateDict, block_indices, scale_from_out_channels
from lightsr.models.spec import Layout


def config_from_state_dict(sd: StateDict, source: str) -> dict[str, Any]:
    """Constructor arguments, ``scale`` included, from a state dict in lightsr's keys."""
    channels = sd["head.weight"].shape[0]
    return dict(
        scale=scale_from_out_channels(sd["upsampler.0.weight"].shape[0], source),
        channels=channels,
        num_blocks=len(block_indices(sd, r"blocks\.(\d+)\.")),
        mlp_ratio=sd["blocks.0.f1.weight"].shape[0] // channels,
    )


def convert_official(sd: StateDict, source: str) -> StateDict:
    """The official repository's keys (``conv_1``, ``block_1.dwconv.conv``, …) to lightsr's."""
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


LAYOUTS = (
    Layout("official HASN (BasicSR)", "block_1.dwconv.conv.weight", convert_official),
    Layout("lightsr", "blocks.0.dwconv.weight"),
)
