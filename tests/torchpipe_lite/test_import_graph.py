"""torchpipe_lite imports one way: no module or subpackage cycle, however lazily it is imported.

The graph is read from the source (ast), so an import inside a function or behind a module
``__getattr__`` counts as much as one at the top of a file. Importing ``a.b.c`` runs the
``__init__`` of ``a.b`` too, so that package is an edge as well, except for the packages above
the importing module itself (they are already being imported).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def package_modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``root``, by dotted name (a package by its own)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The dotted names of the modules ``module`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: None if is_package else -1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target
            # ``from package import submodule`` imports the submodule.
            yield from (f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of ``package`` that importing it runs (see the module docstring)."""
    modules = package_modules(root, package)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        runs = set()
        for name in imported_names(module, path, modules):
            parts = name.split(".")
            for end in range(2, len(parts) + 1):  # the package itself is always running
                step = ".".join(parts[:end])
                if step in modules and not f"{module}.".startswith(f"{step}."):
                    runs.add(step)
        runs.discard(module)
        graph[module] = runs
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def subpackage_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between the package's first-level parts (``torchpipe_lite.config``...)."""

    def part(module: str) -> str:
        return ".".join(module.split(".")[:2])

    collapsed: dict[str, set[str]] = {}
    for module, targets in graph.items():
        collapsed.setdefault(part(module), set()).update(
            part(t) for t in targets if part(t) != part(module)
        )
    return collapsed


def test_no_module_of_the_library_is_part_of_an_import_cycle():
    assert cycles(import_graph(REPO, "torchpipe_lite")) == []


def test_no_two_parts_of_the_library_import_each_other():
    """config and backends, in particular: their shared value types sit in ``values``."""
    graph = subpackage_graph(import_graph(REPO, "torchpipe_lite"))
    parts_only = {k: v - {"torchpipe_lite"} for k, v in graph.items() if k != "torchpipe_lite"}
    assert cycles(parts_only) == []
    assert "torchpipe_lite.config" not in graph["torchpipe_lite.backends"]


def test_the_walker_finds_a_cycle_hidden_in_a_function_and_through_a_package(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .inner import thing\n")
    (package / "sub" / "inner.py").write_text("thing = 1\n")
    (package / "a.py").write_text("from .sub.inner import thing\n")
    (package / "lazy.py").write_text("def __getattr__(name):\n    from . import a\n")
    (package / "sub" / "other.py").write_text("from .. import lazy\n")
    (package / "sub" / "inner.py").write_text("from . import other\n")
    graph = import_graph(tmp_path, "pkg")
    assert "pkg.sub" in graph["pkg.a"]  # importing pkg.sub.inner runs pkg/sub/__init__
    assert "pkg.sub" not in graph["pkg.sub.inner"]  # its own package is already running
    assert cycles(graph) == [["pkg.a", "pkg.lazy", "pkg.sub", "pkg.sub.inner", "pkg.sub.other"]]
