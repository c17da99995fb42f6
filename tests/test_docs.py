"""The documentation: every shell and Python block of README.md and docs/*.md runs, the generated pages are
current, and every public object of the API reference is documented.

Blocks run in a folder that plays the repository's root (tests/docs_sandbox.py: small example files, shrunk
configs, a tiny copy of the research data, a local mirror of the published weights), each block in a fresh copy
of it, with ``lightsr`` served by a warm fork server. A block that cannot run there — it needs hardware, the
network, a server that runs until stopped, or minutes — carries a marker on the line before its fence, with its
reason: ``<!-- not-run: needs a CUDA GPU -->``. Blocks of other languages (text, yaml) are not run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, require_shared

SHELL = {"sh", "bash", "shell"}
PYTHON = {"python", "py"}
NOT_RUN = {"text", "yaml", "json", "toml", "console", ""}
MARKER = re.compile(r"^<!-- not-run: (?P<reason>.+?) -->$")
INCLUDE = re.compile(r"^<!-- include: (?P<path>\S+) -->$")
FENCE = re.compile(r"^(?P<fence>```|~~~)(?P<lang>[\w+-]*)\s*$")
BLOCK_TIMEOUT_S = 300  # a generous bound for a hang, not a timing: a block takes seconds


@dataclasses.dataclass
class Block:
    page: str  # as the reader sees it: README.md, docs/x.md (an included file's blocks are its page's)
    source: str  # the file holding the block, and its line
    line: int
    lang: str
    code: str
    reason: str | None  # the not-run marker's reason

    @property
    def runs(self) -> bool:
        return self.lang in SHELL | PYTHON and self.reason is None

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def doc_pages() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def _lines(path: Path) -> list[tuple[str, int, str]]:
    """``(file, line number, text)`` of a page with its includes expanded."""
    out = []
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = INCLUDE.match(text)
        if m:
            inc = (path.parent / m["path"]).resolve()
            out += _lines(inc)
        else:
            out.append((str(path.relative_to(REPO_ROOT)), n, text))
    return out


def collect(path: Path) -> list[Block]:
    """The fenced blocks of a page, with the not-run marker on the lines right above each (among other HTML
    comment lines, such as the README's command markers)."""
    lines = _lines(path)
    page = str(path.relative_to(REPO_ROOT))
    blocks, i = [], 0
    while i < len(lines):
        src, n, text = lines[i]
        m = FENCE.match(text)
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j][2].strip() != m["fence"]:
            j += 1
        if j == len(lines):
            raise AssertionError(f"{src}:{n}: the block never ends")
        reason, k = None, i - 1
        while k >= 0 and lines[k][2].startswith("<!--") and lines[k][2].endswith("-->"):
            mm = MARKER.match(lines[k][2])
            if mm:
                reason = mm["reason"].strip()
            k -= 1
        blocks.append(Block(page, src, n, m["lang"], "\n".join(t for _, _, t in lines[i + 1:j]) + "\n", reason))
        i = j + 1
    return blocks


def all_blocks() -> list[Block]:
    return [b for p in doc_pages() for b in collect(p)]


def summary() -> str:
    """Counts for reports: ``python tests/test_docs.py``."""
    blocks = [b for b in all_blocks() if b.lang in SHELL | PYTHON]
    run = [b for b in blocks if b.runs]
    out = [f"{len(blocks)} shell/Python blocks: {len(run)} run, {len(blocks) - len(run)} marked not-run"]
    out += [f"  not-run {b.where} ({b.lang}): {b.reason}" for b in blocks if not b.runs]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------- static checks


def test_every_block_is_known_and_markers_have_reasons() -> None:
    blocks = all_blocks()
    assert len(blocks) > 30
    for b in blocks:
        assert b.lang in SHELL | PYTHON | NOT_RUN, f"{b.where}: unknown block language {b.lang!r}"
        if b.reason is not None:
            assert b.lang in SHELL | PYTHON, f"{b.where}: a not-run marker on a {b.lang or 'plain'} block"
            assert len(b.reason) >= 10, f"{b.where}: say why the block is not run"
    for page in doc_pages():  # a marker not followed by a fence is a typo
        lines = _lines(page)
        for i, (src, n, text) in enumerate(lines):
            if MARKER.match(text):
                k = i + 1
                while k < len(lines) and lines[k][2].startswith("<!--"):
                    k += 1
                assert k < len(lines) and FENCE.match(lines[k][2]), f"{src}:{n}: a not-run marker with no block"


