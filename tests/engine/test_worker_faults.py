"""Worker processes killed for real: a search on Ray survives them, and so does a runner's search."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dvolver import run_search
from dvolver.api import versions
from dvolver.executors import RayExecutor
from dvolver.spec import SearchSpec
from dvolver.store import Store
from tests.helpers import TINY

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def db(store_url: str) -> str:
    """On SQLite and on PostgreSQL: retries and takeovers are recorded through the store's locks."""
    return store_url


def _evaluating_workers() -> list[int]:
    """Ray worker processes running an evaluation now: Ray titles a busy worker after its task."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue  # gone meanwhile
            if title.startswith(b"ray::timed_call"):
                pids.append(int(entry.name))
    return pids


class _Killer(threading.Thread):
    """Kills the first Ray worker it finds evaluating, once."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.killed: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.killed is None:
            for pid in _evaluating_workers():
                os.kill(pid, signal.SIGKILL)
                self.killed = pid
                return
            time.sleep(0.05)


def test_a_ray_worker_killed_mid_evaluation_has_its_evaluation_retried(ray_local, db):
    killer = _Killer()
    killer.start()
    spec = TINY | {"evaluations": 6, "population": 4, "seed": 2, "training": {"epochs": 2, "train_limit": 600}}
    result = run_search(spec, db=db, executor="ray", workers=2)
    killer.stop.set()
    assert killer.killed is not None, "no evaluating Ray worker was seen"
    assert result.status == "finished" and result.stats.evaluations == 6
    assert {c.status for c in result.candidates} == {"finished"}
    [retried] = [c for c in result.candidates if c.metrics.get("attempts")]
    assert retried.metrics["attempts"] == 2
    [lost] = retried.metrics["lost_workers"]
    assert "WorkerCrashedError" in lost or "died" in lost
    assert not retried.worker.endswith(f":{killer.killed}")  # the second attempt ran elsewhere
    # Retried on other workers, the result is the one an undisturbed run gets.
    again = run_search(spec, db=db, executor="inline")
    assert {c.key: c.objectives for c in again.candidates} == {c.key: c.objectives for c in result.candidates}


def _kill_own_worker() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _square(x: int) -> int:
    return x * x


def test_a_worker_lost_on_every_attempt_fails_that_evaluation_only(ray_local):
    executor = RayExecutor(workers=2, max_retries=2)
    doomed, fine = executor.submit(_kill_own_worker), executor.submit(_square, 7)
    outcomes = dict(executor.as_completed([doomed, fine]))
    assert outcomes[fine].value == 49 and outcomes[fine].error is None and outcomes[fine].attempts == 1
    lost = outcomes[doomed]
    assert lost.value is None and lost.attempts == 3 and len(lost.lost) == 3
    assert lost.error.startswith("the worker was lost on all 3 attempts; last: ")


def test_an_evaluation_that_raises_is_not_retried(ray_local):
    executor = RayExecutor(workers=2)
    [(_, outcome)] = list(executor.as_completed([executor.submit(_square, "x")]))
    assert outcome.attempts == 1 and outcome.error.startswith("TypeError: ")


def _runner(db: str, name: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dvolver", "runner", "--db", db, "--name", name, "--lease", "3",
                             "--executor", "inline"], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_two_runners_share_a_database_and_the_survivor_finishes_the_dead_ones_search(tmp_path, db):
    store = Store(db)
    spec = TINY | {"evaluations": 10, "population": 4}
    ids = [store.create_search(SearchSpec.from_dict(spec | {"seed": s}).model_dump(mode="json"), versions())
           for s in range(3)]
    runners = {name: _runner(db, name, tmp_path / f"{name}.log") for name in ("first", "second")}
    try:
        def both_running() -> bool:
            holders = {s.runner for s in store.list_searches(status="running")}
            return holders == {"first", "second"} and any(
                store.candidates(s.id, ("finished",)) for s in store.list_searches(status="running"))

        _wait(both_running, 120, "both runners to be running a search")
        [victim] = [s.id for s in store.list_searches(status="running") if s.runner == "first"]
        done_before = {c.key: c.seconds for c in store.candidates(victim, ("finished",))}
        runners["first"].send_signal(signal.SIGKILL)
        runners["first"].wait(30)
        _wait(lambda: all(store.get_search(i).status == "finished" for i in ids), 300, "every search to finish")
    finally:
        for proc in runners.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    for sid in ids:
        claims = [e["payload"]["runner"] for e in store.events(sid) if e["kind"] == "claimed"]
        assert claims == (["first", "second"] if sid == victim else [claims[0]]), (sid, claims)
        finished = store.candidates(sid, ("finished",))
        assert len(finished) == 10
        finals = [e["payload"]["key"] for e in store.events(sid, kinds=("candidate",))
                  if e["payload"]["status"] == "finished"]
        assert sorted(finals) == sorted(c.key for c in finished)  # each result recorded exactly once
    after = {c.key: c.seconds for c in store.candidates(victim, ("finished",))}
    assert all(after[k] == v for k, v in done_before.items())  # what the dead runner finished, kept as it was
    assert store.get_search(victim).stats["reused"] >= len(done_before)
