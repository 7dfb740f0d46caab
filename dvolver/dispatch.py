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
    def __init__(self, executor: Executor, spec: SearchSpec, dataset: data.Dataset | None) -> None:
        self.executor, self.spec = executor, spec
        self.in_flight: dict[str, tuple[Any, Work]] = {}  # key -> (the executor's handle, the work)
        self.busy: dict[str, float] = {}  # per worker: seconds spent evaluating
        self.first_submit: float | None = None
        self.last_done: float | None = None
        self.evaluation_cpu_here = 0.0  # CPU of evaluations that ran in this process (the inline executor's)
        self._dataset = dataset
        self._shared_dataset: Any = None  # the executor's handle on it, made at the first submission

    def __contains__(self, key: str) -> bool:
        return key in self.in_flight

    def __len__(self) -> int:
        return len(self.in_flight)

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
        for work in sorted(batch, key=lambda w: -float(w.cheap.get("macs") or 0.0)):
            handle = self.executor.submit(evaluate, work.genome, self.spec, candidate_seed(self.spec.seed, work.key),
                                          self._shared_dataset)
            self.in_flight[work.key] = (handle, work)

    def results(self, keys: set[str], tick: Callable[[], None]) -> Iterator[tuple[Work, Outcome]]:
        """Each result as it arrives, from any batch in flight, until none of `keys` is in flight.
        `tick` is called while waiting; it may raise to stop."""
        if not keys & self.in_flight.keys():
            return
        by_handle = {handle: key for key, (handle, _) in self.in_flight.items()}
        for handle, outcome in self.executor.as_completed(list(by_handle), tick=tick):
            _, work = self.in_flight.pop(by_handle[handle])
            self.busy[outcome.worker] = self.busy.get(outcome.worker, 0.0) + outcome.seconds
            if outcome.worker.endswith(f":{os.getpid()}"):
                self.evaluation_cpu_here += outcome.cpu_seconds
            yield work, outcome
            if not keys & self.in_flight.keys():
                break
        self.last_done = time.perf_counter()

    def cancel_all(self) -> None:
        self.executor.cancel(handle for handle, _ in self.in_flight.values())

    @property
    def evaluation_wall_seconds(self) -> float:
        return (self.last_done or 0.0) - (self.first_submit or 0.0)

    def utilisation(self) -> float | None:
        """Busy seconds over the workers' capacity while evaluations ran."""
        capacity = self.evaluation_wall_seconds * max(1, self.executor.slots)
        return round(sum(self.busy.values()) / capacity, 4) if capacity > 0 else None
