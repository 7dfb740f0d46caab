"""The package's import graph points one way, and validating a spec stays off the training stack."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dvolver", "search_spaces", "service")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _module_level_imports(tree: ast.Module):
    """Imports run when the module loads: at module level, in try blocks, not under `if TYPE_CHECKING`
    and not inside functions."""

    def walk(node: ast.AST):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for child in ast.iter_child_nodes(node):
                yield from walk(child)

    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        yield from walk(node)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _module_level_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from P import m` needs the module P.m; `from P import name` needs P itself.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_the_packages():
    graph = _graph()
    assert "dvolver.spec" in graph and "dvolver.pruning.registry" in graph["dvolver.spec"]  # the graph is read
    assert _cycles(graph) == []


def test_every_pruning_method_names_a_runner_that_exists():
    from dvolver.pruning import methods, registry

    named = {name: m.runner for name, m in registry.METHODS.items()}
    assert all(isinstance(runner, str) for runner in named.values())  # built-in methods keep the registry torch-free
    assert {name: callable(getattr(methods, runner, None)) for name, runner in named.items()} == {
        name: True for name in named}


def test_validating_a_pruning_spec_imports_no_training_stack():
    code = """
import sys
from dvolver.spec import SearchSpec
spec = SearchSpec.from_dict({"space": "resnet20", "pruning": {"methods": ["joint", "aslp"], "budgets": [0.5]}})
assert spec.pruning.methods == ["joint", "aslp"]
print(sorted(m for m in ("torch_pruning", "dvolver.training", "dvolver.pruning.methods") if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
