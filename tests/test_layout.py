"""The layout rules of docs/ARCHITECTURE.md, checked on the source: no import cycles (lazy imports
count), lower rooms never import upper ones, weight orientation decided in one module, and rooms
small enough to read."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hf_sparc"
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> hf_sparc modules it imports, at module level or inside functions alike."""
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base]).rstrip(".")
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return _modules()


def test_no_import_cycles_lazy_imports_included(modules):
    graph = _imports(modules)
    # the package root imports everything (public API); an edge back to it is a cycle by definition
    assert not _cycles({k: v - {"hf_sparc"} for k, v in graph.items() if k != "hf_sparc"})
    back_to_root = sorted(k for k, v in graph.items() if "hf_sparc" in v and not k.startswith("hf_sparc.cli"))
    assert not back_to_root, f"library modules importing the package root: {back_to_root}"


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        ("hf_sparc.tuner", "hf_sparc.workflows"),
        ("hf_sparc.metrics", "hf_sparc.workflows"),
        ("hf_sparc.behaviors", "hf_sparc.workflows"),
        ("hf_sparc.attribution", "hf_sparc.workflows"),
        ("hf_sparc.attribution", "hf_sparc.tuner"),
        ("hf_sparc.architectures", "hf_sparc.attribution"),
        ("hf_sparc.data", "hf_sparc.attribution"),
        ("hf_sparc.reports", "hf_sparc.workflows"),
        ("hf_sparc.workflows", "hf_sparc.cli"),
    ],
)
def test_lower_rooms_never_import_upper_ones(modules, lower, upper):
    graph = _imports(modules)
    edges = [
        f"{source} -> {target}"
        for source, targets in graph.items()
        if source == lower or source.startswith(lower + ".")
        for target in targets
        if target == upper or target.startswith(upper + ".")
    ]
    assert not edges


def test_weight_orientation_is_decided_in_geometry_only(modules):
    """No code outside architectures/geometry.py names ``Conv1D``, a spec's orientation flag or
    PEFT's ``get_base_layer`` (docstrings and messages may mention them)."""
    names = {"Conv1D", "transposed_weights", "get_base_layer"}
    outside = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
        for name, path in modules.items()
        if name != "hf_sparc.architectures.geometry"
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.Name) and node.id in names)
        or (isinstance(node, ast.Attribute) and node.attr in names)
        or (isinstance(node, ast.alias) and node.name in names)
        or (isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) in names)
        or (isinstance(node, ast.keyword) and node.arg in names)
    ]
    assert not outside


def test_rooms_are_small(modules):
    long_modules = [
        f"{name}: {n}"
        for name, path in modules.items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    long_functions = [
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1}"
        for name, path in modules.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long_modules and not long_functions, (long_modules, long_functions)


def test_the_checks_see_a_cycle_when_there_is_one():
    """Guards the cycle test: it must notice a two-module loop and a lazy import."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert not _cycles({"a": {"b"}, "b": set()})
