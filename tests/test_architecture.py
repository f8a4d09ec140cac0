"""The package's layers (docs/architecture.md): imports point one way only.

The import graph is read from every module's source with :mod:`ast` (function-local imports
included: they are imports too), each ``grokking_llc`` module is mapped to its layer, and the
test fails on any import of a higher layer and on any cycle between modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "grokking_llc"

# lowest first; a module may import its own layer and the ones below
LAYERS = {
    "core": 0,
    "training": 1,
    "sampling": 2,
    "science": 3,
    "figures": 4,
    "report": 4,
    "pipeline": 5,
}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(path: Path, names: set[str]) -> set[str]:
    """The package modules ``path`` imports (a ``from x import y`` counts as ``x.y`` when that is
    a module, else ``x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if sub in names:
                    found.add(sub)
                elif node.module in names:
                    found.add(node.module)
    return found


def layer(module: str) -> int | None:
    """The layer of a module; None for the package's own ``__init__`` (it imports nothing)."""
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports_of(p, set(mods)) - {m} for m, p in mods.items()}


def test_every_module_belongs_to_a_layer(graph):
    unplaced = [m for m in graph if m != "grokking_llc" and m.split(".")[1] not in LAYERS]
    assert not unplaced, f"modules outside the layers of docs/architecture.md: {unplaced}"


def test_no_import_points_up_a_layer(graph):
    upward = [
        f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
        for m, deps in graph.items()
        for d in sorted(deps)
        if layer(m) is not None and layer(d) is not None and layer(d) > layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycle(graph):
    """Depth-first search; a back edge is a cycle (reported as the path that closes it)."""
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if d not in graph:
                continue
            if state.get(d) == 1:
                cycles.append(" -> ".join([*stack[stack.index(d) :], d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)


def test_the_checks_see_what_they_test(tmp_path):
    """The graph reader itself: a module-level, a function-local and a ``from x import y``
    import of a module are all edges (on a throwaway package layout)."""
    names = {"grokking_llc.a", "grokking_llc.b", "grokking_llc.c", "grokking_llc.d"}
    src = (
        "import grokking_llc.b\n"
        "def f():\n    from grokking_llc.c import thing\n"
        "from grokking_llc import d\n"
    )
    probe = tmp_path / "a.py"
    probe.write_text(src)
    assert imports_of(probe, names) == {"grokking_llc.b", "grokking_llc.c", "grokking_llc.d"}