def test_readme_is_short_and_keeps_its_two_commands() -> None:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for marker in ("<!-- main-command -->", "<!-- test-command -->"):
        lines = text.splitlines()
        i = lines.index(marker)
        assert lines[i + 1] == "```sh", marker  # CI's extraction reads the block right below its marker
    assert "pip install" in text[text.index("<!-- test-command -->"):] and "test-command" in ci
    # The CPU-build hint comes before the commands, so that a CPU-only machine reads it first.
    assert text.index("download.pytorch.org/whl/cpu") < text.index("<!-- main-command -->")


@pytest.mark.parametrize("script", ["docs_reference.py", "model_cards.py"])
def test_generated_pages_are_current(script: str) -> None:
    """docs/configs.md and docs/cli.md are what scripts/docs_reference.py makes of the code now, and
    docs/model_cards.md what scripts/model_cards.py makes of the shipped files and committed runs."""
    r = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / script), "--check"],
                       capture_output=True, text=True, timeout=300, env=_env_with_src())
    assert r.returncode == 0, r.stderr + r.stdout


def test_configs_reference_covers_every_key_and_the_train_options() -> None:
    from lightsr.train import config as C

    text = (REPO_ROOT / "docs" / "configs.md").read_text(encoding="utf-8")

    def keys(cls: type, prefix: str = "") -> list[str]:
        out = []
        hints = __import__("typing").get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            out.append(key)
            if dataclasses.is_dataclass(hints[f.name]):
                out += keys(hints[f.name], key + ".")
        return out

    rows = {m[1]: m[0] for m in re.finditer(r"^\| `([a-z0-9_.]+)` \|.*$", text, re.M)}
    for key in keys(C.Config):
        assert key in rows, key
        cells = [c.strip() for c in rows[key].split(" | ")]
        assert cells[-1].strip(" |"), f"{key}: no meaning (a comment beside the field, or NOTES in the script)"
    assert "distill.teacher" in rows and "`--max-time`" in text and "`--resume`" in text


