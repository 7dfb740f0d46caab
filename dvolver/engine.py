"""The search loop: ask -> canonicalise -> reuse what the store has -> cheap objectives and
constraints -> submit -> record each result as it arrives -> tell.

Resuming is replaying: the algorithm is seeded and results are told in ask order, so running a
search again from its first ask reproduces every earlier decision. Candidates the store already
holds a final result for are answered from it instead of being trained again; those that were in
flight when the process died are simply submitted again.

Each ask is journalled with the state of the algorithm's random generator before it and the keys it
asked. A replay checks every ask it repeats against the journal, so a resume that would not
reproduce the run (another Dvolver, another pymoo) stops with the generation where it diverged
instead of quietly mixing two searches.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import search_spaces
from search_spaces import Genome, genome_key

from . import data
from .algorithms import make_algorithm
from .ask_tell import Algorithm, CheapValues, Told
from .errors import DvolverError, LeaseLost
from .evaluation import WEIGHTS, candidate_seed, cheap_metrics, evaluate
from .executors import Executor, Outcome
from .objectives import OBJECTIVES, violation
from .pareto import dominates, hypervolume, non_dominated, normalise
from .spec import SearchSpec
from .store import FINAL_STATUSES, Candidate, Store

log = logging.getLogger(__name__)

STALL_LIMIT = 20  # generations in a row with nothing to evaluate: the constraints cannot be met


class EvaluationsFailed(DvolverError):
    """Every evaluation of a search failed."""


class ReplayDiverged(DvolverError):
    """Replaying a search's journal asked for other candidates than the journal records."""


