"""A stored search with many candidates, for the service and dashboard benchmarks.

The candidates are synthetic (10,000 trainings would take days here) but shaped like a real
NASNet search on digits: distinct canonical genomes, FLOPs over three decades, accuracy rising with
log FLOPs and saturating, later generations closer to that curve, params tied to FLOPs; and a
journal with the running front and hypervolume after each generation, as the engine writes them.
So every route (front, points, history, events) has real work to do.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from dvolver.api import versions
from dvolver.front import minimised
from dvolver.pareto import hypervolume, non_dominated, normalise
from dvolver.spec import SearchSpec
from dvolver.store import CandidateRow, EventRow, Store
from search_spaces import genome_key, make_space

OBJECTIVES = ["acc", "flops", "params"]


def objectives(rng: np.random.Generator, generation: int, generations: int) -> dict[str, float]:
    """Accuracy rises with log FLOPs and saturates; later generations sit closer to that curve."""
    log_flops = rng.uniform(5.0, 8.0)  # 100 kFLOPs .. 100 MFLOPs
    ceiling = 98.5 - 30.0 * np.exp(-1.4 * (log_flops - 5.0))
    spread = 25.0 * (1.0 - 0.8 * generation / generations)
    acc = float(np.clip(ceiling - abs(rng.normal(0.0, spread / 3)), 10.0, 99.5))
    flops = float(round(10**log_flops))
    return {"acc": round(acc, 3), "flops": flops, "params": float(round(flops / rng.uniform(20.0, 60.0)))}


def fill(db: str, count: int = 10_000, population: int = 100, seed: int = 0, owner: str | None = None) -> int:
    """Stores a finished search holding `count` finished candidates; returns its id."""
    store = Store(db)
    spec = SearchSpec.from_dict({"name": f"bench {count} candidates", "objectives": OBJECTIVES,
                                 "evaluations": count, "population": population, "seed": seed})
    search_id = store.create_search(spec.model_dump(mode="json"), versions(), owner=owner)
    store.set_status(search_id, "running")
    space = make_space("nasnet", spec.space_options)
    rng = np.random.default_rng(seed)
    keys: set[str] = set()
    rows: list[dict] = []
    start = datetime.now(UTC)
    generations = count // population
    while len(rows) < count:
        genome = space.canonical(space.sample(rng))
        key = genome_key("nasnet", genome)
        if key in keys:
            continue
        keys.add(key)
        at = start + timedelta(seconds=len(rows))
        rows.append({"search_id": search_id, "key": key, "genome": [int(g) for g in genome], "status": "finished",
                     "objectives": objectives(rng, len(rows) // population, generations),
                     "metrics": {"cost_source": "synthetic (benchmark)"}, "worker": "bench", "seconds": 1.0,
                     "created_at": at, "finished_at": at})
    with store.engine.begin() as conn:
        conn.execute(CandidateRow.__table__.insert(), rows)
    stored = store.candidates(search_id)

    # The journal's generation events: the running front after each generation, as the engine writes them.
    points = np.array([minimised(c, OBJECTIVES) for c in stored])
    ideal, nadir = points[:population].min(axis=0), points[:population].max(axis=0)
    front: list[int] = []
    history, events = [], []
    for end in range(population, count + 1, population):
        pool = front + list(range(end - population, end))
        front = [pool[i] for i in np.flatnonzero(non_dominated(points[pool]))]
        hv = hypervolume(normalise(points[front], ideal, nadir), np.full(len(OBJECTIVES), 1.1))
        history.append([end, hv])
        events.append({"search_id": search_id, "kind": "generation", "at": start + timedelta(seconds=end),
                       "payload": {"evaluations": end, "front_size": len(front), "hypervolume": hv,
                                   "front": [stored[i].id for i in front]}})
    with store.engine.begin() as conn:
        conn.execute(EventRow.__table__.insert(), events)
    store.update_stats(search_id, {"evaluations": count, "front_size": len(front), "hypervolume": history[-1][1],
                                   "hypervolume_history": history, "trained": count,
                                   "input_shape": [1, 8, 8], "num_classes": 10})
    store.set_status(search_id, "finished")
    return search_id
