"""Kill -9 the CLI search at five moments, resume it, and get exactly the uninterrupted run's search.

Each run is a real `dvolver search` / `dvolver resume` process (tests/engine/crash_driver.py), killed by
SIGKILL; the store is a real SQLite file, and then a real PostgreSQL database (a killed process's
open transaction dies with its connection there). Trainings are counted from the processes' own logs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dvolver.store import Store
from tests.helpers import TINY

pytestmark = pytest.mark.slow

DRIVER = Path(__file__).with_name("crash_driver.py")
SPEC = TINY | {"evaluations": 12, "population": 4, "batch": 4, "seed": 3}  # three generations of four
BUDGET = SPEC["evaluations"]


def _dvolver(args: list[str], log: Path, crash: str | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"TRAINING_LOG": str(log), "OMP_NUM_THREADS": "1"}
    env.pop("CRASH_AT", None)
    if crash:
        env["CRASH_AT"] = crash
    return subprocess.run([sys.executable, str(DRIVER), *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


def _new_store(backend: str, request, folder: Path) -> str:
    """The URL of a fresh store: a SQLite file in `folder`, or a new database on the throwaway PostgreSQL."""
    if backend == "sqlite":
        return f"sqlite:///{folder / 'dvolver.db'}"
    return request.getfixturevalue("postgres").create_database()


def _sqlite_file(db: str) -> Path | None:
    return Path(db.removeprefix("sqlite:///")) if db.startswith("sqlite:///") else None


def _search(folder: Path, db: str, log: Path, crash: str | None = None, ray_address: str | None = None
            ) -> subprocess.CompletedProcess:
    spec = folder / "spec.json"
    spec.write_text(json.dumps(SPEC))
    where = ["--executor", "ray", "--ray-address", ray_address] if ray_address else ["--executor", "inline"]
    return _dvolver(["search", "--spec", str(spec), "--db", db, *where, "--plot", str(folder / "front.png")],
                    log, crash)


def _resume(db: str, folder: Path, log: Path, crash: str | None = None) -> subprocess.CompletedProcess:
    return _dvolver(["resume", "1", "--db", db, "--executor", "inline", "--plot", str(folder / "resumed.png")],
                    log, crash)


def _table(db: str) -> list[tuple]:
    """What a user sees of the candidates: id order, key, genome, status and objective values."""
    return [(c.key, c.genome, c.status, c.objectives) for c in Store(db).candidates(1)]


def _trained(log: Path) -> list[tuple[int, ...]]:
    return [tuple(json.loads(line)) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture(scope="module")
def straight(backend, request, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("straight")
    db, log = _new_store(backend, request, folder), folder / "trained.log"
    done = _search(folder, db, log)
    assert done.returncode == 0, done.stderr
    store = Store(db)
    assert store.get_search(1).status == "finished"
    return {"db": db, "table": _table(db), "front": _front(db), "trained": _trained(log)}


def _front(db: str) -> list[str]:
    from dvolver.engine import result

    return sorted(c.key for c in result(Store(db), 1).front)


@pytest.mark.parametrize("crashes", [
    pytest.param(["evaluate:1"], id="before-the-first-result"),
    pytest.param(["evaluate:6"], id="mid-generation"),
    pytest.param(["store:7"], id="during-a-store-write"),
    pytest.param([f"committed:{BUDGET}"], id="right-after-the-last-evaluation"),
    pytest.param(["evaluate:6", "reused:3"], id="during-resume-itself"),
])
def test_a_killed_search_resumes_to_the_uninterrupted_result(straight, backend, request, tmp_path, crashes):
    _crash_and_resume(straight, _new_store(backend, request, tmp_path), tmp_path, crashes)


@pytest.mark.ray
def test_a_search_killed_on_two_ray_workers_resumes_inline_to_the_same_result(straight, backend, request, tmp_path,
                                                                               ray_local):
    """Two workers finish in any order, one worker resumes: results are told in ask order, so the
    search is the same one."""
    _crash_and_resume(straight, _new_store(backend, request, tmp_path), tmp_path, ["committed:6"],
                      ray_local.get_runtime_context().gcs_address)


def _crash_and_resume(straight: dict, db: str, tmp_path: Path, crashes: list[str], ray_address: str | None = None
                      ) -> None:
    assert len(straight["trained"]) == BUDGET and len(straight["table"]) == BUDGET
    file = _sqlite_file(db)
    finished_before: list[set[tuple[int, ...]]] = []  # what the store held finished when each killed run died
    logs = []
    for i, crash in enumerate(crashes):
        log = tmp_path / f"trained-{i}.log"
        run = _search(tmp_path, db, log, crash, ray_address) if i == 0 else _resume(db, tmp_path, log, crash)
        assert run.returncode == -signal.SIGKILL, f"{crash} was not reached:\n{run.stdout}\n{run.stderr}"
        logs.append(log)
        finished_before.append({c.genome for c in Store(db).candidates(1, ("finished",))}
                               if file is None or file.exists() else set())
    assert Store(db).get_search(1).status == "running"  # nothing marked it: the process just vanished
    last_log = tmp_path / "trained-last.log"
    done = _resume(db, tmp_path, last_log)
    assert done.returncode == 0, done.stderr
    logs.append(last_log)

    assert Store(db).get_search(1).status == "finished"
    assert _table(db) == straight["table"]
    assert _front(db) == straight["front"]
    # No finished evaluation was trained again: each process trained only what the store did not yet
    # hold finished when the process before it died.
    for finished, log in zip(finished_before, logs[1:]):
        assert not set(_trained(log)) & finished
    trained = [g for log in logs for g in _trained(log)]
    lost = len(trained) - BUDGET  # trainings whose result died with a killed process
    in_flight = 2 if ray_address else 1  # trainings that can be under way when the process dies
    assert 0 <= lost <= in_flight * len(crashes)
    if crashes == [f"committed:{BUDGET}"]:
        assert _trained(last_log) == []  # every result was in: the resume trains nothing
    events = Store(db).events(1, kinds=("candidate",))
    finished_events = [e["payload"]["key"] for e in events if e["payload"]["status"] == "finished"]
    assert sorted(finished_events) == sorted(k for k, *_ in straight["table"])  # each recorded once


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # it copies the straight run's file
def test_a_resume_that_would_not_replay_the_run_stops_and_says_where(straight, tmp_path):
    """The journal records each ask with the generator's state: a replay that differs is refused."""
    import shutil

    db, source = f"sqlite:///{tmp_path / 'dvolver.db'}", _sqlite_file(straight["db"])
    for suffix in ("", "-wal"):  # the WAL may hold the last writes until a checkpoint
        if Path(f"{source}{suffix}").exists():
            shutil.copy(f"{source}{suffix}", f"{_sqlite_file(db)}{suffix}")
    store = Store(db)
    with store._session.begin() as s:  # another Dvolver's journal: its second ask had other keys
        from dvolver.store import EventRow

        asks = s.query(EventRow).filter(EventRow.kind == "ask").order_by(EventRow.id).all()
        asks[1].payload = asks[1].payload | {"keys": list(reversed(asks[1].payload["keys"]))}
    store.set_status(1, "interrupted")
    done = _resume(db, tmp_path, tmp_path / "log")
    assert done.returncode == 2  # the CLI's exit status for an error it explains
    assert "replaying its journal diverged at generation 1 (keys differs from the journal's)" in done.stderr
    assert _trained(tmp_path / "log") == []
