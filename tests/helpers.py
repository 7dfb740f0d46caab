"""What several test modules share that is not a fixture: the data they look for, the tiny proxy
spec, the live service. Imported as `from tests.helpers import ...`; the fixtures are in conftest.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.live import free_port, serving, wait_up

__all__ = ["CHROMIUM", "CIFAR_NPZ", "NB201_TABLE", "REPO", "SHARED_DATA", "TINY", "data_file", "free_port", "keyer",
           "live_service", "missing", "table_spec", "wait_up"]

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the project; DVOLVER_TEST_DATA points elsewhere (tests/test_ci_switches.py uses it).
SHARED_DATA = Path(os.environ.get("DVOLVER_TEST_DATA") or REPO.parent / "shared" / "data")
NB201_TABLE = SHARED_DATA / "nb201_cifar10.csv"
CIFAR_NPZ = SHARED_DATA / "cifar10_subset.npz"
CHROMIUM = Path(os.environ.get("DVOLVER_TEST_CHROMIUM", "/usr/bin/chromium"))

# A tiny proxy: enough to exercise every code path in well under a second per candidate.
TINY = {
    "space_options": {"filters": 4, "cells_per_stage": 1},
    "training": {"epochs": 1, "train_limit": 300},
    "population": 4,
    "evaluations": 8,
}


def missing(switch: str, what: str) -> None:
    """Skips a test that needs ``what``, or fails it where ``switch`` is 1: CI sets DVOLVER_REQUIRE_DATA,
    DVOLVER_REQUIRE_BROWSER and DVOLVER_REQUIRE_POSTGRES, so nothing a user has is skipped there unnoticed."""
    if os.environ.get(switch) == "1":
        pytest.fail(f"{switch}=1 but {what}", pytrace=False)
    pytest.skip(what)


def data_file(path: Path) -> Path:
    if not path.is_file():
        missing("DVOLVER_REQUIRE_DATA", f"{path.name} not found at {path} (../shared/data beside the project)")
    return path


def table_spec(table: Path, **overrides: object) -> dict:
    """A NAS-Bench-201 table search: real results, looked up in milliseconds."""
    return {"space": "nb201", "space_options": {"table": str(table)}, "objectives": ["acc", "flops"],
            "population": 10, "evaluations": 40} | overrides


def keyer(space):
    """What the engine keys a genome by: its space and canonical form (duplicates share a key)."""
    from search_spaces import genome_key

    return lambda g: genome_key(space.name, space.canonical(g))


@contextmanager
def live_service(settings) -> Iterator[tuple[str, object]]:
    """The real service on a loopback port (uvicorn in a thread); yields (base URL, app)."""
    from service.app import create_app

    app = create_app(settings)
    with serving(app) as url:
        yield url, app
