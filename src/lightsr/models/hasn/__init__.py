"""HASN (Cao et al., The Visual Computer 2024): the network, its inference form, its checkpoint layouts, its spec."""

from lightsr.models.hasn.fused import FusedHASN
from lightsr.models.hasn.layouts import LAYOUTS, config_from_state_dict
from lightsr.models.hasn.network import HASN, MIN_INPUT
from lightsr.models.spec import Int8Spec, ModelSpec, PublishedWeights, TilingSpec

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
        # CAB's channel attention pools the whole image: exact tiling streams layer by layer (fused.py,
        # forward_tiled), where ESA's pooled map is made for the whole image and tiles need no alignment.
        tiling=TilingSpec(overlap=48, align=6, bytes_per_pixel=6_300, global_context=True, map_bytes_per_pixel=460,
                          stream_bytes_per_pixel=2_200, stream_halo=8),
        output_prefixes=("upsampler.",),
        # The first conv reads the image, the last writes the output: int8 there costs tenths of a dB; of the
        # rest the second conv of each channel-attention block (CAB), whose output is the block's, is the most
        # sensitive (benchmarks/README.md, int8). NNCF's transformer scheme keeps the attention products and
        # norms f32.
        int8=Int8Spec(keep_f32=("/model/head/", "/model/upsampler/", r"/model/blocks/blocks\.\d+/cab_conv2/")),
        published=(
            PublishedWeights(
                name="hasn_x4_official",
                scale=4,
                url="https://github.com/nathan66666/HASN/raw/bd8d5c035ca613f77e6d14d69cdd8b07fc36dd86/"
                    "experiments/HASN.pth",
                sha256="3d70a22008332a7ab35aeedf7722484e6e7607244bc6ddd8adeab0ab864bcb93",
                size=3_616_623,
                license="not stated by the authors",
                source="official HASN ×4 (nathan66666/HASN, BasicSR format)",
                param_key="params",  # what BasicSR's test script (and the paper's numbers) use
                scores=(("Set5", 32.176, 0.8947), ("Set14", 28.608, 0.7815), ("B100", 27.571, 0.7360)),
            ),
        ),
    ),
)

__all__ = ["HASN", "MIN_INPUT", "SPECS", "FusedHASN"]
