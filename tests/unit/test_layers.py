"""Imports run one way (docs/design.md §12): no import cycle and no import of a higher layer.

Every import counts, the ones inside functions too: an import moved into a function still ties the
two modules together, it only hides the cycle until the function runs.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.settings import REPO_ROOT

# Lowest first. A module may import its own layer and the layers below it, never one above.
LAYERS = (
    ("transforms",),  # the pure core
    ("schemas",),  # the shapes of what comes from outside, and the settings
    ("pipelines",),  # the jobs and their adapters (pipelines/io)
    ("api",),  # the services: gateway, query service, SDK
    ("infra",),  # starting the local services
    ("runners",),  # what the commands share: runners.deployment, argtypes, sending
    ("runners.commands",),  # one module per subcommand
    ("runners.cli",),  # the entry point
)
PACKAGES = ("transforms", "schemas", "pipelines", "api", "infra", "runners")


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    return rank


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imported(path: Path, module: str, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(project module imported, line) for every import statement in the file, at any depth."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import module` imports the module; `from module import name` the module
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                yield name, node.lineno


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    known = project_modules()
    edges: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        edges[module] = {}
        for target, line in imported(path, module, known):
            edges[module].setdefault(target, line)
    return edges


def test_every_module_has_a_layer(graph: dict[str, dict[str, int]]) -> None:
    assert graph, "no project module found"
    assert [m for m in graph if layer_of(m) < 0] == []


def test_no_module_imports_a_higher_layer(graph: dict[str, dict[str, int]]) -> None:
    upward = [
        f"{module} (line {line}) imports {target}: layer {LAYERS[layer_of(target)]} is above {LAYERS[layer_of(module)]}"
        for module, targets in graph.items()
        for target, line in targets.items()
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle(graph: dict[str, dict[str, int]]) -> None:
    cycles = [
        " -> ".join(f"{m} (line {graph[m][n]})" for m, n in zip(c, [*c[1:], c[0]], strict=True) if n in graph[m])
        or ", ".join(c)
        for c in strongly_connected(graph)
    ]
    assert cycles == []


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    made_up = {"transforms.a": {"pipelines.b": 3}, "pipelines.b": {"transforms.a": 7}}
    assert strongly_connected(made_up) == [["pipelines.b", "transforms.a"]]
    assert layer_of("pipelines.b") > layer_of("transforms.a")
    assert layer_of("runners.commands.ingest") > layer_of("runners.deployment") > layer_of("infra.stack")


CHEAP = ("transforms", "schemas")  # the core and the shapes: pure Python, nothing worth deferring


def test_imports_inside_functions_only_defer_what_is_heavy() -> None:
    """An import inside a function is for a heavy or optional dependency (PyFlink, Beam, boto3, chDB...).

    The standard library, the core and the schemas load in milliseconds: deferring them hides
    what a module depends on and buys nothing.
    """
    deferred = []
    for module, path in project_modules().items():
        if ".native" in module:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and not inner.level:
                    name = inner.module or ""
                elif isinstance(inner, ast.Import):
                    name = inner.names[0].name
                else:
                    continue
                top = name.split(".")[0]
                if top in CHEAP or top in sys.stdlib_module_names:
                    deferred.append(f"{module} line {inner.lineno}: {name}")
    assert sorted(set(deferred)) == [], "\n".join(sorted(set(deferred)))
