"""The service's per-search caches follow a running search without rereading it."""

from __future__ import annotations

import numpy as np
from sqlalchemy import event

from dvolver.api import versions
from dvolver.spec import SearchSpec
from dvolver.store import Store
from service.views import SharedHypervolumes, Snapshots


def test_a_cached_view_caught_up_equals_one_built_from_scratch(db):
    store = Store(db)
    spec = SearchSpec.from_dict({"objectives": ["acc", "flops"]}).model_dump(mode="json")
    sid = store.create_search(spec, versions(), status="running")
    rng = np.random.default_rng(0)
    follower = Snapshots(store)
    for step in range(30):
        for i in range(5):
            key = f"k{step}-{i}"
            values = {"acc": float(rng.uniform(50, 99)), "flops": float(rng.uniform(1e5, 1e7))}
            status = ["pending", "finished", "failed", "infeasible"][int(rng.integers(0, 4))]
            store.record(sid, key, (step, i), status, values)
        for c in store.candidates(sid, ("pending",))[: int(rng.integers(0, 4))]:
            store.record(sid, c.key, c.genome, "finished", c.objectives)  # a pending row becomes final
        caught_up = follower.get(store.get_search(sid))
        fresh = Snapshots(store).get(store.get_search(sid))
        assert [c.id for c in caught_up.front] == [c.id for c in fresh.front]
        assert caught_up.candidates == fresh.candidates and caught_up.pending == fresh.pending
    assert len(fresh.front) >= 2


def _candidate_reads(store: Store) -> list[str]:
    """Every statement from now on that reads candidate rows themselves (counts are not rows)."""
    reads: list[str] = []

    def seen(conn, cursor, statement, *_):
        if "FROM candidates" in statement and "count(" not in statement:
            reads.append(statement)

    event.listen(store.engine, "before_cursor_execute", seen)
    return reads


def test_shared_hypervolumes_reread_only_the_search_that_changed(db):
    store = Store(db)
    spec = SearchSpec.from_dict({"objectives": ["acc", "flops"]}).model_dump(mode="json")
    ids = [store.create_search(spec, versions(), status="finished") for _ in range(3)]
    for n, sid in enumerate(ids):
        for i in range(20):
            store.record(sid, f"k{n}-{i}", (n, i), "finished", {"acc": 50.0 + n + i, "flops": 1e5 * (1 + i)})
    shared = SharedHypervolumes(store)
    searches = [store.get_search(sid) for sid in ids]
    first = shared.of(searches, None)
    assert sorted(first) == ids and all(v.searches == ids for v in first.values())

    reads = _candidate_reads(store)
    assert shared.of(searches, None) == first and reads == []  # nothing changed: nothing is read again
    # A better candidate in one search: only its new row is read; the others keep their values unless
    # the shared box moved, which a new best accuracy does.
    store.record(ids[0], "better", (9, 9), "finished", {"acc": 99.0, "flops": 1e5})
    reads.clear()  # recording reads rows of its own
    after = shared.of(searches, None)
    assert len(reads) == 1 and "candidates.id >" in reads[0]
    assert after[ids[0]].ideal["acc"] == 99.0 and after[ids[0]].value > after[ids[2]].value
    assert after[ids[0]].value > first[ids[0]].value


def test_searches_of_other_problems_get_other_references(db):
    store = Store(db)
    nasnet = SearchSpec.from_dict({"objectives": ["acc", "flops"]}).model_dump(mode="json")
    three = SearchSpec.from_dict({"objectives": ["acc", "flops", "params"]}).model_dump(mode="json")
    ids = [store.create_search(s, versions(), status="finished") for s in (nasnet, three, nasnet)]
    for sid in ids:
        store.record(sid, f"k{sid}", (sid,), "finished", {"acc": 60.0 + sid, "flops": 1e6, "params": 1e4})
    shared = SharedHypervolumes(store).of([store.get_search(sid) for sid in ids], None)
    assert shared[ids[0]].searches == shared[ids[2]].searches == [ids[0], ids[2]]
    assert shared[ids[1]].searches == [ids[1]] and set(shared[ids[1]].reference) == {"acc", "flops", "params"}
    # A group of one point: the box is padded from the point itself, and the point fills it.
    assert shared[ids[1]].value == 1.0


def test_shared_hypervolumes_caught_up_equal_ones_computed_from_scratch(db):
    store = Store(db)
    spec = SearchSpec.from_dict({"objectives": ["acc", "flops"]}).model_dump(mode="json")
    ids = [store.create_search(spec, versions(), status="running") for _ in range(2)]
    rng = np.random.default_rng(1)
    follower = SharedHypervolumes(store)
    for step in range(20):
        for sid in ids:
            for i in range(3):
                values = {"acc": float(rng.uniform(50, 99)), "flops": float(rng.uniform(1e5, 1e7))}
                status = ["pending", "finished", "failed"][int(rng.integers(0, 3))]
                store.record(sid, f"k{step}-{i}", (step, i), status, values)
            for c in store.candidates(sid, ("pending",))[: int(rng.integers(0, 3))]:
                store.record(sid, c.key, c.genome, "finished", c.objectives)  # a pending row becomes final
        searches = [store.get_search(sid) for sid in ids]
        assert follower.of(searches, None) == SharedHypervolumes(store).of(searches, None)
