"""lightsr's networks in spandrel (chaiNNer, ComfyUI, traiNNer-redux and other tools load SR models through it).

    import spandrel, lightsr.spandrel
    lightsr.spandrel.install()                      # adds every registered network to spandrel's main registry
    model = spandrel.ModelLoader().load_from_file("model.pth")  # an ImageModelDescriptor

``install`` adds one :class:`spandrel.Architecture` per network of lightsr's registry (ids ``lightsr.<name>``, the
paper's name as ``name``), as spandrel's own extension packages do. Detection and loading are lightsr's: the layout
is recognised from the tensors, the configuration is read from their shapes and checked against a network built
on the ``meta`` device before the real one is built, and anything that does not fit is not detected. The
descriptor holds lightsr's training form of the network (its state dict is lightsr's), with:

* ``scale``, 3 input and output channels, ``purpose`` ``"SR"``;
* ``size_requirements``: the padding the network does itself (``info.pad_multiple``, ``info.min_input``: a window
  multiple, a smallest input); spandrel's right/bottom mirror padding is the network's own, so outputs are
  unchanged by it;
* ``tiling``: ``DISCOURAGED`` for networks that pool or attend over the whole image (blended tiles see different
  statistics; ``lightsr upscale`` tiles them exactly), ``SUPPORTED`` otherwise;
* ``supports_half`` / ``supports_bfloat16`` from the network's precisions; ``tags`` from its configuration.

Settings that leave no trace in the weights (a spec's ``undetectable``) take their defaults: spandrel reads a state
dict, not lightsr's metadata. Needs ``pip install "lightsr[spandrel]"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightsr.errors import LightSRError

if TYPE_CHECKING:
    import spandrel as _spandrel

__all__ = ["architectures", "install"]

ID_PREFIX = "lightsr."


def _spandrel() -> Any:
    try:
        import spandrel
    except ImportError as e:
        raise LightSRError(f"spandrel support needs the spandrel package: pip install \"lightsr[spandrel]\" ({e})") \
            from None
    return spandrel


def architectures() -> list[Any]:
    """One spandrel ``Architecture`` per network of lightsr's registry."""
    spandrel = _spandrel()
    from lightsr.checkpoints import CheckpointError, load_state_dict
    from lightsr.models.registry import list_models, model_spec

    class LightSRArchitecture(spandrel.Architecture):
        def __init__(self, name: str) -> None:
            spec = model_spec(name)
            self.spec = spec
            super().__init__(id=ID_PREFIX + name, name=spec.title, detect=self._detect_state_dict)

        def _detect_state_dict(self, state_dict: dict) -> bool:
            if not state_dict or not all(hasattr(v, "shape") for v in state_dict.values()):
                return False
            try:  # the whole check, shapes against the network on the meta device included: no false claims
                net = load_state_dict(state_dict, source="state dict", device="meta")
            except (CheckpointError, LightSRError):
                return False
            return net.arch == self.spec.name

        def load(self, state_dict: dict) -> _spandrel.ImageModelDescriptor:
            model = load_state_dict(state_dict, name=self.spec.name, source=f"{self.spec.title} state dict")
            info = model.info
            tags = [f"{k}={'x'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                    for k, v in info.config.items() if k not in ("scale", "in_channels")]
            return spandrel.ImageModelDescriptor(
                model,
                model.state_dict(),
                architecture=self,
                purpose="SR",
                tags=tags,
                supports_half="fp16" in info.precisions,
                supports_bfloat16="bf16" in info.precisions,
                scale=info.scale,
                input_channels=3,
                output_channels=3,
                size_requirements=spandrel.SizeRequirements(minimum=info.min_input, multiple_of=info.pad_multiple),
                tiling=spandrel.ModelTiling.DISCOURAGED if self.spec.tiling.global_context
                else spandrel.ModelTiling.SUPPORTED,
            )

    return [LightSRArchitecture(name) for name in list_models()]


def install(registry: Any = None) -> list[Any]:
    """Add lightsr's architectures to ``registry`` (default: spandrel's ``MAIN_REGISTRY``), detected before
    spandrel's own ones; installing twice changes nothing. Returns the architectures added."""
    spandrel = _spandrel()
    registry = spandrel.MAIN_REGISTRY if registry is None else registry
    # Detected first: lightsr's detection is exact (a layout marker, then shapes checked against the network),
    # while a few of spandrel's detectors accept any dict with a common key name.
    others = tuple(a.architecture.id for a in registry.architectures()
                   if not str(a.architecture.id).startswith(ID_PREFIX))
    supports = [spandrel.ArchSupport.from_architecture(a, before=others) for a in architectures()]
    return registry.add(*supports, ignore_duplicates=True)
