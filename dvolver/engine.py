"""The search loop: ask -> canonicalise -> reuse what the store has -> cheap objectives and
constraints -> submit -> record each result as it arrives -> tell.

Resuming is replaying: the algorithm is seeded and results are told in ask order, so running a
search again from its first ask reproduces every earlier decision (dvolver.journal checks that it
does). Candidates the store already holds a final result for are answered from it instead of being
trained again; those that were in flight when the process died are simply submitted again.

This module wires the parts, each in its own module: the opened search (dvolver.loaded_search), the
ask journal (dvolver.journal), the dispatcher and its overlap window (dvolver.dispatch), the front
and its hypervolume (dvolver.front) and the stats (dvolver.run_stats).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from search_spaces import Genome, genome_key

from .algorithms import make_algorithm
from .ask_tell import Told
from .cheap import CheapCounts
from .climbs import Climbs
from .dispatch import Dispatcher, OverlapWindow, Work
from .errors import DvolverError, LeaseLost
from .evaluation import WEIGHTS
from .executors import Executor, Outcome
from .front import FrontTracker, feasible, minimised, pareto_front
from .journal import AskJournal, ReplayDiverged
from .loaded_search import load
from .objectives import OBJECTIVES, violation
from .run_stats import Progress, RunStats
from .spec import SearchSpec
from .store import FINAL_STATUSES, Candidate, Store

__all__ = ["EvaluationsFailed", "Progress", "ReplayDiverged", "RunStats", "SearchLoop", "SearchResult", "Stopped",
           "feasible", "minimised", "pareto_front", "result", "run"]

log = logging.getLogger(__name__)

STALL_LIMIT = 20  # generations in a row with nothing to evaluate: the constraints cannot be met


class EvaluationsFailed(DvolverError):
    """Every evaluation of a search failed."""


class Stopped(Exception):
    """The caller asked the loop to stop (a cancel, a lost lease, a shutdown); `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class SearchResult:
    search_id: int
    status: str
    spec: SearchSpec
    candidates: list[Candidate]
    front: list[Candidate]
    stats: RunStats
    error: str | None = None  # why a failed search failed

    @property
    def objectives(self) -> list[str]:
        return self.spec.objectives


class SearchLoop:
    """One pass over a search; holds nothing the store does not also hold.

    `run()` drives it to the budget. `evaluate(genomes)` and `wait_for(keys)` are the two halves of
    one generation (what is new in an ask goes out; its results come back), for callers that drive
    the loop themselves."""

    def __init__(self, store: Store, search_id: int, executor: Executor,
                 on_progress: Callable[[Progress], None] | None = None,
                 should_stop: Callable[[], str | None] | None = None) -> None:
        self.store, self.search_id = store, search_id
        self.on_progress = on_progress or (lambda p: None)
        self.should_stop = should_stop or (lambda: None)
        self.search = load(store, search_id)
        self.spec, self.space = self.search.spec, self.search.space
        self.stopped: str | None = None
        self.journal = AskJournal(store, search_id, self.key, self.search.versions)
        earlier = store.candidates(search_id)
        self.stored: dict[str, Candidate] = {c.key: c for c in earlier
                                             if c.status in FINAL_STATUSES}  # final results of earlier passes
        self.met: dict[str, Candidate] = {}  # the results this pass has met, in the order met
        self.front = FrontTracker(self.spec)
        self.progress = Progress(0, self.spec.evaluations, 0, None)
        es = self.spec.early_stopping
        self.dispatcher = Dispatcher(executor, self.spec, self.search.dataset, ordered=bool(es and es.active))
        self.climbs = (Climbs(store, search_id, self.spec, self.dispatcher, self._accept, earlier)
                       if es and es.active else None)
        if self.climbs is not None:
            self.dispatcher.on_arrival = self.climbs.on_arrival
        self.cheap = CheapCounts(self.spec, self.key, self.search.input_shape, self.search.num_classes)
        # What the driver itself spends (asking, counting costs, recording): this process's CPU time less
        # the evaluations that ran inside it (the inline executor's).
        self.started, self.started_cpu = time.perf_counter(), time.process_time()
        # A full-fidelity candidate's epochs: max_epochs when it trains in rungs (or a table is read at them).
        stopping = es is not None and es.max_epochs is not None and (es.active or self.spec.table_mode)
        self.full_epochs = es.max_epochs if stopping else self.spec.training.epochs
        self.time_limit_hit = False

    def key(self, genome: Genome) -> str:
        return genome_key(self.space.name, self.space.canonical(genome))

    def run(self) -> None:
        spec = self.spec
        algorithm = make_algorithm(spec.algorithm, self.space, self.key, spec.population, len(spec.objectives),
                                   spec.seed, cheap=self.cheap.values, batch=spec.batch)
        if self.climbs is not None:
            self.climbs.use_model(algorithm)
        window = OverlapWindow(spec.overlapped)
        idle = 0
        try:
            while True:
                while window.has_room() and not self.stopped and self._budget_left() > 0:
                    self._check_stop()
                    if self._out_of_time():
                        self.time_limit_hit = True
                        self.stopped = f"the time limit of {spec.time_limit_s:g} s was reached"
                        break
                    genomes = self.journal.ask(algorithm)
                    if not genomes:
                        self.stopped = "the algorithm found no new candidate: the space is exhausted"
                        break
                    window.push(genomes, self.evaluate(genomes))
                oldest = window.pop()
                if oldest is None:
                    break
                genomes, added = oldest
                keys = {self.key(g) for g in genomes}
                self.wait_for(keys)
                if not keys <= self.met.keys():
                    break  # the budget ran out inside this batch
                self._check_not_all_failed()
                algorithm.tell(genomes, told([self.met[self.key(g)] for g in genomes], spec))
                self._generation_done()
                idle = 0 if added else idle + 1
                if idle >= STALL_LIMIT and not self.stopped:
                    self.stopped = (f"{STALL_LIMIT} generations in a row brought nothing to evaluate: every new "
                                    "candidate broke a cheap constraint; loosen the constraints")
        finally:
            self.dispatcher.cancel_all()
        if self.stopped:
            log.warning("search %s stopped before its budget: %s", self.search_id, self.stopped)
        self._publish()

    def _budget_left(self) -> int:
        in_progress = len(self.dispatcher) if self.climbs is None else len(self.climbs)  # climbing: between rungs too
        return self.spec.evaluations - self.progress.evaluations - in_progress

    def evaluate(self, genomes: list[Genome]) -> int:
        """Scores what is new in one ask: reused, rejected on cheap constraints, or sent to a worker.
        Returns how many evaluations the ask adds (reused ones included).

        The genome evaluated is the first one asked of its class: in table mode, the cell whose row
        is looked up is the cell the algorithm chose.
        """
        spec = self.spec
        batch: list[tuple[Work, dict[str, float]]] = []
        added = 0
        for genome in genomes:
            key = self.key(genome)
            climbing = self.climbs is not None and key in self.climbs
            if key in self.met or key in self.dispatcher or climbing or any(key == w.key for w, _ in batch):
                continue
            stored = self.stored.get(key)
            # With early stopping a stored candidate goes up its rungs again, answered from the store, so that
            # the rungs see every result in the order they first did.
            if stored is not None and (self.climbs is None or stored.status == "infeasible"):
                self._accept(stored, reused=True)
                added += 1
                continue
            cheap, cheap_values = self.cheap.metrics(genome), self.cheap.objectives(genome)
            if violation(spec.constraints, cheap_values, cheap_only=True) > 0:
                self._accept(self.store.record(self.search_id, key, genome, "infeasible", cheap_values, cheap))
                continue
            if self._budget_left() - len(batch) <= 0:
                continue
            if stored is None and not (self.climbs is not None and key in self.climbs.stored):  # keeps its rungs
                self.store.record(self.search_id, key, genome, "pending", cheap_values, cheap)
            batch.append((Work(key, genome, cheap), cheap_values))
        if self.climbs is not None:
            self.climbs.start(batch, self.journal.asks)
        elif batch:
            self.dispatcher.send([w for w, _ in batch])
        return added + len(batch)

    def wait_for(self, keys: set[str]) -> None:
        """Records results as they arrive, from any batch in flight, until none of `keys` is in flight."""
        for work, outcome in self.dispatcher.results(keys, tick=self._check_stop):
            if self.climbs is not None:
                self.climbs.on_result(work, outcome)
            else:
                self._record(work, outcome)

    def _out_of_time(self) -> bool:
        """Past the spec's time limit, once at least one batch is out (as Optuna's timeout runs one trial)."""
        limit = self.spec.time_limit_s
        return limit is not None and self.journal.asks > 0 and time.perf_counter() - self.started >= limit

    def _check_stop(self) -> None:
        reason = self.should_stop()
        if reason:
            raise Stopped(reason)

    def _check_not_all_failed(self) -> None:
        """A search whose every evaluation fails is broken (bad data, bad settings): say so early."""
        p = self.progress
        if p.failed and p.failed == p.evaluations >= min(self.spec.population, self.spec.evaluations):
            first = next(c.error for c in self.met.values() if c.status == "failed")
            raise EvaluationsFailed(f"search {self.search_id}: all {p.failed} evaluations so far failed; "
                                    f"the first error: {first}")

    def _record(self, work: Work, outcome: Outcome) -> None:
        value = dict(outcome.value or {})
        weights = value.pop(WEIGHTS, None)
        metrics = work.cheap | value | outcome.worker_metrics()
        values = {k: float(v) for k, v in metrics.items() if k in OBJECTIVES}
        status = "failed" if outcome.error else "finished"
        self._accept(self.store.record(self.search_id, work.key, work.genome, status, values, metrics, outcome.error,
                                       outcome.worker, outcome.seconds, weights))

    def _accept(self, record: Candidate, reused: bool = False) -> None:
        self.met[record.key] = record
        p = self.progress
        if record.status == "infeasible":
            p.infeasible += 1
        else:
            p.evaluations += 1
            p.failed += record.status == "failed"
            p.stopped += record.status == "stopped"
            trained = epochs_trained(record, self.full_epochs)
            p.training_epochs += trained
            # Without early stopping every candidate is trained as a full-fidelity search trains it, failures too.
            p.full_fidelity_epochs += self.full_epochs if self.climbs is not None else trained
            if reused:
                p.reused += 1
            else:
                p.trained += 1
        if self.front.add(record) and not reused:
            self.store.append_event(self.search_id, "front", {"front": [c.id for c in self.front.members],
                                                              "evaluations": p.evaluations})
        p.front_size = len(self.front.members)
        self.on_progress(p)

    def _generation_done(self) -> None:
        """After each tell: the front's hypervolume, the stats and a generation event."""
        self._publish()
        p = self.progress
        self.store.append_event(self.search_id, "generation", {
            "evaluations": p.evaluations, "front_size": p.front_size, "hypervolume": p.hypervolume,
            "front": [c.id for c in self.front.members]})

    def _publish(self) -> None:
        """Measures the front, and writes the stats and the progress."""
        self.progress.hypervolume = self.front.measure(self.progress.evaluations, self.met.values())
        self.progress.front_size = len(self.front.members)
        self.on_progress(self.progress)
        self.store.update_stats(self.search_id, self.stats_row())

    def stats_row(self) -> dict[str, Any]:
        """The stats this pass writes: all but wall_seconds, which run() sets once the whole run is done
        (a pass that stops short leaves the last finished run's)."""
        return {k: v for k, v in self.stats().to_dict().items() if k != "wall_seconds"}

    def stats(self) -> RunStats:
        p, d = self.progress, self.dispatcher
        driver_cpu = max(0.0, time.process_time() - self.started_cpu - d.evaluation_cpu_here)
        box = self.front.box
        return RunStats(
            data_fingerprint=self.search.fingerprint, input_shape=self.search.input_shape,
            num_classes=self.search.num_classes, stopped_early=self.stopped, evaluations=p.evaluations,
            budget=p.budget, trained=p.trained, reused=p.reused, infeasible=p.infeasible, failed=p.failed,
            stopped=p.stopped, training_epochs=p.training_epochs, full_fidelity_epochs=p.full_fidelity_epochs,
            front_size=p.front_size, hypervolume=p.hypervolume, hypervolume_history=list(self.front.history),
            hypervolume_box=None if box is None else [b.tolist() for b in box], workers=d.executor.slots,
            busy_seconds={w: round(s, 3) for w, s in d.busy.items()},
            evaluation_wall_seconds=round(d.evaluation_wall_seconds, 3), utilisation=d.utilisation(),
            driver_cpu_seconds=round(driver_cpu, 3),
            driver_cpu_seconds_per_evaluation=round(driver_cpu / max(1, p.trained), 4),
            time_limit_hit=self.time_limit_hit)


def epochs_trained(record: Candidate, full: int) -> int:
    """The epochs a final candidate trained: its rungs' for one stopped early or failed on the way, else
    its own count (a table row, which has none, stands for a full training)."""
    rungs = record.metrics.get("rungs")
    if record.status == "failed":
        return int(rungs[-1][0]) if rungs else int(record.metrics.get("epochs") or 0)
    return int(record.metrics.get("epochs") or full)


def told(records: list[Candidate], spec: SearchSpec) -> Told:
    """What the algorithm is told of these final records: +inf for what was never measured (a NaN, as a
    table row may hold, counts as never measured)."""
    F = [[OBJECTIVES[o].minimised(r.objectives[o]) if o in r.objectives and r.objectives[o] == r.objectives[o]
          else np.inf for o in spec.objectives] for r in records]
    G = [np.inf if r.status == "failed" else violation(spec.constraints, r.objectives) for r in records]
    es = spec.early_stopping
    fidelity = [min(1.0, r.metrics["epochs"] / es.max_epochs) if r.status == "stopped" and es and es.max_epochs
                else 1.0 for r in records]
    return Told(np.array(F, dtype=float), np.array(G, dtype=float), tuple(r.status for r in records),
                np.array(fidelity))


def run(store: Store, search_id: int, executor: Executor,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], str | None] | None = None, holder: str | None = None) -> SearchResult:
    """Runs (or resumes) a search to its budget; every result is in the store as it arrives.

    `should_stop` is asked between results; when it returns a reason the loop raises `Stopped`
    with it, leaving the search's status to the caller. `holder`: the runner that holds the
    search; everything the search writes (candidates, events, stats, status) is then written only
    while that runner still holds it, and once another runner has taken it over this one raises
    `Stopped("lost")` having written nothing more.
    """
    if holder is not None:
        store = store.held_by(holder)
    loop = SearchLoop(store, search_id, executor, on_progress, should_stop)
    store.set_status(search_id, "running", holder=holder)
    started = time.perf_counter()
    try:
        loop.run()
        store.update_stats(search_id, {"wall_seconds": round(time.perf_counter() - started, 3)})
        if not store.set_status(search_id, "finished", holder=holder) and holder is not None:
            raise LeaseLost(f"runner {holder} no longer holds search {search_id}")
    except LeaseLost as exc:
        raise Stopped("lost") from exc
    except Stopped:
        _save_stats(store, search_id, loop)
        raise
    except KeyboardInterrupt:
        if _save_stats(store, search_id, loop):
            store.set_status(search_id, "interrupted", holder=holder)
        raise
    except Exception as exc:
        if _save_stats(store, search_id, loop):
            store.set_status(search_id, "failed", error=f"{type(exc).__name__}: {exc}", holder=holder)
        raise
    return result(store, search_id)


def _save_stats(store: Store, search_id: int, loop: SearchLoop) -> bool:
    """The stats of a loop that stopped short; False, writing nothing, if its runner lost the search."""
    try:
        store.update_stats(search_id, loop.stats_row())
        return True
    except LeaseLost:
        return False


def result(store: Store, search_id: int) -> SearchResult:
    search = store.get_search(search_id)
    spec = SearchSpec.from_stored(search.spec)
    candidates = store.candidates(search_id)
    return SearchResult(search_id, search.status, spec, candidates, pareto_front(candidates, spec),
                        RunStats.from_dict(search.stats), search.error)
