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
    with pytest.raises(UsageError, match=r"^--device 'bogus': expected auto, cpu, cuda, cuda:N, mps, xpu or xpu:N$"):
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


def test_mps_and_xpu_are_picked_by_auto_and_refused_in_one_line_when_absent(monkeypatch) -> None:
    import lightsr.device as dev

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    monkeypatch.setattr(dev, "_xpu_count", lambda: 0)
    for name, backend in (("mps", "MPS"), ("xpu", "XPU"), ("xpu:1", "XPU")):
        with pytest.raises(UsageError, match=rf"^--device {name}: .*{backend}.*; use --device cpu$") as e:
            resolve_device(name)
        assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match=r"^--device meta: lightsr runs on auto, cpu"):
        resolve_device("meta")
    monkeypatch.setattr(dev, "_xpu_count", lambda: 1)
    assert resolve_device("auto") == torch.device("xpu")
    with pytest.raises(UsageError, match=r"^--device xpu:1: no such XPU \(1 visible\)$"):
        resolve_device("xpu:1")
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps") == resolve_device("mps")
    # The trainer's auto stays on CUDA or the CPU.
    assert resolve_device("auto", "train.device", local_rank=0, auto_picks=("cuda",)) == torch.device("cpu")


def test_device_error_through_the_command_line_is_one_line(tmp_path, capsys) -> None:
    from PIL import Image

    from lightsr.cli import main

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--device", "mps"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lightsr: error: --device mps: Apple's MPS backend is not available")
    assert not (tmp_path / "b.png").exists()


def _subparsers():
    import argparse

    from lightsr.cli import _SUBCOMMANDS, build_parser

    for name in _SUBCOMMANDS:
        parser = build_parser([name])
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        yield name, sub.choices[name]


def test_every_option_of_every_command_has_help_and_quiet_is_everywhere() -> None:
    import argparse

    seen = 0
    for name, sp in _subparsers():
        opts = {o for a in sp._actions for o in a.option_strings}
        assert {"-q", "--quiet", "-v", "--verbose", "-h"} <= opts, name
        for a in sp._actions:
            if a.help == argparse.SUPPRESS and a.option_strings == ["--no-progress"]:
                continue  # eval's older spelling of -q, kept working but not listed
            assert a.help and a.help.strip(), f"lightsr {name}: {a.option_strings or a.dest} has no help text"
            seen += 1
    assert seen > 60


@pytest.mark.parametrize("name", ["upscale", "eval", "export", "profile", "compare", "models", "train", "serve"])
def test_help_loads_no_torch(name) -> None:
    """``lightsr CMD --help`` must be quick: it imports neither torch nor the library behind the command
    (benchmarks/cli_startup.py times it)."""
    import subprocess
    import sys

    code = (f"import sys\nfrom lightsr.cli import main\ntry:\n    main([{name!r}, '--help'])\n"
            "except SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'numpy', 'PIL.Image', 'lightsr.upscaler') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage: lightsr" in r.stdout and "HEAVY []" in r.stdout, r.stdout[-300:]


def test_video_and_ray_option_values() -> None:
    """--frames, --bitrate and --ray's optional address: what they accept, and one line for what they do not."""
    import argparse

    from lightsr.commands import _args
    from lightsr.commands.upscale import _ray_address

    assert _args.frame_range("10:25") == (10, 25) and _args.frame_range("5:") == (5, None)
    assert _args.frame_range(":7") == (0, 7)
    for bad in ("7", "5:5", "8:3", "-1:4", "a:b"):
        with pytest.raises(argparse.ArgumentTypeError):
            _args.frame_range(bad)
    assert _args.bit_rate("800k") == 800_000 and _args.bit_rate("5M") == 5_000_000
    for bad in ("fast", "0", "10"):
        with pytest.raises(argparse.ArgumentTypeError):
            _args.bit_rate(bad)
    here = Path(__file__).parent
    for given, address, inputs in (("auto", "auto", []), ("10.0.0.5:6379", "10.0.0.5:6379", []),
                                   ("ray://head:10001", "ray://head:10001", []), ("local", "local", []),
                                   (str(here), "local", [str(here)])):
        ns = argparse.Namespace(ray=given, inputs=[])
        _ray_address(ns)
        assert (ns.ray, ns.inputs) == (address, inputs)
    with pytest.raises(UsageError, match="not a cluster address"):
        _ray_address(argparse.Namespace(ray="no-such-folder", inputs=[]))
