"""A stored search with many candidates, for the service and dashboard benchmarks.

The candidates are synthetic (no training: 10,000 trainings would take days here) but shaped like
a real NASNet search on digits: FLOPs log-uniform over three decades, accuracy rising with cost
with noise, params tied to FLOPs, and a journal with one generation event per 12 candidates, so
every route (front, points, history, events) has real work to do.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import insert

from dvolver.api import versions
from dvolver.pareto import non_dominated
from dvolver.spec import SearchSpec
from dvolver.store import CandidateRow, EventRow, Store

POPULATION = 12


def fill(db: str, n: int = 10_000, seed: int = 0, owner: str | None = None) -> int:
    """Stores a finished search holding `n` finished candidates; returns its id."""
    rng = np.random.default_rng(seed)
    store = Store(db)
    spec = SearchSpec.from_dict({"name": f"synthetic {n}", "population": POPULATION, "evaluations": n, "seed": seed})
    search_id = store.create_search(spec.model_dump(mode="json"), versions(), status="running", owner=owner)
    flops = 10 ** rng.uniform(5, 8, n)
    acc = np.clip(60 + 12 * np.log10(flops / 1e5) + rng.normal(0, 4, n), 5, 99.5)
    params = flops / rng.uniform(20, 60, n)
    genomes = rng.integers(0, 6, size=(n, 42))
    rows = [{"search_id": search_id, "key": f"nasnet:{i}", "genome": genomes[i].tolist(), "status": "finished",
             "objectives": {"acc": float(acc[i]), "flops": float(flops[i]), "params": float(params[i])},
             "metrics": {"acc": float(acc[i]), "flops": float(flops[i]), "macs": float(flops[i] / 2),
                         "params": float(params[i]), "test_acc": float(acc[i] - 0.5)},
             "worker": "bench:0", "seconds": 1.0} for i in range(n)]
    with store.engine.begin() as connection:
        connection.execute(insert(CandidateRow), rows)
        first_id = connection.scalar(CandidateRow.__table__.select().with_only_columns(CandidateRow.id)
                                     .where(CandidateRow.search_id == search_id).order_by(CandidateRow.id).limit(1))
        events, history = [], []
        points = np.stack([-acc, flops], axis=1)
        members = np.array([], dtype=int)
        for end in range(POPULATION, n + 1, POPULATION):
            # The front after a generation is the front of (the previous front + the generation).
            pool = np.concatenate([members, np.arange(end - POPULATION, end)])
            members = pool[non_dominated(points[pool])]
            front = (members + first_id).tolist()
            hv = float(np.mean(acc[members]) / 100)  # a stand-in: the journal only needs a number
            history.append([end, hv])
            events.append({"search_id": search_id, "kind": "generation",
                           "payload": {"evaluations": end, "front_size": len(front), "hypervolume": hv,
                                       "front": front}})
        connection.execute(insert(EventRow), events)
    store.update_stats(search_id, {"evaluations": n, "budget": n, "front_size": len(front), "hypervolume": hv,
                                   "hypervolume_history": history, "input_shape": [1, 8, 8], "num_classes": 10})
    store.set_status(search_id, "finished")
    return search_id
