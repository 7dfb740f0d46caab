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
