"""HASN (Cao et al., The Visual Computer 2024): the network, its inference form, its checkpoint layouts, its spec."""

from lightsr.models.hasn.fused import FusedHASN
from lightsr.models.hasn.layouts import LAYOUTS, config_from_state_dict
from lightsr.models.hasn.network import HASN, MIN_INPUT
from lightsr.models.spec import ModelSpec, TilingSpec

SPECS = (
    ModelSpec(
        name="hasn",
        network=HASN,
        paper="Cao et al., Hybrid Attention Separable Network for Efficient Image Super-resolution, "
              "The Visual Computer 2024",
        config_from_weights=config_from_state_dict,
        defaults=dict(channels=52, num_blocks=6),
        layouts=LAYOUTS,
        # ESA pools on a 6-pixel grid (stride-2 conv, then stride-3 max-pool): tiles align to it.
        tiling=TilingSpec(overlap=48, align=6, bytes_per_pixel=6_300),
        output_prefixes=("upsampler.",),
    ),
)

__all__ = ["HASN", "MIN_INPUT", "SPECS", "FusedHASN"]
