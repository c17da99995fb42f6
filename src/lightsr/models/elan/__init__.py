"""ELAN and ELAN-light (Zhang et al., ECCV 2022): the network, its inference form, its layouts, their specs."""

from lightsr.models.elan.constants import RGB_MEAN, RGB_RANGE, shift_kernel
from lightsr.models.elan.fused import FusedELAN, FusedShiftConv
from lightsr.models.elan.layouts import LAYOUTS, check_config, config_from_state_dict
from lightsr.models.elan.network import ELAB, ELAN, GMSA, LFE, ShiftConv2d
from lightsr.models.spec import Int8Spec, ModelSpec, PublishedWeights, TilingSpec

_PAPER = "Zhang et al., Efficient Long-Range Attention Network for Image Super-resolution, ECCV 2022"


def _spec(name: str, title: str, defaults: dict, bytes_per_pixel: int,
          published: tuple[PublishedWeights, ...] = ()) -> ModelSpec:
    return ModelSpec(
        name=name,
        title=title,
        network=ELAN,
        paper=_PAPER,
        config_from_weights=config_from_state_dict,
        defaults=defaults,
        family="elan",
        layouts=LAYOUTS,
        undetectable=("window_sizes",),
        check_config=check_config,
        # Attention within 4/8/16-pixel windows aligned to the image origin: tile origins and context are
        # multiples of 16, so every tile sees the whole image's window grid; the cyclic shift wraps around.
        tiling=TilingSpec(overlap=48, align=16, bytes_per_pixel=bytes_per_pixel, wrap=True),
        output_prefixes=("tail.",),
        published=published,
        # The first conv reads the image, the last writes the output: int8 there costs tenths of a dB. Of the
        # rest, each block's first shift-conv (LFE's expansion) and the first four blocks cost the most quality in
        # int8 and little time in f32 (benchmarks/README.md, int8). NNCF's transformer scheme keeps the residual
        # sums and norms f32.
        int8=Int8Spec(keep_f32=("/model/head/", "/model/tail_conv/", r"/model/body\.\d+/conv0/",
                                r"/model/body\.(0|1|2|3)/")),
    )


SPECS = (
    _spec("elan_light", "ELAN-light",
          dict(num_blocks=24, channels=60, n_share=1, exp_ratio=2, window_sizes=(4, 8, 16)), 8_200,
          published=(PublishedWeights(
              name="elan_light_x4_friedricelab",
              scale=4,
              url="https://github.com/Fried-Rice-Lab/FriedRiceLab/raw/d03aff7776edb831d815836496b6693b8281ca01/"
                  "modelzoo/ELAN/ELAN-light_LSR_x4_unofficial.pth",
              sha256="433400f0b3182d1c0e363edd122a070d04215283621b968367d2caac2de10493",
              size=2_698_593,
              license="MIT",
              source="ELAN-light ×4 retrained by Fried Rice Lab under the paper's conditions (no official weights "
                     "exist)",
              scores=(("Set5", 32.438, 0.8979), ("Set14", 28.790, 0.7862), ("B100", 27.689, 0.7407)),
          ),)),
    _spec("elan", "ELAN", dict(num_blocks=36, channels=180, n_share=0, exp_ratio=2, window_sizes=(4, 8, 16)),
          14_000),
)

__all__ = ["ELAB", "ELAN", "GMSA", "LFE", "RGB_MEAN", "RGB_RANGE", "SPECS", "FusedELAN", "FusedShiftConv",
           "ShiftConv2d", "shift_kernel"]
