"""docs/ARCHITECTURE.md's worked examples, run as written: a space, an algorithm, an objective, a pruning method."""

import re
from pathlib import Path

import pytest

import search_spaces
from dvolver import algorithms
from dvolver.objectives import OBJECTIVES
from dvolver.pruning import registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md"
EXAMPLE = re.compile(r"<!-- example: (\w+) -->\n```python\n(.*?)\n```", re.S)
REGISTRIES = (search_spaces.SPACES, algorithms.ALGORITHMS, OBJECTIVES, registry.METHODS)


def _examples() -> dict[str, str]:
    return dict(EXAMPLE.findall(DOC.read_text()))


def test_the_document_shows_the_four_additions():
    assert sorted(_examples()) == ["algorithm", "objective", "pruning", "space"]


@pytest.fixture
def registries():
    """The examples add to the registries, as a user trying an addition would; the suite gets them back as they were."""
    saved = [dict(r) for r in REGISTRIES]
    yield
    for registry_, before in zip(REGISTRIES, saved):
        registry_.clear()
        registry_.update(before)


@pytest.mark.parametrize("name", ["space", "algorithm", "objective", "pruning"])
def test_worked_example_runs_as_written(name, registries, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write their stores beside them
    exec(compile(_examples()[name], f"{DOC}:{name}", "exec"), {"__name__": f"architecture_{name}"})
    assert list(tmp_path.glob("*.db")), "the example ran no search"


def _load_time_imports(path: Path, package: str) -> set[str]:
    """The dvolver modules a module of `package` imports when it loads (function bodies and TYPE_CHECKING
    left out); `from .pruning import registry` counts as dvolver.pruning and dvolver.pruning.registry."""
    import ast

    def at_load(body):
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from at_load(node.orelse)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for part in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, part, []):
                        yield from at_load(child.body if isinstance(child, ast.ExceptHandler) else [child])
            else:
                yield node

    here = package.split(".")
    found = set()
    for node in at_load(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dvolver")}
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            found |= {f"{base}.{a.name}" for a in node.names} | {base}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dvolver"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_the_module_table_lists_every_module_and_imports_point_up_it():
    text = DOC.read_text()
    table = text[text.index("| module | its one idea |"):text.index("### `service/`")]
    rows = [line.split("|")[1] for line in table.splitlines()[2:] if line.startswith("|")]
    rank = {name: i for i, row in enumerate(rows) for name in re.findall(r"`([\w/*]+)`", row)}
    root = DOC.parents[1] / "dvolver"
    modules = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).with_suffix("").as_posix()
        if relative in ("__init__", "__main__", "pruning/__init__"):
            continue
        listed = relative if relative in rank else "pruning/*" if relative.startswith("pruning/") else None
        assert listed is not None, f"docs/ARCHITECTURE.md's module table does not list dvolver/{relative}.py"
        modules["dvolver." + relative.replace("/", ".")] = (path, rank[listed])
    checked = 0
    for name, (path, own) in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for imported in _load_time_imports(path, package):
            if imported in modules:
                checked += 1
                assert modules[imported][1] <= own, (f"{name} (row {own}) imports {imported} (row "
                                                     f"{modules[imported][1]}), which the table lists below it")
    assert checked > 100  # the imports were found, not silently missed
