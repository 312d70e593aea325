"""The package layout's two promises, checked on the source (no imports executed):

- the autoscaler (observe / decide / act) imports nothing Kubernetes- or local-mode-specific, so the decision
  the simulator replays is the same code the operator and local mode run;
- no module imports itself back through others (import cycles), counting imports under TYPE_CHECKING too,
  since they tie the modules together just the same for a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"sloserve_operator": ROOT / "operator" / "sloserve_operator",
            "sloserve_runtime": ROOT / "runtime" / "sloserve_runtime"}
AUTOSCALER_MAY_NOT_IMPORT = ("sloserve_operator.kube", "sloserve_operator.local", "sloserve_operator.simulate",
                             "sloserve_operator.commands", "sloserve_operator.cli", "kubernetes", "kopf")


def module_name(package: str, path: Path) -> str:
    parts = [package, *path.relative_to(PACKAGES[package]).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, name: str) -> set[str]:
    """Every module `path` imports, as absolute names (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def source_modules() -> dict[str, Path]:
    return {module_name(package, path): path
            for package, folder in PACKAGES.items() for path in sorted(folder.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    return {name: {dep for dep in imported_modules(path, name) if dep in modules and dep != name}
            for name, path in modules.items()}


def test_the_autoscaler_imports_nothing_from_kube_local_or_the_simulator() -> None:
    offending = []
    for name, path in source_modules().items():
        if not name.startswith("sloserve_operator.autoscaler"):
            continue
        for dep in imported_modules(path, name):
            if dep.startswith(AUTOSCALER_MAY_NOT_IMPORT):
                offending.append(f"{name} imports {dep}")
    assert not offending, "\n".join(offending)


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The check above must be able to fail: a relative import of kube/ from decide/ is found."""
    module = tmp_path / "bad.py"
    module.write_text("from ...kube import render\n")
    found = imported_modules(module, "sloserve_operator.autoscaler.decide.bad")
    assert "sloserve_operator.kube.render" in found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path, or None (depth-first search, colouring visited modules)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    graph = import_graph()
    # A package's __init__ is imported by each of its modules implicitly; count only explicit edges.
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
    ({"a": {"b"}, "b": set()}, None),
])
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(graph) == expected
