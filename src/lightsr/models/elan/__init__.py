"""ELAN and ELAN-light (Zhang et al., ECCV 2022): the network, its inference form, its layouts, their specs."""

from lightsr.models.elan.constants import RGB_MEAN, RGB_RANGE, shift_kernel
from lightsr.models.elan.fused import FusedELAN, FusedShiftConv
from lightsr.models.elan.layouts import LAYOUTS, config_from_state_dict
from lightsr.models.elan.network import ELAB, ELAN, GMSA, LFE, ShiftConv2d
from lightsr.models.spec import ModelSpec, TilingSpec

_PAPER = "Zhang et al., Efficient Long-Range Attention Network for Image Super-resolution, ECCV 2022"


def _spec(name: str, defaults: dict, bytes_per_pixel: int) -> ModelSpec:
    return ModelSpec(
        name=name,
        network=ELAN,
        paper=_PAPER,
        config_from_weights=config_from_state_dict,
        defaults=defaults,
        family="elan",
        layouts=LAYOUTS,
        undetectable=("window_sizes",),
        # Attention within 4/8/16-pixel windows aligned to the image origin: tile origins and context are
        # multiples of 16, so every tile sees the whole image's window grid; the cyclic shift wraps around.
        tiling=TilingSpec(overlap=48, align=16, bytes_per_pixel=bytes_per_pixel, wrap=True),
        output_prefixes=("tail.",),
    )


SPECS = (
    _spec("elan_light", dict(num_blocks=24, channels=60, n_share=1, exp_ratio=2, window_sizes=(4, 8, 16)), 8_200),
    _spec("elan", dict(num_blocks=36, channels=180, n_share=0, exp_ratio=2, window_sizes=(4, 8, 16)), 14_000),
)

__all__ = ["ELAB", "ELAN", "GMSA", "LFE", "RGB_MEAN", "RGB_RANGE", "SPECS", "FusedELAN", "FusedShiftConv",
           "ShiftConv2d", "shift_kernel"]
