"""The official ELAN and HASN network code, loaded from a checkout for timing beside lightsr's forms.

Not part of lightsr and not vendored: pass a checkout of each repository (``xindongzhang/ELAN`` at 97ab3fa,
``nathan66666/HASN`` at bd8d5c0 — the commits the golden outputs in ``../shared/golden`` came from). Only the
network files are imported (ELAN's ``models/elan_network.py`` and ``models/elan_block.py``, HASN's
``basicsr/archs/hasn_arch.py``), with no training code. ELAN's forward needs ``einops`` (``pip install einops``).

Their other imports are helpers that take no part in an eval-mode forward: timm's ``DropPath`` (identity at
eval, and both networks build it with rate 0), ``trunc_normal_``/``to_2tuple`` (initialisation), timm's and
BasicSR's registries (decorators). When ``timm`` or ``basicsr`` is not importable (timm's torchvision does not load
beside every torch), small stand-ins with the same behaviour in eval mode are used, and :func:`load` says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch
from torch import nn

# The official configs (ELAN: configs/elan_light_x4.yml and configs/elan_x4.yml; HASN: its default width).
# The network file of each repository, relative to its checkout.
NETWORK_FILES = {"elan_light": "models/elan_network.py", "elan": "models/elan_network.py",
                 "hasn": "basicsr/archs/hasn_arch.py"}
SUPPORTED = tuple(NETWORK_FILES)
ELAN_CONFIGS = {
    "elan_light": dict(m_elan=24, c_elan=60, n_share=1, r_expand=2),
    "elan": dict(m_elan=36, c_elan=180, n_share=0, r_expand=2),
}


class _DropPath(nn.Module):
    """Stochastic depth as timm's: the identity in eval mode (the only mode timed here)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop_prob > 0:
            raise RuntimeError("the stand-in DropPath is for eval-mode timing only")
        return x


class _Registry:
    def register(self, obj=None):
        return obj if obj is not None else (lambda o: o)


def _stand_ins() -> list[str]:
    """Put stand-ins for the unimportable helper modules into ``sys.modules``; returns their names."""
    used = []
    try:
        import timm.models.layers
        import timm.models.registry  # noqa: F401
    except Exception:  # timm missing, or its torchvision import failing
        layers = types.ModuleType("timm.models.layers")
        layers.DropPath = _DropPath
        layers.trunc_normal_ = nn.init.trunc_normal_
        layers.to_2tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)
        registry = types.ModuleType("timm.models.registry")
        registry.register_model = lambda fn: fn
        sys.modules.update({"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"),
                            "timm.models.layers": layers, "timm.models.registry": registry})
        used.append("timm")
    try:
        import basicsr.utils.registry  # noqa: F401
    except Exception:
        reg = types.ModuleType("basicsr.utils.registry")
        reg.ARCH_REGISTRY = _Registry()
        sys.modules.update({"basicsr": types.ModuleType("basicsr"), "basicsr.utils": types.ModuleType("basicsr.utils"),
                            "basicsr.utils.registry": reg})
        used.append("basicsr")
    if "archs" not in sys.modules:  # hasn_arch.py imports `archs.block` and uses nothing from it
        archs = types.ModuleType("archs")
        archs.block = types.ModuleType("archs.block")
        sys.modules.update({"archs": archs, "archs.block": archs.block})
        used.append("archs.block")
    return used


def _module_from(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class ZeroToOne(nn.Module):
    """Official ELAN works on 0..255 data; this takes and returns [0, 1] like every lightsr form."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 255) / 255




def check(arch: str, checkout: Path) -> Path:
    """``checkout`` if it holds the official network file for ``arch`` and its forward's needs are installed;
    else a ValueError saying what is missing."""
    if arch not in NETWORK_FILES:
        raise ValueError(f"no official code known for {arch!r} (known: {', '.join(SUPPORTED)})")
    if not (checkout / NETWORK_FILES[arch]).is_file():
        raise ValueError(f"{checkout / NETWORK_FILES[arch]} not found (expected a checkout of the official code)")
    if arch in ELAN_CONFIGS and importlib.util.find_spec("einops") is None:
        raise ValueError("official ELAN needs einops: pip install einops")
    return checkout


def load(arch: str, checkout: str | Path, scale: int) -> tuple[nn.Module, list[str]]:
    """The official network for ``arch`` at ``scale`` (random init, eval mode) taking [0, 1] input, and the
    names of the stand-ins used."""
    root = check(arch, Path(checkout))
    used = _stand_ins()
    if arch in ELAN_CONFIGS:
        sys.path.insert(0, str(root))  # elan_network imports models.elan_block
        try:
            network = _module_from(root / NETWORK_FILES[arch], "official_elan_network")
        finally:
            sys.path.remove(str(root))
        args = argparse.Namespace(scale=scale, colors=3, rgb_range=255, window_sizes=[4, 8, 16],
                                  **ELAN_CONFIGS[arch])
        return ZeroToOne(network.create_model(args)).eval(), used
    if arch == "hasn":
        network = _module_from(root / NETWORK_FILES[arch], "official_hasn_arch")
        return network.HASN(upscale=scale).eval(), used
    raise AssertionError(arch)  # check() refuses any other


def official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The official model's weights in the official key layout (what ``lightsr.load_model`` reads)."""
    net = model.net if isinstance(model, ZeroToOne) else model
    return {k: v.detach().clone() for k, v in net.state_dict().items()}
