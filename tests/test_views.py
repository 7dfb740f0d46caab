"""The service's per-search cache follows a running search without rereading it."""

from __future__ import annotations

import numpy as np

from dvolver.api import versions
from dvolver.spec import SearchSpec
from dvolver.store import Store
from service.views import Snapshots


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
