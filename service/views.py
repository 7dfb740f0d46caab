"""What the routes return: store rows turned into response bodies, and the per-search caches that
keep reads of large searches fast.

Final candidate rows never change, so (rows, final rows) identifies a search's candidates: a
cached view is reused until that pair moves.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from dvolver.export import Exported, export_candidate, export_training
from dvolver.front import minimised, pareto_front
from dvolver.jsonable import finite
from dvolver.objectives import OBJECTIVES, violation
from dvolver.pareto import hypervolume, knee_point, non_dominated, normalise
from dvolver.run_stats import RunStats
from dvolver.spec import SearchSpec
from dvolver.store import Candidate, Search, Store, Training

from . import schemas


@dataclass(frozen=True)
class Snapshot:
    key: tuple[Any, ...]
    spec: SearchSpec
    candidates: list[Candidate]
    by_id: dict[int, Candidate]
    front: list[Candidate]  # non-dominated over all the search's objectives, sorted by the first
    front_ids: frozenset[int]
    pending: frozenset[int]  # ids whose rows may still change


class Snapshots:
    def __init__(self, store: Store, size: int = 32) -> None:
        self.store, self.size = store, size
        self._items: OrderedDict[int, Snapshot] = OrderedDict()
        self._generations: OrderedDict[int, tuple[datetime, list[dict[str, Any]]]] = OrderedDict()
        self._history: OrderedDict[int, tuple[tuple[Any, ...], bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def history_json(self, search: Search, snapshot: Snapshot, max_generations: int) -> bytes:
        """The history route's body, built once per state of the search: at 10,000 candidates it
        is megabytes of JSON, too slow to rebuild on every request."""
        events = self.generations(search)
        key = (snapshot.key, len(events), max_generations)
        with self._lock:
            cached = self._history.get(search.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        body = history(events, snapshot, max_generations).model_dump_json().encode()
        with self._lock:
            self._history[search.id] = (key, body)
            while len(self._history) > self.size:
                self._history.popitem(last=False)
        return body

    def generations(self, search: Search) -> list[dict[str, Any]]:
        """The search's generation events; the journal only grows, so only new ones are read."""
        with self._lock:
            created, known = self._generations.get(search.id, (search.created_at, []))
        if created != search.created_at:
            known = []
        after = known[-1]["id"] if known else 0
        known = known + self.store.events(search.id, after=after, kinds=("generation",))
        with self._lock:
            self._generations[search.id] = (search.created_at, known)
            self._generations.move_to_end(search.id)
            while len(self._generations) > self.size:
                self._generations.popitem(last=False)
        return known

    def get(self, search: Search) -> Snapshot:
        key = (search.created_at, *self.store.candidate_counts(search.id))
        with self._lock:
            cached = self._items.get(search.id)
        if cached is not None and cached.key == key:
            return cached
        if cached is not None and cached.key[0] == search.created_at:
            # A running search: read only the rows added since, and those that were pending.
            changed = self.store.candidates(search.id, after=max(cached.by_id, default=0), also=cached.pending)
            by_id = cached.by_id | {c.id: c for c in changed}
            candidates = [by_id[i] for i in sorted(by_id)]
            # Final rows never change, so the new front is the front of the old one and the new finals.
            pool = cached.front + [c for c in changed if c.status != "pending"]
            snapshot = _snapshot(key, cached.spec, candidates, by_id, pool)
        else:
            spec = SearchSpec.from_stored(search.spec)
            candidates = self.store.candidates(search.id)
            snapshot = _snapshot(key, spec, candidates, {c.id: c for c in candidates}, candidates)
        with self._lock:
            self._items[search.id] = snapshot
            self._items.move_to_end(search.id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return snapshot


class Exports:
    """Exported files, kept: a finished candidate's weights never change, and a torch.export or
    ONNX export takes seconds of CPU that a second download should not cost again."""

    def __init__(self, store: Store, size: int = 16) -> None:
        self.store, self.size = store, size
        self._items: OrderedDict[tuple[Any, ...], Exported] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, search: Search, candidate_id: int, fmt: str) -> Exported:
        key = (search.id, search.created_at, candidate_id, fmt)
        return self._kept(key, lambda: export_candidate(self.store, search.id, candidate_id, fmt))

    def training(self, training: Training, fmt: str) -> Exported:
        """A finished training's network; keyed on its weights' hash, which a finished training never changes."""
        return self._kept(("training", training.id, training.weights_sha256, fmt),
                          lambda: export_training(self.store, training.id, fmt))

    def _kept(self, key: tuple[Any, ...], make: Callable[[], Exported]) -> Exported:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        out = make()
        with self._lock:
            self._items[key] = out
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return out