def test_cli_reference_names_every_option() -> None:
    """Every option of every subcommand is in docs/cli.md, with the help text argparse prints."""
    import argparse

    from lightsr.cli import _SUBCOMMANDS, build_parser

    text = (REPO_ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    import html

    text = html.unescape(text).replace("\\|", "|")  # the page escapes < and | for Markdown
    sections = dict(re.findall(r"^## lightsr (\w+)\n(.*?)(?=^## |\Z)", text, re.M | re.S))
    assert set(sections) == set(_SUBCOMMANDS)
    for name in _SUBCOMMANDS:
        parser = build_parser([name])
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            label = action.option_strings[-1] if action.option_strings else (action.metavar or action.dest)
            assert f"`{label}`" in sections[name], (name, label)
            assert " ".join(action.help.split()[:6]) in sections[name], (name, label)


def test_site_hook_rewrites_repository_links_and_refuses_missing_ones(tmp_path) -> None:
    """docs/hooks/repo_links.py: a link out of docs/ becomes the path in code font (or a link into repo_url), a
    link to a missing file stops the build, links in code are left alone, an include's links are rebased."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    import importlib.util
    import types

    from mkdocs.exceptions import PluginError

    spec = importlib.util.spec_from_file_location("repo_links", REPO_ROOT / "docs" / "hooks" / "repo_links.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    root = tmp_path / "repo"
    (root / "docs" / "sub").mkdir(parents=True)
    (root / "configs").mkdir()
    (root / "configs" / "a.yaml").write_text("x: 1\n")
    (root / "NOTES.md").write_text("See [the config](configs/a.yaml) and [a page](docs/other.md).\n")
    page = types.SimpleNamespace(file=types.SimpleNamespace(src_path="sub/page.md"))
    config = {"docs_dir": str(root / "docs"), "repo_url": ""}
    md = ("[the file](../../configs/a.yaml) [`a`](../../configs/a.yaml) [p](../other.md) "
          "`[c](../../nope.txt)` [w](https://example.com)\n\n<!-- include: ../../NOTES.md -->\n")
    out = hook.on_page_markdown(md, page, config, None)
    assert ("the file (`configs/a.yaml`) `configs/a.yaml` [p](../other.md) `[c](../../nope.txt)` "
            "[w](https://example.com)") in out
    assert "See the config (`configs/a.yaml`) and [a page](../other.md)." in out
    config["repo_url"] = "https://example.org/lightsr"
    out = hook.on_page_markdown("[a](../../configs/a.yaml#L1)", page, config, None)
    assert out == "[a](https://example.org/lightsr/blob/main/configs/a.yaml#L1)"
    with pytest.raises(PluginError, match=r"nope\.txt"):
        hook.on_page_markdown("[c](../../nope.txt)", page, config, None)


# Options the pages name that are not lightsr's: the repository's scripts (checked against their source) and
# other tools.
OTHER_OPTIONS = {
    "--comparison": "scripts/model_cards.py", "--check": "scripts/model_cards.py",
    "--hardware": "scripts/bundle_weights.py", "--allow-worse": "scripts/bundle_weights.py",
    "--input": "benchmarks/latency.py", "--official": "benchmarks/latency.py", "--scales": "benchmarks/latency.py",
    "--variants": "benchmarks/latency.py", "--iters": "benchmarks/train_throughput.py",
    "--warmup": "benchmarks/train_throughput.py", "--b100": "scripts/ablation_table.py",
    "--index-url": "pip", "--nproc-per-node": "torchrun", "--strict": "mkdocs", "--head": "ray",
    "--address": "ray", "--old": "benchmarks/pipeline.py", "--workloads": "benchmarks/pipeline.py",
    "--rounds": "benchmarks/pipeline.py", "--busy": "benchmarks/pipeline.py", "--env": "benchmarks/pipeline.py",
    "--no-quality": "benchmarks/int8.py", "--profile": "benchmarks/int8.py",
    "--conditions": "benchmarks/real_photos.py",
}


def test_pages_name_only_options_that_exist() -> None:
    """An option named anywhere in the README or the docs is one of lightsr's (any subcommand), or one of a script
    of the repository that defines it, or of pip/torchrun/mkdocs: a renamed or removed option cannot linger."""
    import argparse

    from lightsr.cli import _SUBCOMMANDS, build_parser

    known = {"--help", "--version", "--verbose", "--quiet"}
    for name in _SUBCOMMANDS:
        parser = build_parser([name])
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        known |= {o for a in sub._actions for o in a.option_strings if o.startswith("--")}
    for where, tool in OTHER_OPTIONS.items():
        if "/" in tool:
            assert f'"{where}"' in (REPO_ROOT / tool).read_text(encoding="utf-8"), (where, tool)
    for page in doc_pages():
        text = "\n".join(t for _, _, t in _lines(page))
        for m in re.finditer(r"(?<![\w-])--[a-z][a-z0-9-]*", text):
            assert m.group(0) in known or m.group(0) in OTHER_OPTIONS, f"{page.name}: {m.group(0)} is no option"


# Public functions and classes that have no docstring yet (the API reference shows their signatures). The list may
# only shrink: a new public object without a docstring fails, and so does an entry that gained one.
UNDOCUMENTED: set[str] = set()
# Modules that are not part of the API reference: internals, command-line glue, the networks' own packages (the
# registry and ModelSpec are their interface).
INTERNAL = re.compile(r"^lightsr\.(_|cli|__main__|commands|allocator|seams|backends|formats|models\.(_|elan|hasn|"
                      r"lksmn)|train\.(state|distributed|logger))")


def test_api_reference_covers_every_public_module_and_object() -> None:
    griffe = pytest.importorskip("griffe", reason="the docs extra (mkdocstrings) is not installed")
    pages = sorted((REPO_ROOT / "docs" / "api").glob("*.md"))
    documented = {m for p in pages for m in re.findall(r"^::: (\S+)$", p.read_text(encoding="utf-8"), re.M)}
    package = griffe.load("lightsr", search_paths=[str(REPO_ROOT / "src")], resolve_aliases=False)

    modules: list = []

    def walk(mod) -> None:
        modules.append(mod)
        for sub in mod.members.values():
            if not sub.is_alias and sub.is_module:
                walk(sub)

    walk(package)
    missing_modules = [m.path for m in modules if m.path != "lightsr" and not INTERNAL.match(m.path)
                       and m.path not in documented]
    assert not missing_modules, f"public modules missing from docs/api/*.md: {missing_modules}"

    undocumented = set()

    def check(obj) -> None:
        for member in obj.members.values():
            if member.is_alias or not member.is_public or member.name.startswith("__"):
                continue
            if member.is_function or member.is_class:
                if not member.docstring:
                    undocumented.add(member.path)
                if member.is_class:
                    check(member)

    for path in documented - {"lightsr.train"}:
        check(package[path.removeprefix("lightsr.")])
    new = sorted(undocumented - UNDOCUMENTED)
    assert not new, f"public objects without a docstring: {new}"
    gained = sorted(UNDOCUMENTED - undocumented)
    assert not gained, f"documented now, remove from UNDOCUMENTED: {gained}"


# ------------------------------------------------------------------------------------------- the blocks run


def _env_with_src() -> dict[str, str]:
    src = str(REPO_ROOT / "src")
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=src + (os.pathsep + path if path else ""))


@pytest.fixture(scope="module")
def docs_world(tmp_path_factory):
    """The sandbox's shared parts: tiny research data, the repository-like template, the mirror, the server."""
    import docs_sandbox

    shared = require_shared("data/benchmark").parents[1]
    require_shared("weights/HASN_x4_official.pth")
    root = tmp_path_factory.mktemp("docs")
    tiny = root / "shared"
    docs_sandbox.make_shared(shared, tiny)
    docs_sandbox.make_repo(root / "template", shared, tiny)
    with docs_sandbox.weights_mirror(root / "mirror", shared) as mirror, \
            docs_sandbox.fork_server(root / "server") as bin_dir:
        env = _env_with_src()
        env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", LIGHTSR_SHARED=str(tiny),
                   LIGHTSR_HOME=str(root / "home"), LIGHTSR_HUB_MIRROR=mirror, LIGHTSR_REQUIRE_SHARED="",
                   LIGHTSR_DOCS_SERVER=(root / "server" / "socket").read_text(), COLUMNS="100", MPLBACKEND="Agg",
                   OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        yield root, env


def _run_block(block: Block, root: Path, env: dict[str, str]) -> None:
    box = root / "blocks" / re.sub(r"[^\w.-]", "_", block.where)
    shutil.copytree(root / "template", box / "repo", symlinks=True)
    (box / "shared").symlink_to(root / "shared")
    cwd = box / "repo"
    if block.lang in PYTHON:
        script = box / "block.py"
        script.write_text(block.code, encoding="utf-8")
        cmd = ["lightsr", "--docs-python", str(script)]
    else:
        cmd = ["bash", "-e", "-o", "pipefail", "-c", block.code]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    if r.returncode != 0:
        out = (r.stdout + r.stderr)[-3000:]
        pytest.fail(f"{block.where} ({block.page}) failed with exit status {r.returncode}:\n{block.code}\n{out}",
                    pytrace=False)


PAGES_WITH_RUNS = [p for p in doc_pages() if any(b.runs for b in collect(p))]


@pytest.mark.parametrize("page", PAGES_WITH_RUNS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_blocks_run(page: Path, docs_world) -> None:
    root, env = docs_world
    for block in collect(page):
        if block.runs:
            _run_block(block, root, env)


if __name__ == "__main__":
    print(summary())
