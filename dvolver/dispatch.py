"""Getting candidates trained: the overlap window of asks, the order work goes out in, and where the time went.

The dispatcher owns everything in flight on the executor. It knows nothing of the algorithm or of
the store: the loop hands it (key, genome, cheap metrics) to train and takes back each Outcome.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from search_spaces import Genome

from . import data
from .evaluation import candidate_seed, evaluate
from .executors import Executor, Outcome
from .spec import SearchSpec


@dataclass(frozen=True)
class Work:
    key: str
    genome: Genome
    cheap: dict[str, Any]  # what was counted before training: recorded with the result
    rung: int | None = None  # early stopping: the epochs this rung trains up to
    checkpoint: bytes | None = None  # early stopping: what the rung before returned, to continue from


def costliest_first(batch: list[Work]) -> list[Work]:
    """The order a batch goes out in, by counted MACs: see Dispatcher.send."""
    return sorted(batch, key=lambda w: -float(w.cheap.get("macs") or 0.0))


class OverlapWindow:
    """The asks made and not yet told, oldest first.

    With overlap (depth 2), the next batch is asked while the current one trains and is told one
    batch late: ask g+1 always comes after tell g-1 and before tell g, whatever finishes first, so
    the search is the same on any number of workers, and replays the same on resume."""

    def __init__(self, overlapped: bool) -> None:
        self.depth = 2 if overlapped else 1
        self._asked: deque[tuple[list[Genome], int]] = deque()  # (genomes, evaluations they added)

    def has_room(self) -> bool:
        return len(self._asked) < self.depth

    def push(self, genomes: list[Genome], added: int) -> None:
        self._asked.append((genomes, added))

    def pop(self) -> tuple[list[Genome], int] | None:
        return self._asked.popleft() if self._asked else None


class Dispatcher:
    """`ordered`: results are handed back in the order their work was sent (or answered), whatever order
    they finish in. Early stopping decides who goes on from the results at a rung so far, so the order
    they are seen in must not depend on the workers: the same spec then gives the same search on any
    number of them. A result that finishes early waits for those sent before it."""

    def __init__(self, executor: Executor, spec: SearchSpec, dataset: data.Dataset | None,
                 ordered: bool = False) -> None:
        self.executor, self.spec, self.ordered = executor, spec, ordered
        self.in_flight: dict[str, tuple[Any, Work]] = {}  # key -> (the executor's handle, the work)
        self._ready: dict[str, tuple[Work, Outcome]] = {}  # done (or answered), not yet handed back
        self._order: deque[str] = deque()  # ordered: keys not yet handed back, in the order sent
        self._waiting_on: list[Any] | None = None  # the handles results() waits on; new work joins it
        # Called with each result as it arrives, before its turn to be handed back: what must be recorded
        # then, so that a result waiting behind a slower one is not lost with the process.
        self.on_arrival: Callable[[Work, Outcome], None] | None = None
        self.busy: dict[str, float] = {}  # per worker: seconds spent evaluating
        self.first_submit: float | None = None
        self.last_done: float | None = None
        self.evaluation_cpu_here = 0.0  # CPU of evaluations that ran in this process (the inline executor's)
        self._dataset = dataset
        self._shared_dataset: Any = None  # the executor's handle on it, made at the first submission

    def __contains__(self, key: str) -> bool:
        return key in self.in_flight or key in self._ready

    def __len__(self) -> int:
        return len(self.in_flight) + len(self._ready)

    def send(self, batch: list[Work]) -> None:
        if self.first_submit is None:
            self.first_submit = time.perf_counter()
        if self._dataset is not None and self._shared_dataset is None:
            # The data this process loaded goes to the workers, rather than every worker reading the
            # dataset's path: a worker on another machine may not have that file.
            self._shared_dataset = self.executor.share(self._dataset)
        # Costliest first: the long trainings start early and the short ones fill the gaps after them,
        # so no worker sits idle at the end of a batch waiting for one long candidate. (Only the
        # order of work changes: each candidate's seed is its own, and results are told in ask order.)
        for work in costliest_first(batch):
            rung = () if work.rung is None else (work.rung, work.checkpoint)
            handle = self.executor.submit(evaluate, work.genome, self.spec, candidate_seed(self.spec.seed, work.key),
                                          self._shared_dataset, *rung)
            self.in_flight[work.key] = (handle, work)
            self._order.append(work.key)
            if self._waiting_on is not None:
                self._waiting_on.append(handle)

    def answer(self, work: Work, outcome: Outcome) -> None:
        """Hands `outcome` back for `work` in its turn, without running it (the store already holds it)."""
        self._ready[work.key] = (work, outcome)
        self._order.append(work.key)

    def results(self, keys: set[str], tick: Callable[[], None]) -> Iterator[tuple[Work, Outcome]]:
        """Each result, from any batch in flight (in the order sent when `ordered`), until none of `keys`
        is in flight. Work sent while this runs is waited on too. `tick` is called while waiting; it
        may raise to stop."""
        yield from self._release(keys)
        if not keys & self.__keys():
            return
        by_handle = {handle: key for key, (handle, _) in self.in_flight.items()}
        self._waiting_on = list(by_handle)
        try:
            for handle, outcome in self.executor.as_completed(self._waiting_on, tick=tick):
                key = by_handle.get(handle) or next(k for k, (h, _) in self.in_flight.items() if h is handle)
                _, work = self.in_flight.pop(key)
                self.busy[outcome.worker] = self.busy.get(outcome.worker, 0.0) + outcome.seconds
                if outcome.worker.endswith(f":{os.getpid()}"):
                    self.evaluation_cpu_here += outcome.cpu_seconds
                self._ready[key] = (work, outcome)
                if self.on_arrival is not None:
                    self.on_arrival(work, outcome)
                yield from self._release(keys)
                if not keys & self.__keys():
                    break
        finally:
            self._waiting_on = None
        self.last_done = time.perf_counter()
        yield from self._release(keys)

    def __keys(self) -> set[str]:
        return self.in_flight.keys() | self._ready.keys()

    def _release(self, keys: set[str]) -> Iterator[tuple[Work, Outcome]]:
        """What may be handed back now: anything done, or, when ordered, the done ones at the head of
        the order. What the caller sends or answers meanwhile is released in its turn."""
        while self._ready and keys & self.__keys():
            if self.ordered:
                if self._order[0] not in self._ready:
                    return
                key = self._order.popleft()
            else:
                key = next(iter(self._ready))
                self._order.remove(key)
            yield self._ready.pop(key)

    def cancel_all(self) -> None:
        self.executor.cancel(handle for handle, _ in self.in_flight.values())

    @property
    def evaluation_wall_seconds(self) -> float:
        return (self.last_done or 0.0) - (self.first_submit or 0.0)

    def utilisation(self) -> float | None:
        """Busy seconds over the workers' capacity while evaluations ran."""
        capacity = self.evaluation_wall_seconds * max(1, self.executor.slots)
        return round(sum(self.busy.values()) / capacity, 4) if capacity > 0 else None