# The shared reference sits this share of the group's range past the worst value seen (as the
# engine's own hypervolume does, at 1.1 of its normalised box).
REFERENCE_MARGIN = 0.1


def problem(spec: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    """What a search measures: its space, where its accuracies come from (the table a table search
    looks them up in, else the dataset) and its objectives. Searches with the same problem may
    differ in algorithm, budget, seed or training and are still compared; different problems never."""
    table = (spec.get("space_options") or {}).get("table")
    data = f"table {table}" if table else f"dataset {spec.get('dataset', '')}"
    return spec["space"], data, tuple(sorted(spec["objectives"]))


@dataclass(frozen=True)
class Digest:
    """What the shared hypervolume needs of one search, in minimised objectives (problem order): its
    front, and the corners of the box its feasible candidates span (None while it has none); and, as
    Snapshots keeps them, what a later read needs to catch up: the last id read, the ids still pending."""

    key: tuple[Any, ...]  # (created_at, rows, final rows), as a Snapshot's
    front: np.ndarray
    low: np.ndarray | None
    high: np.ndarray | None
    last_id: int
    pending: frozenset[int]


def caught_up(old: Digest | None, key: tuple[Any, ...], changed: list[tuple[int, str, dict[str, float]]],
              spec: SearchSpec, objectives: list[str]) -> Digest:
    """`old` (None: nothing read yet) updated with `changed`, the (id, status, objectives) of the rows
    added or pending since. Final rows never change, so the new front is the front of the old one and
    the new feasible rows, and the box only grows."""
    # feasible(), without building candidates: finished and within the constraints.
    points = np.array([[OBJECTIVES[o].minimised(float(values[o])) for o in objectives]
                       for _, status, values in changed
                       if status == "finished" and violation(spec.constraints, values) == 0],
                      dtype=float).reshape(-1, len(objectives))
    points = points[np.isfinite(points).all(axis=1)]
    front = points if old is None else np.concatenate([old.front, points])
    front = front[non_dominated(front)] if len(front) else front
    lows = ([points.min(axis=0)] if len(points) else []) + ([old.low] if old and old.low is not None else [])
    highs = ([points.max(axis=0)] if len(points) else []) + ([old.high] if old and old.high is not None else [])
    ids = {i for i, _, _ in changed}
    pending = ((old.pending if old else frozenset()) - ids) | {i for i, status, _ in changed if status == "pending"}
    return Digest(key, front, np.min(lows, axis=0) if lows else None, np.max(highs, axis=0) if highs else None,
                  max([old.last_id if old else 0, *ids]), frozenset(pending))


def shared_box(digests: list[Digest]) -> tuple[np.ndarray, np.ndarray] | None:
    """(ideal, reference) in minimised objectives: the best and the worst values any of the searches'
    feasible candidates reached, the worst padded by REFERENCE_MARGIN of the range (of its size where
    the range is empty), so that every front point adds volume."""
    spans = [(d.low, d.high) for d in digests if d.low is not None]
    if not spans:
        return None
    ideal = np.min([low for low, _ in spans], axis=0)
    nadir = np.max([high for _, high in spans], axis=0)
    width = np.where(nadir > ideal, nadir - ideal, np.maximum(np.abs(nadir), 1.0))
    return ideal, nadir + REFERENCE_MARGIN * width


def shared_value(front: np.ndarray, ideal: np.ndarray, reference: np.ndarray) -> float | None:
    """The front's hypervolume as a share of the ideal-to-reference box: 1 is a front at the ideal
    point, 0 one that dominates nothing inside the box."""
    if not len(front):
        return None
    return hypervolume(normalise(front, ideal, reference), np.ones(len(reference)))


class SharedHypervolumes:
    """Hypervolumes that compare across searches: every search of one problem, among those the caller
    can see, is measured on the same reference point.

    The reference depends on every candidate of the group, so each search's digest is kept under its
    Snapshot-style key and caught up the way Snapshots does (only rows added since, and those that
    were pending): a list request reads the searches' specs and candidate counts (two queries) and no
    candidate row unless a search changed. The values are kept under the reference they use.
    """

    def __init__(self, store: Store, size: int = 1024) -> None:
        self.store, self.size = store, size
        self._digests: OrderedDict[int, Digest] = OrderedDict()
        self._values: OrderedDict[tuple[Any, ...], float | None] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, searches: list[Search], owner: str | None) -> dict[int, schemas.SharedHypervolume]:
        """The shared hypervolume of each of `searches`, its group being the searches `owner` can see
        (every search for None) that have its problem."""
        wanted = {problem(s.spec) for s in searches}
        groups: dict[tuple[Any, ...], list[tuple[int, datetime, dict[str, Any]]]] = {}
        for sid, created, spec in self.store.search_specs(owner):
            if problem(spec) in wanted:
                groups.setdefault(problem(spec), []).append((sid, created, spec))
        counts = self.store.candidate_counts_of(sid for members in groups.values() for sid, _, _ in members)
        out: dict[int, schemas.SharedHypervolume] = {}
        for key, members in groups.items():
            objectives = list(key[2])
            digests = {sid: self._digest(sid, spec, (created, *counts[sid]), objectives)
                       for sid, created, spec in members}
            box = shared_box(list(digests.values()))
            if box is None:
                continue
            ideal, reference = box
            for s in searches:
                if s.id in digests:
                    out[s.id] = schemas.SharedHypervolume(
                        value=self._value(s.id, digests[s.id], ideal, reference),
                        ideal=_natural(objectives, ideal), reference=_natural(objectives, reference),
                        searches=sorted(digests), margin=REFERENCE_MARGIN)
        return out

    def _digest(self, search_id: int, spec: dict[str, Any], key: tuple[Any, ...], objectives: list[str]) -> Digest:
        with self._lock:
            cached = self._digests.get(search_id)
        if cached is not None and cached.key == key:
            return cached
        if cached is None or cached.key[0] != key[0]:  # new, or the id was reused by a search made since
            cached = None
        changed = (self.store.candidate_objectives(search_id) if cached is None
                   else self.store.candidate_objectives(search_id, after=cached.last_id, also=cached.pending))
        made = caught_up(cached, key, changed, SearchSpec.from_stored(spec), objectives)
        with self._lock:
            self._digests[search_id] = made
            self._digests.move_to_end(search_id)
            while len(self._digests) > self.size:
                self._digests.popitem(last=False)
        return made

    def _value(self, search_id: int, d: Digest, ideal: np.ndarray, reference: np.ndarray) -> float | None:
        key = (search_id, d.key, ideal.tobytes(), reference.tobytes())
        with self._lock:
            if key in self._values:
                return self._values[key]
        value = shared_value(d.front, ideal, reference)
        with self._lock:
            self._values[key] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value


