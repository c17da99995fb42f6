"""Layout of the command line (argparse only in lightsr.commands and lightsr.cli) and the one device resolver."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from lightsr.device import resolve_device
from lightsr.errors import UsageError

SRC = Path(__file__).resolve().parents[1] / "src" / "lightsr"


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (lazy imports inside functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _library_modules() -> list[Path]:
    return [p for p in sorted(SRC.rglob("*.py"))
            if p.relative_to(SRC).parts[0] != "commands" and p.relative_to(SRC) != Path("cli.py")]


def test_argparse_lives_in_the_commands_only() -> None:
    modules = _library_modules()
    assert len(modules) > 20 and SRC / "upscaler.py" in modules
    offenders = [str(p.relative_to(SRC)) for p in modules
                 if any(n == "argparse" or n.startswith("argparse.") for n in _imports(p))]
    assert offenders == [], f"argparse imported outside lightsr/commands and lightsr/cli.py: {offenders}"


def test_library_never_imports_the_commands() -> None:
    offenders = [str(p.relative_to(SRC)) for p in _library_modules()
                 if any(n == "lightsr.commands" or n.startswith("lightsr.commands.") for n in _imports(p))]
    assert offenders == []


def test_every_subcommand_has_its_module() -> None:
    import importlib

    from lightsr.cli import _SUBCOMMANDS

    for name in _SUBCOMMANDS:
        mod = importlib.import_module(f"lightsr.commands.{name}")
        assert callable(mod.add_arguments) and callable(mod.run), name


def test_device_resolver(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto", "train.device", local_rank=3) == torch.device("cpu")
    with pytest.raises(UsageError, match=r"^--device 'bogus': expected auto, cpu, cuda or cuda:N$"):
        resolve_device("bogus")
    with pytest.raises(UsageError, match=r"^--device cuda:0: CUDA is not available .*; use --device cpu$"):
        resolve_device("cuda:0")
    with pytest.raises(UsageError, match=r"^train\.device=cuda: CUDA is not available .*; use train\.device=cpu$"):
        resolve_device("cuda", "train.device", local_rank=0)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")  # no rank: PyTorch's current device
    assert resolve_device("auto", "train.device", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:1", local_rank=0) == torch.device("cuda", 1)
    with pytest.raises(UsageError, match=r"^train\.device=cuda: local rank 2 has no GPU \(2 visible\)$"):
        resolve_device("cuda", "train.device", local_rank=2)
    with pytest.raises(UsageError, match=r"^--device cuda:2: no such GPU \(2 visible\)$"):
        resolve_device("cuda:2")
