"""Runners sharing one store: each search is run once, dead runners' searches are taken over."""

from __future__ import annotations

import threading
import time

import pytest

import search_spaces
from dvolver.api import versions
from dvolver.spec import SearchSpec
from dvolver.store import Store
from service.runner import Runner
from tests.helpers import table_spec


@pytest.fixture
def db(store_url: str) -> str:
    """Every runner test on SQLite and on PostgreSQL: claims, leases and takeovers are where the two
    lock differently."""
    return store_url


def _queue(store: Store, spec: dict) -> int:
    return store.create_search(SearchSpec.from_dict(spec).model_dump(mode="json"), versions(), owner="alice")


def test_runners_sharing_a_store_never_run_a_search_twice(nb201_table, db):
    store = Store(db)
    ids = [_queue(store, table_spec(nb201_table, seed=s, evaluations=30)) for s in range(6)]
    runners = [Runner(db, f"r{i}", executor="inline") for i in range(3)]
    threads = [threading.Thread(target=r.serve, kwargs={"once": True}) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for sid in ids:
        assert store.get_search(sid).status == "finished"
        claims = [e for e in store.events(sid) if e["kind"] == "claimed"]
        assert len(claims) == 1, f"search {sid} was claimed {len(claims)} times"
        finals = [e for e in store.events(sid, kinds=("candidate",)) if e["payload"]["status"] != "pending"]
        assert len(finals) == len({e["payload"]["key"] for e in finals})


def test_a_lease_that_runs_out_lets_another_runner_take_over(db):
    store = Store(db)
    sid = store.create_search({"seed": 0, "evaluations": 1}, versions())
    assert store.claim_search("a", lease_seconds=3).id == sid
    assert store.claim_search("b", lease_seconds=10) is None  # a's lease still holds
    time.sleep(3.2)
    assert store.claim_search("b", lease_seconds=10).runner == "b"
    assert not store.renew_lease(sid, "a", 10)  # a has lost it, and is told so
    assert store.renew_lease(sid, "b", 10)
    assert store.claim_search("b", lease_seconds=10) is None  # not even by a runner of the same name
    # A runner that lost its search cannot write its status over the new holder's.
    assert not store.set_status(sid, "failed", "stale", holder="a")
    assert store.get_search(sid).status == "running"
    assert store.set_status(sid, "finished", holder="b")


def test_searches_run_by_the_cli_are_never_taken_by_a_runner(nb201_table, db):
    from dvolver.api import run_search

    run_search(table_spec(nb201_table, evaluations=10), db=db, executor="inline",
               on_progress=lambda p: _assert_unclaimable(db))
    assert [e for e in Store(db).events(1) if e["kind"] == "claimed"] == []


def _assert_unclaimable(db: str) -> None:
    assert Store(db).claim_search("intruder", 10) is None


def test_a_cancelled_queued_search_is_never_claimed(db):
    store = Store(db)
    sid = store.create_search({"seed": 0, "evaluations": 1}, versions())
    assert store.request_cancel(sid).status == "cancelled"
    assert store.claim_search("a", 10) is None
    assert store.requeue(sid).status == "queued"
    assert store.claim_search("a", 10).id == sid


def test_a_search_that_cannot_start_is_marked_failed_not_left_claimed(nb201_table, tmp_path, db):
    store = Store(db)
    table = tmp_path / "table.csv"
    table.write_bytes(nb201_table.read_bytes())
    sid = _queue(store, table_spec(table))
    table.unlink()  # the table is gone by the time a runner gets to the search
    search_spaces._make_space.cache_clear()  # as in a fresh runner process
    Runner(db, "r", executor="inline").serve(once=True)
    search = store.get_search(sid)
    assert search.status == "failed" and "table" in search.error and search.runner is None


def test_a_runner_that_lost_its_search_writes_nothing_more(nb201_table, db):
    """Taken over mid-search (its lease ran out while it was still running), the first runner stops at
    its next write with the reason "lost", and the search's candidates, events, stats and status are
    exactly what they were when the second runner took it."""
    from sqlalchemy import update

    from dvolver.engine import Stopped, run
    from dvolver.executors import InlineExecutor
    from dvolver.store import SearchRow

    store = Store(db)
    sid = _queue(store, table_spec(nb201_table, evaluations=60))
    assert store.claim_search("a", lease_seconds=30).id == sid
    at_takeover: dict = {}

    def take_over(progress) -> None:
        if progress.evaluations >= 20 and not at_takeover:
            with store._session.begin() as s:  # a's lease runs out (a stalled heartbeat) ...
                s.execute(update(SearchRow).where(SearchRow.id == sid).values(lease_until=SearchRow.created_at))
            assert store.claim_search("b", lease_seconds=30).runner == "b"  # ... and b takes the search
            at_takeover.update(candidates=store.candidates(sid), events=store.events(sid),
                               stats=store.get_search(sid).stats)

    with pytest.raises(Stopped) as stopped:
        run(store, sid, InlineExecutor(), on_progress=take_over, holder="a")
    assert stopped.value.reason == "lost"
    assert at_takeover, "the takeover never happened"
    assert store.candidates(sid) == at_takeover["candidates"]
    assert store.events(sid) == at_takeover["events"]
    assert store.get_search(sid).stats == at_takeover["stats"]
    search = store.get_search(sid)
    assert (search.status, search.runner) == ("running", "b")
