"""What every lightsr network shares: the RGB-in-[0, 1] contract and the metadata a caller needs.

Following spandrel's ``ImageModelDescriptor``, a network carries what callers would otherwise guess: its
architecture name, scale, the constructor configuration (so a checkpoint can rebuild it), the precisions it is
known to run in, and the sizes it pads inputs to internally (so an exported graph can pad the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of a built network; ``config`` is enough to rebuild it with ``create_model(arch, **config)``.

    Every network accepts any input size: ``pad_multiple`` and ``min_input`` say what it pads inputs to
    internally (mirror padding, output cropped back).
    """

    arch: str
    scale: int
    config: dict[str, Any] = field(default_factory=dict)
    precisions: tuple[str, ...] = ("fp32", "bf16", "fp16")
    pad_multiple: int = 1
    min_input: int = 1


class SRNet(nn.Module):
    """Base class: ``forward`` maps an RGB batch ``(N, 3, H, W)`` in [0, 1] to ``(N, 3, s·H, s·W)``.

    Subclasses call ``_remember(**config)`` with every constructor argument, so that ``info.config`` rebuilds
    an identical network, and override :meth:`fuse`. ``arch`` and ``precisions`` are set from the network's
    spec by :func:`lightsr.models.registry.create_model`.
    """

    arch: str = ""
    precisions: tuple[str, ...] = ("fp32", "bf16", "fp16")
    pad_multiple: int = 1  # the network mirror-pads inputs to a multiple of this …
    min_input: int = 1  # … and to at least this size

    def _remember(self, **config: Any) -> None:
        self._config = dict(config)

    @property
    def scale(self) -> int:
        return int(self._config["scale"])

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(arch=self.arch, scale=self.scale, config=dict(self._config), precisions=self.precisions,
                         pad_multiple=self.pad_multiple, min_input=self.min_input)

    def num_trainable_params(self) -> int:
        """Trainable parameters as the papers count them (frozen constants are buffers, so not included)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def fuse(self) -> nn.Module:
        """The inference form: the same function (≤ 1e-4), faster, in eval mode without gradients.

        Every network overrides this; one without a faster form says so by returning :meth:`unfused`.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define fuse(): return its inference form, or "
                                  "self.unfused() if it has none")

    def unfused(self) -> SRNet:
        """This network as its own inference form (for networks that have no faster one)."""
        return self.eval()


class InferenceForm(nn.Module):
    """Base of the modules :meth:`SRNet.fuse` returns: they carry the training form's :class:`ModelInfo`.

    ``forward_tiled(x, tile, sink, progress=None)``: defined by the inference forms of networks that pool or
    attend over the whole image (their spec's ``TilingSpec.global_context``), None elsewhere. It computes
    ``forward(x)`` for one image ``x`` (``1×C×H×W`` on the module's device and dtype) in tiles of at most
    ``tile`` pixels, layer by layer, with the global statistics summed over the whole image
    (:mod:`lightsr.models._stream`): the result equals ``forward(x)`` up to float rounding at any tile size,
    and memory is the LR-resolution feature maps plus one tile. Output rows go to ``sink(row0, block)``
    (``block``: CPU float32 ``C×rows×s·W``) top to bottom; ``progress(done, total)`` counts tiles of passes.
    ``stream_halo``: the largest context a tile of it reads on each side.
    """

    forward_tiled: Callable[..., None] | None = None
    stream_halo: int = 0

    def __init__(self, info: ModelInfo) -> None:
        super().__init__()
        self.info = info

    @property
    def arch(self) -> str:
        return self.info.arch

    @property
    def scale(self) -> int:
        return self.info.scale

    def ready(self, like: nn.Module) -> InferenceForm:
        """On ``like``'s device, channels-last, eval mode, no gradients: how every inference form is handed out."""
        device = next(like.parameters()).device
        return self.to(device).to(memory_format=torch.channels_last).eval().requires_grad_(False)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics to those of ``images`` (one train-mode pass); returns it in eval.

    A randomly initialised ELAN keeps BatchNorm's default statistics (mean 0, variance 1), with which its
    un-normalised q·qᵀ attention logits are huge and float32 evaluations of the same function disagree wildly;
    after training — or this calibration on image-like data — the network is well-conditioned. Benchmarks and
    equivalence checks of untrained networks need it; trained weights never do.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.momentum = None  # cumulative average: exactly the batch's statistics after one pass from reset
        m.reset_running_stats()
    model.train()
    model(images)
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
    return model.eval()
