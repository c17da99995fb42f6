"""The package's structure, read from its source: import graph, where argparse lives, who names an architecture.

Static checks over ``src/lightsr`` (every import statement counts, function-level ones included; imports under
``if TYPE_CHECKING:`` do not, since they never run):

* the import graph has no cycle, and no module imports the package face (``lightsr/__init__.py``);
* no import runs upward: with each sub-package drawn as one room (``models/``, ``runtimes/``, ``train/``,
  ``commands/``) and ``TYPE_CHECKING`` imports counted too (a reader follows them), the rooms import each other in
  no loop — a module never imports a room that imports it back;
* generic code never dispatches on a runtime's name: outside ``runtimes/`` no comparison involves a registered
  runtime's name or a variable called ``backend``/``runtime`` (it asks :data:`lightsr.runtimes.RUNTIMES`);
* its longest chain of imports is at most :data:`MAX_FLOORS` modules;
* only ``commands/`` and ``cli.py`` import argparse;
* generic modules (everything outside ``models/``, ``commands/``, ``cli.py`` and ``bundled.py``, which names
  the default network) never name a registered architecture or its network class: they read the spec.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import lightsr
from lightsr.models.registry import specs

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "lightsr"
# The tallest chain: command → web app → figures → upscaler → the resolver of names (sources) → checkpoints →
# registry → an architecture's package → its network → its inference form → the networks' base (the web app is
# the one face over another library module; the resolver is the floor every name goes through).
MAX_FLOORS = 11


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path, type_checking: bool = False) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import that runs (``names``: what a ``from`` import takes); with
    ``type_checking`` those under ``if TYPE_CHECKING:`` too."""
    out: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child) and not type_checking:
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name, []) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                out.append((child.module, [a.name for a in child.names]))
            visit(child)

    visit(ast.parse(path.read_text()))
    return out


@functools.cache
def graph(type_checking: bool = False) -> dict[str, set[str]]:
    """Module → lightsr modules it imports (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    edges: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = set()
        for module, names in _imports(path, type_checking):
            if module != "lightsr" and not module.startswith("lightsr."):
                continue
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
            if subs:
                targets.update(subs)
            if not subs or len(subs) < len(names):
                targets.add(module)
        edges[name] = {t for t in targets if t != name}
    return edges


def _cycle(g: dict[str, set[str]] | None = None) -> list[str] | None:
    g, state, stack = graph() if g is None else g, {}, []

    def dfs(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(g.get(v, ())):
            if state.get(w) == 1:
                return [*stack[stack.index(w):], w]
            if w not in state and (found := dfs(w)):
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(g):
        if v not in state and (found := dfs(v)):
            return found
    return None


def test_import_graph_has_no_cycle() -> None:
    assert _cycle() is None, " → ".join(_cycle() or [])


def _room(module: str) -> str:
    """The room a module stands in: its sub-package of ``lightsr`` (a folder is one room), else itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else module


def rooms() -> dict[str, set[str]]:
    """Room → rooms it imports, ``TYPE_CHECKING`` imports included; the package face draws no arrow."""
    out: dict[str, set[str]] = {}
    for module, targets in graph(type_checking=True).items():
        if module == "lightsr":
            continue
        out.setdefault(_room(module), set()).update(_room(t) for t in targets if t != "lightsr")
    return {room: {t for t in targets if t != room} for room, targets in out.items()}


def test_no_import_runs_upward() -> None:
    loop = _cycle(rooms())
    assert loop is None, " → ".join(loop or [])


def test_the_room_check_sees_a_loop_between_a_folder_and_a_module() -> None:
    """The check itself: the upward arrow the house once had (data.py importing the trainer's schema, which
    the trainer's folder imports back) is a loop of rooms."""
    g = {room: set(targets) for room, targets in rooms().items()}
    g["lightsr.data"].add("lightsr.train")
    assert "lightsr.train" in (_cycle(g) or [])
    assert _room("lightsr.train.config") == "lightsr.train" and _room("lightsr.data") == "lightsr.data"
    assert _room("lightsr.runtimes") == "lightsr.runtimes"


def _runtime_names() -> set[str]:
    from lightsr.runtimes import RUNTIMES

    return set(RUNTIMES)


def _dispatches_on_a_runtime(node: ast.Compare) -> bool:
    if not all(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
        return False  # `backend is None` asks whether one was named, not which
    sides = [node.left, *node.comparators]
    named = {s.value for s in sides if isinstance(s, ast.Constant) and isinstance(s.value, str)}
    words = {s.id for s in sides if isinstance(s, ast.Name)} | {s.attr for s in sides if isinstance(s, ast.Attribute)}
    return bool(named & _runtime_names()) or bool(words & {"backend", "runtime"})


def test_generic_code_never_compares_runtime_names() -> None:
    found = [f"{p.relative_to(SRC)}:{node.lineno}" for m, p in MODULES.items() if not m.startswith("lightsr.runtimes")
             for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.Compare)
             and _dispatches_on_a_runtime(node)]
    assert found == []
    # The check itself, on the kind of line it exists to catch.
    assert _dispatches_on_a_runtime(ast.parse('backend == "openvino"').body[0].value)
    assert _dispatches_on_a_runtime(ast.parse('self.backend != x').body[0].value)
    assert not _dispatches_on_a_runtime(ast.parse('device.type == "cuda"').body[0].value)


def test_no_module_imports_the_package_face() -> None:
    offenders = sorted(m for m, targets in graph().items() if "lightsr" in targets and m not in ("lightsr",
                                                                                              "lightsr.__main__"))
    assert not offenders


def test_the_import_tower_is_low() -> None:
    g = graph()

    @functools.cache
    def height(v: str) -> int:
        return 1 + max((height(w) for w in g.get(v, ()) if w != "lightsr"), default=0)

    tallest = max(MODULES, key=height)
    assert height(tallest) <= MAX_FLOORS, tallest


def test_only_the_command_layer_imports_argparse() -> None:
    users = sorted(m for m, p in MODULES.items() if any(mod == "argparse" for mod, _ in _imports(p)))
    assert users and all(m == "lightsr.cli" or m.startswith("lightsr.commands") for m in users), users


def test_generic_modules_name_no_architecture() -> None:
    words = {s.name for s in specs()} | {s.family for s in specs()} | {s.network.__name__ for s in specs()}
    # Bounded by anything but letters and digits: "_" joins names too (a weights name such as "<arch>_x4").
    alternatives = "|".join(sorted(map(re.escape, words), key=len, reverse=True))
    rx = re.compile(r"(?<![A-Za-z0-9])(" + alternatives + r")(?![A-Za-z0-9])", re.IGNORECASE)
    generic = [p for m, p in MODULES.items()
               if not m.startswith(("lightsr.models", "lightsr.commands")) and m not in ("lightsr.cli",
                                                                                           "lightsr.bundled")]
    found = {str(p.relative_to(SRC)): sorted({m.group(0) for m in rx.finditer(p.read_text())}) for p in generic}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_package_face_is_light() -> None:
    """``import lightsr`` loads no submodule that pulls in torch: the face imports only the version."""
    face = {m for m, _ in _imports(PACKAGE / "__init__.py") if m.startswith("lightsr")}
    assert face == {"lightsr._version"}
    assert lightsr.__version__