def _natural(objectives: list[str], minimised_values: np.ndarray) -> dict[str, float]:
    """Minimised values back in each objective's own direction and unit (accuracy in percent, not negated)."""
    return {o: OBJECTIVES[o].minimised(float(v)) for o, v in zip(objectives, minimised_values)}


def _snapshot(key: tuple[Any, ...], spec: SearchSpec, candidates: list[Candidate], by_id: dict[int, Candidate],
              front_pool: list[Candidate]) -> Snapshot:
    first = spec.objectives[0]
    front = sorted(pareto_front(front_pool, spec), key=lambda c: minimised(c, [first]))
    return Snapshot(key, spec, candidates, by_id, front, frozenset(c.id for c in front),
                    frozenset(c.id for c in candidates if c.status == "pending"))


def summary(search: Search, shared: schemas.SharedHypervolume | None = None) -> schemas.SearchSummary:
    stats, spec = RunStats.from_dict(search.stats), search.spec
    return schemas.SearchSummary(
        id=search.id, name=search.name, owner=search.owner, status=search.status, space=spec["space"],
        dataset=_dataset(spec), objectives=spec["objectives"],
        progress=schemas.Progress(evaluations=stats.evaluations, budget=spec["evaluations"],
                                  front_size=stats.front_size, hypervolume=finite(stats.hypervolume),
                                  training_epochs=stats.training_epochs,
                                  full_fidelity_epochs=stats.full_fidelity_epochs),
        shared_hypervolume=shared, created_at=search.created_at, started_at=search.started_at,
        finished_at=search.finished_at, error=search.error)


def _dataset(spec: dict[str, Any]) -> str:
    """What the accuracies come from: a table search looks them up, whatever its dataset says."""
    table = (spec.get("space_options") or {}).get("table")
    return f"table {Path(table).name}" if table else spec.get("dataset", "")


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None:
        return None
    return round(((end or datetime.now(UTC)) - start).total_seconds(), 3)


OBJECTIVE_INFO = {
    name: schemas.ObjectiveInfo(direction=o.direction, unit=o.unit, label=o.description, cost=o.direction == "min")
    for name, o in OBJECTIVES.items()
}


