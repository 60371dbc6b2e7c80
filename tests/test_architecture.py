"""The package's shape, checked: no import cycles between dnncost modules, every subpackage on a
floor of its own with imports pointing only down (cli -> commands -> reporting -> study -> whatif
-> prediction -> distributed -> training -> measuring -> counting -> models -> core), and no
printing outside commands/ and the renderers.

Imports inside functions and under ``if TYPE_CHECKING:`` are counted like any other (so none can
hide a cycle or an arrow up); those inside functions exist only to keep heavy dependencies (torch,
matplotlib) off the CLI's start-up and off `import dnncost`."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dnncost"

# The floor of each top-level part, bottom up; a module may import only from its own part or a
# lower floor. Every part has a floor of its own, so two parts can never import each other.
FLOORS = ("core", "models", "counting", "measuring", "training", "distributed", "prediction",
          "whatif", "study", "reporting", "commands", "cli", "__main__", "__init__")
LAYERS = {part: floor for floor, part in enumerate(FLOORS)}
PRINTING_ALLOWED = ("commands", "reporting", "cli", "__main__")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(SRC.rglob("*.py"))}


def _imports(tree: ast.Module, name: str) -> list[tuple[str, bool]]:
    """(imported dnncost module, imported at module level?) for every import in ``tree``."""
    found: list[tuple[str, bool]] = []
    top_level = {id(n) for n in tree.body}

    def visit(node: ast.AST, at_top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            child_top = at_top and (id(child) in top_level or isinstance(node, (ast.If, ast.Try)))
            if isinstance(child, ast.Import):
                found.extend((a.name, child_top) for a in child.names if a.name.startswith("dnncost"))
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0 \
                    and child.module.startswith("dnncost"):
                for a in child.names:  # `from dnncost.x import y` may import module dnncost.x.y
                    found.append((f"{child.module}.{a.name}", child_top))
            visit(child, child_top)

    visit(tree, True)
    return found


def _resolve(target: str, known: set[str]) -> str | None:
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, tree in modules.items():
        for target, _ in _imports(tree, name):
            resolved = _resolve(target, known)
            if resolved and resolved != name and resolved != "dnncost":
                graph[name].add(resolved)
    return graph


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module on a higher floor than the importer's."""
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if LAYERS[_part(b)] > LAYERS[_part(a)])


def test_every_part_has_a_floor() -> None:
    assert {_part(m) for m in _graph()} <= set(LAYERS), "a package without a floor in FLOORS"


def test_arrows_point_down_the_pipeline() -> None:
    wrong = _upward(_graph())
    assert not wrong, "imports from a higher layer: " + "; ".join(wrong)


def test_a_planted_upward_import_is_caught() -> None:
    """The check fails on an arrow up, including one under TYPE_CHECKING or inside a function."""
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import dnncost.study.store\n"
                     "def f():\n    from dnncost.reporting.plots import png_bytes\n")
    graph = _graph()
    known = set(graph)
    planted = {_resolve(t, known) for t, _ in _imports(tree, "dnncost.core.errors")} - {None}
    assert planted == {"dnncost.study.store", "dnncost.reporting.plots"}
    graph["dnncost.core.errors"] = graph["dnncost.core.errors"] | {str(m) for m in planted}
    assert _upward(graph) == ["dnncost.core.errors -> dnncost.reporting.plots",
                              "dnncost.core.errors -> dnncost.study.store"]


def test_no_print_outside_commands_and_renderers() -> None:
    printing = [f"{name}:{node.lineno}" for name, tree in _modules().items()
                if _part(name) not in PRINTING_ALLOWED
                for node in ast.walk(tree)
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "print"]
    assert not printing, "print() in library modules: " + ", ".join(printing)


def test_the_checks_see_imports_and_a_print() -> None:
    """The walkers above find what they look for (so the checks can fail)."""
    tree = ast.parse("import dnncost.b\ndef f():\n    from dnncost.c import x\n    print(x)\n"
                     "if TYPE_CHECKING:\n    import dnncost.d\n")
    assert _imports(tree, "dnncost.a") == [("dnncost.b", True), ("dnncost.c.x", False),
                                           ("dnncost.d", True)]
    assert any(isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print" for n in ast.walk(tree))


def test_the_command_line_starts_without_torch() -> None:
    """Building the parser (every command's flags and help) imports no torch, numpy or scipy:
    `dnncost --help` and a bad flag answer at once."""
    import subprocess
    import sys

    code = ("import sys; from dnncost.cli import build_parser; build_parser(); "
            "heavy = [m for m in ('torch', 'numpy', 'scipy', 'matplotlib') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


PACKAGES = ("commands", "reporting", "study", "whatif", "prediction", "distributed", "training",
            "measuring", "counting", "models", "core")  # the README's table, top floor first
README = SRC.parents[1] / "README.md"


def import_table() -> str:
    """The package-level import graph as the README shows it: one row per package (top floor
    first), a mark under each package it imports; every mark lies right of the diagonal."""
    uses: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for a, targets in _graph().items():
        for b in targets:
            if _part(a) in uses and _part(b) != _part(a) and _part(b) in uses:
                uses[_part(a)].add(_part(b))
    head = "| imports → | " + " | ".join(PACKAGES) + " |"
    rule = "|---|" + "---|" * len(PACKAGES)
    rows = [f"| **{a}** | " + " | ".join("●" if b in uses[a] else ("·" if a == b else "")
                                          for b in PACKAGES) + " |" for a in PACKAGES]
    return "\n".join([head, rule, *rows])


def test_the_readme_shows_the_import_graph_as_it_is() -> None:
    """The README's table of which package imports which is the real graph (regenerate with
    `python tests/test_architecture.py`), and no package imports one above it."""
    assert list(PACKAGES) == [f for f in reversed(FLOORS) if f in PACKAGES]  # top floor first
    assert import_table() in README.read_text(), "README's import table is stale: " \
        "run `python tests/test_architecture.py` and paste its output"
    for i, a in enumerate(PACKAGES):
        row = import_table().splitlines()[2 + i].split("|")[2:-1]
        assert all(mark.strip() != "●" for mark in row[:i + 1]), f"{a} imports a package above it"


if __name__ == "__main__":
    print(import_table())
