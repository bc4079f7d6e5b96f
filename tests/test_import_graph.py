"""The package's import graph: no circles, and the lower layers never reach up.

Every ``import`` counts, the ones inside functions too (a lazy import only hides a circle);
imports under ``if TYPE_CHECKING:`` do not run and are left out.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hf_lines"

# layer -> the layers it may never import (the data flows core -> io -> pipeline -> publish)
FORBIDDEN = {
    "core": {"io", "pipeline", "publish", "adapters", "soups", "eval", "cli", "demo"},
    "io": {"pipeline", "publish", "adapters", "soups", "eval", "cli", "demo"},
    "publish": {"pipeline", "soups", "eval", "cli", "demo"},
    "adapters": {"pipeline", "soups", "eval", "cli", "demo"},
    "pipeline": {"soups", "eval", "cli", "demo"},
}
# The one upward edge allowed: LayerMap.from_pretrained reads names and config.json (a lazy import).
ALLOWED = {("hf_lines.core.layers.map", "hf_lines.io.checkpoint")}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in modules else base)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m in modules and m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circles(graph):
    assert _cycles(graph) == []


def test_cycle_finder_sees_a_lazy_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_lower_layers_never_import_upper_ones(graph):
    wrong = sorted(
        f"{m} imports {d}"
        for m, deps in graph.items()
        for d in deps
        if _layer(d) in FORBIDDEN.get(_layer(m), set()) and (m, d) not in ALLOWED
    )
    assert wrong == []


def test_nothing_outside_a_module_calls_its_private_names():
    """``from x import _name`` across modules couples one module to another's internals."""
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            own_package = ".".join(path.relative_to(PACKAGE.parent).parent.parts)  # a package's own extension module
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hf_lines") and node.module != own_package:
                wrong += [f"{path.relative_to(PACKAGE.parent)}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert wrong == []