def detail(search: Search, last_event_id: int, shared: schemas.SharedHypervolume | None = None
           ) -> schemas.SearchDetail:
    stats = RunStats.from_dict(search.stats)
    return schemas.SearchDetail(
        **summary(search, shared).model_dump(), spec=search.spec, stats=finite(stats.summary()),
        timings=schemas.Timings(queued_seconds=_seconds(search.created_at, search.started_at),
                                running_seconds=_seconds(search.started_at, search.finished_at)),
        hypervolume_history=finite(stats.hypervolume_history), objective_info=OBJECTIVE_INFO,
        last_event_id=last_event_id)


def candidate(c: Candidate, front_ids: frozenset[int]) -> schemas.CandidateOut:
    return schemas.CandidateOut(id=c.id, key=c.key, status=c.status, objectives=finite(c.objectives),
                                metrics=finite(c.metrics), genome=list(c.genome), worker=c.worker,
                                seconds=c.seconds, error=c.error, on_front=c.id in front_ids,
                                rung=c.metrics.get("rung"), rungs=c.metrics.get("rungs_total"))


def knee(snapshot: Snapshot) -> list[Candidate]:
    if not snapshot.front:
        return []
    points = np.array([minimised(c, snapshot.spec.objectives) for c in snapshot.front])
    return [snapshot.front[knee_point(points)]]


def best_under(snapshot: Snapshot, objective: str, bound: float) -> tuple[list[Candidate], str | None]:
    """The best front member whose `objective` is at most `bound`, judged on the search's first
    other objective."""
    goal = next((o for o in snapshot.spec.objectives if o != objective), None)
    if goal is None:
        goal = objective
    fits = [c for c in snapshot.front if c.objectives.get(objective, math.inf) <= bound]
    if not fits:
        cheapest = min((c.objectives[objective] for c in snapshot.front if objective in c.objectives), default=None)
        hint = f"; the cheapest on the front has {objective} = {cheapest:.6g}" if cheapest is not None else ""
        return [], f"no front member has {objective} <= {bound:.6g}{hint}"
    return [min(fits, key=lambda c: minimised(c, [goal]))], None


def decimate(x: np.ndarray, y: np.ndarray, log_x: bool, log_y: bool, limit: int) -> np.ndarray:
    """Indices of at most `limit` points, one per cell of a grid over the plotted area, so that a
    plot of them looks like a plot of all of them."""
    if len(x) <= limit:
        return np.arange(len(x))
    side = max(1, int(math.sqrt(limit)))
    cells = []
    for values, log in ((x, log_x), (y, log_y)):
        v = np.log10(np.maximum(values, 1e-30)) if log else values
        low, high = float(v.min()), float(v.max())
        span = high - low if high > low else 1.0
        cells.append(np.minimum(((v - low) / span * side).astype(int), side - 1))
    _, first = np.unique(cells[0] * side + cells[1], return_index=True)
    return np.sort(first)[:limit]


def points(snapshot: Snapshot, x: str, y: str, max_dominated: int) -> schemas.PointsOut:
    plotted = [c for c in snapshot.candidates
               if c.status == "finished" and x in c.objectives and y in c.objectives]
    front = sorted((c for c in plotted if c.id in snapshot.front_ids), key=lambda c: c.objectives[x])
    rest = [c for c in plotted if c.id not in snapshot.front_ids]
    xs = np.array([c.objectives[x] for c in rest], dtype=float)
    ys = np.array([c.objectives[y] for c in rest], dtype=float)
    keep = decimate(xs, ys, OBJECTIVE_INFO[x].cost, OBJECTIVE_INFO[y].cost, max_dominated) if rest else []
    shown = [rest[i] for i in keep]
    return schemas.PointsOut(
        x=x, y=y, front=[schemas.Point(id=c.id, x=c.objectives[x], y=c.objectives[y]) for c in front],
        dominated=[schemas.Point(id=c.id, x=c.objectives[x], y=c.objectives[y]) for c in shown],
        dominated_total=len(rest), dominated_shown=len(shown), candidates_total=len(snapshot.candidates))


def history(events: list[dict[str, Any]], snapshot: Snapshot, max_generations: int) -> schemas.HistoryOut:
    """The front after each generation, from the journal's generation events; long histories are
    thinned evenly, always keeping the last generation."""
    total = len(events)
    if total > max_generations:
        step = total / max_generations
        picks = sorted({int(i * step) for i in range(max_generations - 1)} | {total - 1})
        events = [events[i] for i in picks]
    generations = []
    for e in events:
        p = e["payload"]
        members = [snapshot.by_id[i] for i in p.get("front", []) if i in snapshot.by_id]
        generations.append(schemas.Generation(
            evaluations=p.get("evaluations", 0), hypervolume=finite(p.get("hypervolume")),
            front=[schemas.FrontMember(id=c.id, objectives=finite(c.objectives)) for c in members]))
    return schemas.HistoryOut(generations=generations, total_generations=total)
