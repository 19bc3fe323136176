"""The layering of the code, checked on its source: ``core`` imports no Holoscan, no application module and
no module of its own in a cycle (imports inside functions count: a deferred import is still a dependency)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

CORE = Path(__file__).resolve().parents[1] / "core"


def core_imports() -> dict[str, set[str]]:
    """``{module: core modules it imports}`` for every module of ``core`` (names like ``core.volume``)."""
    modules = {f"core.{p.stem}": p for p in CORE.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                deps.add(node.module)
                if node.module == "core":  # from core import codes, provenance
                    deps |= {f"core.{a.name}" for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path that ends where it starts, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_cycle_and_only_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_core_modules() -> None:
    graph = core_imports()
    assert "core.dicom_header" in graph and "core.series_selection" in graph
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_dicom_header_is_a_leaf_and_selection_does_not_load_volumes() -> None:
    graph = core_imports()
    assert graph["core.dicom_header"] == set()
    assert "core.dicom_input" not in graph["core.series_selection"]
    assert "core.series_selection" not in graph["core.dicom_input"]


def test_core_never_imports_holoscan_or_the_application() -> None:
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                assert n.split(".")[0] not in ("holoscan", "app", "operators"), f"{path.name} imports {n}"
                assert not n.startswith("monai.deploy"), f"{path.name} imports {n}"


def logic_lines(path: Path) -> int:
    """Source lines inside function bodies (docstrings left out) of one module."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]
            lines |= {n.lineno for b in body for n in ast.walk(b) if hasattr(n, "lineno")}
    return len(lines)


def test_operators_are_thin_shells() -> None:
    """Each operator module holds at most about 40 lines of logic: the rules live in core (unit-tested)."""
    operators = CORE.parent / "operators"
    sizes = {p.name: logic_lines(p) for p in operators.glob("*.py")}
    assert len(sizes) >= 13
    assert {name: n for name, n in sizes.items() if n > 40} == {}