class Stopped(Exception):
    """The caller asked the loop to stop (a cancel, a lost lease, a shutdown); `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Progress:
    evaluations: int
    budget: int
    front_size: int
    hypervolume: float | None
    trained: int = 0
    reused: int = 0
    infeasible: int = 0
    failed: int = 0


@dataclass
class SearchResult:
    search_id: int
    status: str
    spec: SearchSpec
    candidates: list[Candidate]
    front: list[Candidate]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def objectives(self) -> list[str]:
        return self.spec.objectives


def minimised(candidate: Candidate, objectives: list[str]) -> list[float]:
    return [OBJECTIVES[o].minimised(float(candidate.objectives[o])) for o in objectives]


def feasible(candidate: Candidate, spec: SearchSpec) -> bool:
    return candidate.status == "finished" and violation(spec.constraints, candidate.objectives) == 0


def pareto_front(candidates: list[Candidate], spec: SearchSpec) -> list[Candidate]:
    pool = [c for c in candidates if feasible(c, spec)]
    if not pool:
        return []
    mask = non_dominated(np.array([minimised(c, spec.objectives) for c in pool]))
    return [c for c, keep in zip(pool, mask) if keep]


class _Run:
    """One pass of the loop over a search; holds nothing the store does not also hold."""

    def __init__(self, store: Store, search_id: int, executor: Executor,
                 on_progress: Callable[[Progress], None] | None,
                 should_stop: Callable[[], str | None] | None = None) -> None:
        self.store, self.search_id, self.executor = store, search_id, executor
        self.on_progress = on_progress or (lambda p: None)
        self.should_stop = should_stop or (lambda: None)
        search = store.get_search(search_id)
        self.spec = SearchSpec.from_stored(search.spec)
        if search.versions.get("key_scheme") != search_spaces.KEY_SCHEME:
            raise DvolverError(f"search {search_id} was recorded with candidate key scheme "
                               f"{search.versions.get('key_scheme')}, this Dvolver uses {search_spaces.KEY_SCHEME}: "
                               "its stored results cannot be matched; start a new search")
        try:
            self.space = self.spec.search_space()
        except (OSError, ValueError) as exc:
            raise DvolverError(f"search {search_id}: cannot load its search space: {exc}") from None
        self.stopped: str | None = None
        self.recorded_versions = search.versions
        self.asks: list[dict[str, Any]] = []
        self.known: dict[str, Candidate] = {c.key: c for c in store.candidates(search_id) if c.status in FINAL_STATUSES}
        self.results: dict[str, Candidate] = {}  # what this pass has met, in the order met
        self.front: list[Candidate] = []
        self.progress = Progress(0, self.spec.evaluations, 0, None)
        self.hv_box: tuple[np.ndarray, np.ndarray] | None = None
        self.hv_history: list[list[float]] = []
        self.busy: dict[str, float] = {}
        self.in_flight: dict[str, tuple[Any, Genome, dict[str, Any]]] = {}  # key -> (handle, genome, cheap)
        self._cheap_metrics: dict[str, dict[str, Any]] = {}  # per key: surrogate pools ask the same genomes again
        self.first_submit: float | None = None
        self.last_done: float | None = None
        # What the driver itself spends (asking, counting costs, recording): this process's CPU time less
        # the evaluations that ran inside it (the inline executor's).
        self.started, self.started_cpu = time.perf_counter(), time.process_time()
        self.evaluation_cpu_here = 0.0
        self.time_limit_hit = False
        self._dataset: data.Dataset | None = None
        self._shared_dataset: Any = None  # the executor's handle on it, made at the first submission
        if self.spec.table_mode:
            self.input_shape, self.num_classes = None, None
            self.fingerprint = self.space.table.fingerprint  # type: ignore[attr-defined]
        else:
            dataset = data.load(self.spec.dataset)
            self.input_shape, self.num_classes = dataset.input_shape, dataset.num_classes
            self._dataset = dataset
            self.fingerprint = dataset.fingerprint
        recorded = search.stats.get("data_fingerprint")
        if recorded not in (None, self.fingerprint):
            source = self.spec.space_options["table"] if self.spec.table_mode else self.spec.dataset
            raise DvolverError(f"search {search_id} ran on other data: {source} changed since (fingerprint "
                               f"{recorded}, now {self.fingerprint}); start a new search")

    def key(self, genome: Genome) -> str:
        return genome_key(self.space.name, self.space.canonical(genome))

    def run(self) -> None:
        spec = self.spec
        algorithm = make_algorithm(spec.algorithm, self.space, self.key, spec.population, len(spec.objectives),
                                   spec.seed, cheap=self.cheap_values, batch=spec.batch)
        journal = [e["payload"] for e in self.store.events(self.search_id, kinds=("ask",))]
        # With overlap, the next batch is asked while the current one trains, and told one batch late:
        # ask g+1 always comes after tell g-1 and before tell g, whatever finishes first, so the
        # search is the same on any number of workers, and replays the same on resume.
        depth = 2 if spec.overlapped else 1
        window: deque[tuple[list[Genome], int]] = deque()  # asked, not yet told: (genomes, evaluations added)
        idle = 0
        try:
            while True:
                while (len(window) < depth and not self.stopped
                       and self.progress.evaluations + len(self.in_flight) < spec.evaluations):
                    self._check_stop()
                    if self._out_of_time():
                        self.time_limit_hit = True
                        self.stopped = f"the time limit of {spec.time_limit_s:g} s was reached"
                        break
                    genomes = self._ask(algorithm, journal)
                    if not genomes:
                        self.stopped = "the algorithm found no new candidate: the space is exhausted"
                        break
                    window.append((genomes, self._submit(genomes)))
                if not window:
                    break
                genomes, added = window.popleft()
                keys = {self.key(g) for g in genomes}
                self._collect(keys)
                if not keys <= self.results.keys():
                    break  # the budget ran out inside this batch
                self._check_not_all_failed()
                algorithm.tell(genomes, self._answers(genomes))
                self._snapshot()
                idle = 0 if added else idle + 1
                if idle >= STALL_LIMIT and not self.stopped:
                    self.stopped = (f"{STALL_LIMIT} generations in a row brought nothing to evaluate: every new "
                                    "candidate broke a cheap constraint; loosen the constraints")
        finally:
            self.executor.cancel(handle for handle, _, _ in self.in_flight.values())
        if self.stopped:
            log.warning("search %s stopped before its budget: %s", self.search_id, self.stopped)
        self._snapshot(final=True)

    def _ask(self, algorithm: Algorithm, journal: list[dict[str, Any]]) -> list[Genome]:
        """The algorithm's next ask, checked against the journal when the journal already has it."""
        generation = len(self.asks)
        state = None if algorithm.rng is None else json.dumps(algorithm.rng.bit_generator.state, sort_keys=True)
        genomes = algorithm.ask()
        entry = {"generation": generation, "rng_state": state, "keys": [self.key(g) for g in genomes]}
        self.asks.append(entry)
        if generation < len(journal):
            recorded = journal[generation]
            for part in ("rng_state", "keys"):
                if recorded.get(part) != entry[part]:
                    raise ReplayDiverged(
                        f"search {self.search_id}: replaying its journal diverged at generation {generation} "
                        f"({part} differs from the journal's): this Dvolver does not reproduce the run that "
                        f"recorded it (versions then: {self.recorded_versions}); resume it with those versions "
                        "or start a new search")
        elif genomes:
            self.store.append_event(self.search_id, "ask", entry)
        return genomes

    def _submit(self, genomes: list[Genome]) -> int:
        """Scores what is new in one ask: reused, rejected on cheap constraints, or sent to a worker.
        Returns how many evaluations the ask adds (reused ones included).

        The genome evaluated is the first one asked of its class: in table mode, the cell whose row
        is looked up is the cell the algorithm chose.
        """
        spec = self.spec
        submit: list[tuple[str, Genome, dict[str, Any]]] = []
        added = 0
        for genome in genomes:
            key = self.key(genome)
            if key in self.results or key in self.in_flight or any(key == k for k, _, _ in submit):
                continue
            if key in self.known:
                self._accept(self.known[key], reused=True)
                added += 1
                continue
            cheap = self.cheap_metrics(genome)
            cheap_values = {k: float(v) for k, v in cheap.items() if k in OBJECTIVES}
            if violation(spec.constraints, cheap_values, cheap_only=True) > 0:
                self._accept(self.store.record(self.search_id, key, genome, "infeasible", cheap_values, cheap))
                continue
            if self.progress.evaluations + len(self.in_flight) + len(submit) >= spec.evaluations:
                continue
            self.store.record(self.search_id, key, genome, "pending", cheap_values, cheap)
            submit.append((key, genome, cheap))
        if submit:
            self._send(submit)
        return added + len(submit)

    def cheap_metrics(self, genome: Genome) -> dict[str, Any]:
        key = self.key(genome)
        if key not in self._cheap_metrics:
            self._cheap_metrics[key] = cheap_metrics(genome, self.spec, self.input_shape, self.num_classes)
        return self._cheap_metrics[key]

    def cheap_values(self, genome: Genome) -> CheapValues:
        """The algorithm's view of a genome before training: its cheap objectives, minimised (NaN for
        the rest), and how far it breaks the constraints on them."""
        values = {k: float(v) for k, v in self.cheap_metrics(genome).items() if k in OBJECTIVES}
        known = [OBJECTIVES[o].minimised(values[o]) if OBJECTIVES[o].cheap and o in values else np.nan
                 for o in self.spec.objectives]
        return CheapValues(np.array(known, dtype=float), violation(self.spec.constraints, values, cheap_only=True))

    def _out_of_time(self) -> bool:
        """Past the spec's time limit, once at least one batch is out (as Optuna's timeout runs one trial)."""
        limit = self.spec.time_limit_s
        return limit is not None and bool(self.asks) and time.perf_counter() - self.started >= limit

    def _check_stop(self) -> None:
        reason = self.should_stop()
        if reason:
            raise Stopped(reason)

    def _check_not_all_failed(self) -> None:
        """A search whose every evaluation fails is broken (bad data, bad settings): say so early."""
        p = self.progress
        if p.failed and p.failed == p.evaluations >= min(self.spec.population, self.spec.evaluations):
            first = next(c.error for c in self.results.values() if c.status == "failed")
            raise EvaluationsFailed(f"search {self.search_id}: all {p.failed} evaluations so far failed; "
                                    f"the first error: {first}")

    def _send(self, batch: list[tuple[str, Genome, dict[str, Any]]]) -> None:
        if self.first_submit is None:
            self.first_submit = time.perf_counter()
        if self._dataset is not None and self._shared_dataset is None:
            # The data this process loaded goes to the workers, rather than every worker reading the
            # dataset's path: a worker on another machine may not have that file.
            self._shared_dataset = self.executor.share(self._dataset)
        # Costliest first: the long trainings start early and the short ones fill the gaps after them,
        # so no worker sits idle at the end of a batch waiting for one long candidate. (Only the
        # order of work changes: each candidate's seed is its own, and results are told in ask order.)
        for key, genome, cheap in sorted(batch, key=lambda item: -float(item[2].get("macs") or 0.0)):
            handle = self.executor.submit(evaluate, genome, self.spec, candidate_seed(self.spec.seed, key),
                                          self._shared_dataset)
            self.in_flight[key] = (handle, genome, cheap)

    def _collect(self, keys: set[str]) -> None:
        """Records results as they arrive, from any batch in flight, until none of `keys` is in flight."""
        if not keys & self.in_flight.keys():
            return
        by_handle = {handle: key for key, (handle, _, _) in self.in_flight.items()}
        for handle, outcome in self.executor.as_completed(list(by_handle), tick=self._check_stop):
            self._record(by_handle[handle], outcome)
            if not keys & self.in_flight.keys():
                break
        self.last_done = time.perf_counter()

    def _record(self, key: str, outcome: Outcome) -> None:
        _, genome, cheap = self.in_flight.pop(key)
        self.busy[outcome.worker] = self.busy.get(outcome.worker, 0.0) + outcome.seconds
        if outcome.worker.endswith(f":{os.getpid()}"):
            self.evaluation_cpu_here += outcome.cpu_seconds
        value = dict(outcome.value or {})
        weights = value.pop(WEIGHTS, None)
        metrics = cheap | value
        if outcome.node:
            metrics["ray_node"] = outcome.node
        if outcome.lost:
            metrics |= {"attempts": outcome.attempts, "lost_workers": list(outcome.lost)}
        values = {k: float(v) for k, v in metrics.items() if k in OBJECTIVES}
        status = "failed" if outcome.error else "finished"
        self._accept(self.store.record(self.search_id, key, genome, status, values, metrics, outcome.error,
                                       outcome.worker, outcome.seconds, weights))

    def _accept(self, record: Candidate, reused: bool = False) -> None:
        self.results[record.key] = record
        p = self.progress
        if record.status == "infeasible":
            p.infeasible += 1
        else:
            p.evaluations += 1
            p.failed += record.status == "failed"
            if reused:
                p.reused += 1
            else:
                p.trained += 1
        if self._update_front(record) and not reused:
            self.store.append_event(self.search_id, "front", {"front": [c.id for c in self.front],
                                                              "evaluations": p.evaluations})
        p.front_size = len(self.front)
        self.on_progress(p)

    def _update_front(self, record: Candidate) -> bool:
        """Adds the record to the front if nothing there dominates it; True when the front changed."""
        if not feasible(record, self.spec):
            return False
        point = minimised(record, self.spec.objectives)
        if any(dominates(minimised(c, self.spec.objectives), point) for c in self.front):
            return False
        self.front = [c for c in self.front if not dominates(point, minimised(c, self.spec.objectives))] + [record]
        return True

    def _answers(self, genomes: list[Genome]) -> Told:
        records = [self.results[self.key(genome)] for genome in genomes]
        F = [[OBJECTIVES[o].minimised(r.objectives[o]) if o in r.objectives else np.inf for o in self.spec.objectives]
             for r in records]
        G = [np.inf if r.status == "failed" else violation(self.spec.constraints, r.objectives) for r in records]
        return Told(np.array(F, dtype=float), np.array(G, dtype=float), tuple(r.status for r in records))

    def _snapshot(self, final: bool = False) -> None:
        front = self.front
        if front:
            points = np.array([minimised(c, self.spec.objectives) for c in front])
            if self.hv_box is None:
                # Normalise by the range of what was evaluated up to the first front, and keep that
                # box: hypervolumes of one search then compare across its whole history.
                seen = np.array([minimised(c, self.spec.objectives) for c in self.results.values()
                                 if feasible(c, self.spec)])
                self.hv_box = seen.min(axis=0), seen.max(axis=0)
            ideal, nadir = self.hv_box
            hv = hypervolume(normalise(points, ideal, nadir), np.full(points.shape[1], 1.1))
            self.progress.hypervolume = hv
            self.hv_history.append([self.progress.evaluations, hv])
        self.progress.front_size = len(front)
        self.on_progress(self.progress)
        self.store.update_stats(self.search_id, self.stats())
        if not final:
            p = self.progress
            self.store.append_event(self.search_id, "generation", {
                "evaluations": p.evaluations, "front_size": p.front_size, "hypervolume": p.hypervolume,
                "front": [c.id for c in front]})

    def stats(self) -> dict[str, Any]:
        p = self.progress
        busy_total = sum(self.busy.values())
        driver_cpu = max(0.0, time.process_time() - self.started_cpu - self.evaluation_cpu_here)
        wall = (self.last_done or 0.0) - (self.first_submit or 0.0)
        capacity = wall * max(1, self.executor.slots)
        return {
            "data_fingerprint": self.fingerprint,
            "input_shape": self.input_shape,
            "num_classes": self.num_classes,
            "stopped_early": self.stopped,
            "evaluations": p.evaluations,
            "budget": p.budget,
            "trained": p.trained,
            "reused": p.reused,
            "infeasible": p.infeasible,
            "failed": p.failed,
            "front_size": p.front_size,
            "hypervolume": p.hypervolume,
            "hypervolume_history": self.hv_history,
            "hypervolume_box": None if self.hv_box is None else [b.tolist() for b in self.hv_box],
            "workers": self.executor.slots,
            "busy_seconds": {w: round(s, 3) for w, s in self.busy.items()},
            "evaluation_wall_seconds": round(wall, 3),
            "utilisation": round(busy_total / capacity, 4) if capacity > 0 else None,
            "driver_cpu_seconds": round(driver_cpu, 3),
            "driver_cpu_seconds_per_evaluation": round(driver_cpu / max(1, p.trained), 4),
            "time_limit_hit": self.time_limit_hit,
        }


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
    loop = _Run(store, search_id, executor, on_progress, should_stop)
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


def _save_stats(store: Store, search_id: int, loop: _Run) -> bool:
    """The stats of a loop that stopped short; False, writing nothing, if its runner lost the search."""
    try:
        store.update_stats(search_id, loop.stats())
        return True
    except LeaseLost:
        return False


def result(store: Store, search_id: int) -> SearchResult:
    search = store.get_search(search_id)
    spec = SearchSpec.from_stored(search.spec)
    candidates = store.candidates(search_id)
    return SearchResult(search_id, search.status, spec, candidates, pareto_front(candidates, spec), search.stats)
