"""The Ray-free executor: local worker processes give the inline front, and survive a worker that dies."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from dvolver import run_search
from dvolver.executors import ProcessExecutor
from tests.helpers import TINY

pytestmark = pytest.mark.slow


def _square(x: int) -> int:
    return x * x


def _die_once(marker: str) -> str:
    """Kills its own worker process the first time it runs, then answers from a new one."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return f"survived in {os.getpid()}"


def _die_always() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _front(result):
    return sorted((c.key, tuple(sorted(c.objectives.items()))) for c in result.front)


def test_processes_and_inline_give_the_same_front(db):
    spec = TINY | {"evaluations": 6, "seed": 3}
    pooled = run_search(spec, db=db, executor="processes", workers=2)
    inline = run_search(spec, db=db, executor="inline")
    assert pooled.front and _front(pooled) == _front(inline)
    assert len({c.worker for c in pooled.candidates}) == 2  # both worker processes trained candidates
    assert pooled.stats.workers == 2 and 0 < pooled.stats.utilisation <= 1
    assert all(c.worker.split(":")[1] != str(os.getpid()) for c in pooled.candidates)


def test_a_dead_worker_process_has_its_evaluation_run_again(tmp_path):
    executor = ProcessExecutor(workers=2)
    try:
        shared = executor.share(7)
        handles = [executor.submit(_die_once, str(tmp_path / "died")), executor.submit(_square, shared)]
        outcomes = [outcome for _, outcome in executor.as_completed(handles)]
    finally:
        executor.shutdown()
    by_value = {o.value: o for o in outcomes}
    assert 49 in by_value  # the shared value reached the worker
    [survivor] = [o for o in outcomes if isinstance(o.value, str)]
    died_in = (tmp_path / "died").read_text()
    assert survivor.error is None and survivor.attempts == 2 and survivor.value != f"survived in {died_in}"
    assert survivor.lost[0].startswith("BrokenProcessPool")


def test_work_sent_to_a_pool_a_dead_worker_broke_is_retried_not_raised(tmp_path):
    """Early stopping sends a candidate's next rung while other results are handed back: the pool may have
    broken since the last wait, and that send must count as a lost attempt, as the ones in flight do."""
    executor = ProcessExecutor(workers=1)
    try:
        handles = [executor.submit(_die_once, str(tmp_path / "died"))]
        deadline = time.monotonic() + 60
        while not getattr(executor._pool, "_broken", False) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert executor._pool._broken  # the worker died and took the pool with it
        handles.append(executor.submit(_square, 3))
        outcomes = {type(o.value): o for _, o in executor.as_completed(handles)}
    finally:
        executor.shutdown()
    assert outcomes[int].value == 9 and outcomes[int].attempts == 2
    assert outcomes[int].lost[0].startswith("BrokenProcessPool")
    assert outcomes[str].error is None and outcomes[str].attempts == 2


def test_a_worker_lost_on_every_attempt_fails_that_evaluation_only():
    executor = ProcessExecutor(workers=1, max_retries=2)
    try:
        [(_, lost)] = list(executor.as_completed([executor.submit(_die_always)]))
        [(_, fine)] = list(executor.as_completed([executor.submit(_square, 5)]))  # the pool came back
    finally:
        executor.shutdown()
    assert lost.value is None and lost.attempts == 3 and len(lost.lost) == 3
    assert lost.error.startswith("the worker was lost on all 3 attempts; last: BrokenProcessPool")
    assert fine.value == 25 and fine.attempts == 1


def test_an_evaluation_that_raises_is_not_retried():
    executor = ProcessExecutor(workers=1)
    try:
        [(_, outcome)] = list(executor.as_completed([executor.submit(_square, "x")]))
    finally:
        executor.shutdown()
    assert outcome.attempts == 1 and outcome.error.startswith("TypeError: ")


def test_processes_refuse_a_ray_address():
    from dvolver.api import make_executor
    from dvolver.errors import DvolverError
    from dvolver.spec import SearchSpec

    with pytest.raises(DvolverError, match="--ray-address needs the ray executor"):
        make_executor(SearchSpec.from_dict(TINY), "processes", 2, "127.0.0.1:6379")
