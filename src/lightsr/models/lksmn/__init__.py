"""LKSMN (The Visual Computer 2024, reconstructed): the network, its inference form, its layouts, its spec."""

from lightsr.models.lksmn.constants import DEFAULT_KERNELS
from lightsr.models.lksmn.fused import FusedLKSMN
from lightsr.models.lksmn.layouts import LAYOUTS, check_config, config_from_state_dict
from lightsr.models.lksmn.network import (
    LKSMB,
    LKSMN,
    MDTA,
    MLFA,
    MLP,
    MSMA,
    DecomposedLKA,
    LayerNorm2d,
    MultiScaleLKA,
)
from lightsr.models.spec import Int8Spec, ModelSpec, TilingSpec

SPECS = (
    ModelSpec(
        name="lksmn",
        network=LKSMN,
        paper="Large Kernel Spatial Modulation Network for Efficient Image Super-resolution, "
              "The Visual Computer 2024 (reconstructed from the paper's text)",
        config_from_weights=config_from_state_dict,
        defaults=dict(channels=48, num_blocks=6),
        layouts=LAYOUTS,
        undetectable=("kernels",),  # the dilations (kernel sizes show in the shapes)
        check_config=check_config,
        # MDTA attends over the whole image: exact tiling streams layer by layer (fused.py, forward_tiled).
        tiling=TilingSpec(overlap=32, align=1, bytes_per_pixel=5_800, global_context=True, map_bytes_per_pixel=600,
                          stream_bytes_per_pixel=3_000, stream_halo=20),
        output_prefixes=("upsampler.",),
        # The first conv reads the image, the last writes the output: int8 there costs tenths of a dB
        # (benchmarks/README.md, int8); NNCF's transformer scheme keeps the modulation products and norms f32.
        int8=Int8Spec(keep_f32=("/model/shallow/", "/model/upsampler/")),
    ),
)

__all__ = ["DEFAULT_KERNELS", "LKSMB", "LKSMN", "MDTA", "MLFA", "MLP", "MSMA", "SPECS", "DecomposedLKA", "FusedLKSMN",
           "LayerNorm2d", "MultiScaleLKA"]
