"""A search with early stopping, killed with SIGKILL at a rung boundary or in the middle of a rung and
resumed, ends with the uninterrupted search's candidates, rungs and front; and it is the same search on
one worker or two."""

import json
import signal

import pytest

from dvolver.store import Store
from tests.engine.test_crash_resume import _dvolver, _trained
from tests.helpers import TINY

pytestmark = pytest.mark.slow

SPEC = TINY | {"training": {"epochs": 3, "train_limit": 300, "latency_repeats": 1}, "evaluations": 8,
               "population": 4, "batch": 2, "seed": 5}


def _table(db: str) -> list[tuple]:
    return [(c.key, c.status, c.objectives, c.metrics.get("rungs")) for c in Store(db).candidates(1)]


def _search(folder, db, log, method, crash=None, executor=("--executor", "inline")):
    spec = folder / "spec.json"
    spec.write_text(json.dumps(SPEC | {"early_stopping": {"method": method, "min_epochs": 1, "eta": 3}}))
    return _dvolver(["search", "--spec", str(spec), "--db", db, *executor, "--plot", str(folder / "f.png")], log, crash)


@pytest.fixture(scope="module", params=["sha", "asha"])
def straight(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"straight-{request.param}")
    db = f"sqlite:///{folder / 'es.db'}"
    done = _search(folder, db, folder / "trained.log", request.param)
    assert done.returncode == 0, done.stderr
    table = _table(db)
    assert any(status == "stopped" for _, status, *_ in table)
    return {"method": request.param, "table": table, "trained": _trained(folder / "trained.log")}


@pytest.mark.parametrize("crash", ["rung:3", "evaluate:5"], ids=["at-a-rung-boundary", "mid-rung"])
def test_a_killed_early_stopped_search_resumes_to_the_uninterrupted_result(straight, tmp_path, crash):
    db = f"sqlite:///{tmp_path / 'es.db'}"
    killed = _search(tmp_path, db, tmp_path / "killed.log", straight["method"], crash)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    held = Store(db).candidates(1)
    assert any(c.status == "pending" and c.metrics.get("rungs") for c in held)  # died between two rungs
    done = _dvolver(["resume", "1", "--db", db, "--executor", "inline", "--plot", str(tmp_path / "r.png")],
                    tmp_path / "resumed.log")
    assert done.returncode == 0, done.stderr
    assert _table(db) == straight["table"]
    # Only what was in flight when it died is trained again: the rungs it had are answered from the store.
    assert len(_trained(tmp_path / "killed.log")) + len(_trained(tmp_path / "resumed.log")) <= len(
        straight["trained"]) + 1


def test_two_workers_give_the_same_early_stopped_search(straight, tmp_path):
    db = f"sqlite:///{tmp_path / 'two.db'}"
    done = _search(tmp_path, db, tmp_path / "two.log", straight["method"],
                   executor=("--executor", "processes", "--workers", "2"))
    assert done.returncode == 0, done.stderr
    assert _table(db) == straight["table"]


def test_a_resume_killed_again_keeps_the_rungs_the_store_holds(straight, tmp_path):
    db = f"sqlite:///{tmp_path / 'es.db'}"
    killed = _search(tmp_path, db, tmp_path / "killed.log", straight["method"], "evaluate:5")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    held = {c.key: c.metrics["rungs"] for c in Store(db).candidates(1) if c.metrics.get("rungs")}
    assert held
    again = _dvolver(["resume", "1", "--db", db, "--executor", "inline", "--plot", str(tmp_path / "r.png")],
                     tmp_path / "again.log", "evaluate:1")  # killed as the resume trains its first rung
    assert again.returncode == -signal.SIGKILL, again.stderr
    kept = {c.key: c.metrics.get("rungs") for c in Store(db).candidates(1) if c.key in held}
    assert all(kept[k][: len(rungs)] == rungs for k, rungs in held.items())  # no row went back to rung 0
    done = _dvolver(["resume", "1", "--db", db, "--executor", "inline", "--plot", str(tmp_path / "r.png")],
                    tmp_path / "resumed.log")
    assert done.returncode == 0, done.stderr
    assert _table(db) == straight["table"]
