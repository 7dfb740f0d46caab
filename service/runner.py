"""The runner: a process that claims queued searches from the store and runs them on the engine, and
queued final trainings, which it runs side by side on its workers.

Several runners may share one database; the store's conditional claim makes sure each search, and
each training, has one runner at a time. A runner holds a lease on what it runs and renews it while
it works. If the runner dies, the lease runs out and any runner (a restarted one included) takes the
work over: the engine replays a search's journal, so finished candidates are reused, not retrained,
and a training resumes from its last checkpointed epoch.

A runner looks for a search first. With none queued it claims trainings, as many as its workers take,
and goes on filling freed workers with trainings until none is queued or in flight; then it looks for
searches again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from dvolver.api import make_executor, make_training_executor
from dvolver.engine import Stopped, run
from dvolver.errors import DvolverError
from dvolver.spec import SearchSpec
from dvolver.store import Search, Store, Training
from dvolver.training_runs import Stopped as StoppedTrainings
from dvolver.training_runs import TrainingRuns

log = logging.getLogger(__name__)


def default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _Watch(threading.Thread):
    """Renews the lease and notices cancel requests while the engine works; the engine asks
    `reason()` between results and stops when it returns one."""

    def __init__(self, store: Store, search_id: int, runner: str, lease_seconds: float,
                 shutdown: threading.Event) -> None:
        super().__init__(daemon=True, name=f"lease-{search_id}")
        self.store, self.search_id, self.runner = store, search_id, runner
        self.lease_seconds, self.shutdown = lease_seconds, shutdown
        self.done = threading.Event()
        self._lost = False
        self._cancelled = False

    def reason(self) -> str | None:
        if self._lost:
            return "lost"
        if self._cancelled:
            return "cancelled"
        return "shutdown" if self.shutdown.is_set() else None

    def run(self) -> None:
        # Renewal goes on until the engine has stopped, whatever the reason: a search being cancelled
        # is still this runner's until its status says otherwise.
        renew_every = self.lease_seconds / 3
        last_renewal = time.monotonic()
        while not self.done.wait(min(1.0, renew_every)):
            try:
                if time.monotonic() - last_renewal >= renew_every:
                    if not self.store.renew_lease(self.search_id, self.runner, self.lease_seconds):
                        self._lost = True
                        return
                    last_renewal = time.monotonic()
                if not self._cancelled:
                    self._cancelled = self.store.get_search(self.search_id).cancel_requested
            except Exception:  # a database hiccup: try again next round; the lease has slack
                log.warning("search %s: cannot reach the store to renew the lease", self.search_id, exc_info=True)
                if time.monotonic() - last_renewal > self.lease_seconds:
                    self._lost = True  # another runner may have taken the search by now
                    return


class _TrainingWatch(threading.Thread):
    """Renews the leases of the trainings in flight while they train."""

    def __init__(self, store: Store, runs: TrainingRuns, runner: str, lease_seconds: float) -> None:
        super().__init__(daemon=True, name="training-leases")
        self.store, self.runs, self.runner, self.lease_seconds = store, runs, runner, lease_seconds
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.lease_seconds / 3):
            try:
                held = self.runs.held()
                lost = set(held) - self.store.renew_training_leases(held, self.runner, self.lease_seconds)
                if lost:  # its next write raises LeaseLost, and this runner lets it go
                    log.warning("runner %s: lost the lease on training(s) %s", self.runner, sorted(lost))
            except Exception:  # a database hiccup: try again next round; the lease has slack
                log.warning("runner %s: cannot reach the store to renew training leases", self.runner, exc_info=True)


class Runner:
    def __init__(self, db: str | None = None, name: str | None = None, lease_seconds: float = 30.0,
                 poll_seconds: float = 1.0, workers: int = 2, ray_address: str | None = None,
                 executor: str = "auto") -> None:
        if lease_seconds < 3:
            raise DvolverError(f"the lease must be at least 3 seconds, got {lease_seconds}")
        self.store = Store(db)
        self.name = name or default_name()
        self.lease_seconds, self.poll_seconds = lease_seconds, poll_seconds
        self.workers, self.ray_address, self.executor = workers, ray_address, executor
        self.shutdown = threading.Event()
        self._ray_owner: Any = None

    def serve(self, once: bool = False) -> None:
        """Claims and runs searches until `shutdown` is set (or, with `once`, until the queue is empty)."""
        log.info("runner %s serving %s", self.name, self.store.display_url)
        try:
            while not self.shutdown.is_set():
                try:
                    search = self.store.claim_search(self.name, self.lease_seconds)
                except Exception:  # the database is away: wait and try again rather than exit
                    log.warning("runner %s: cannot claim from the store", self.name, exc_info=True)
                    self.shutdown.wait(max(self.poll_seconds, 5.0))
                    continue
                if search is None:
                    if self.run_trainings():
                        continue
                    if once:
                        return
                    self.shutdown.wait(self.poll_seconds)
                    continue
                self.run_claimed(search)
        finally:
            if self._ray_owner is not None:
                self._ray_owner.shutdown()

    def run_claimed(self, search: Search) -> str:
        """Runs a claimed search; returns what became of it."""
        log.info("runner %s: search %s claimed", self.name, search.id)
        watch = _Watch(self.store, search.id, self.name, self.lease_seconds, self.shutdown)
        watch.start()
        pool: Any = None
        try:
            spec = SearchSpec.from_stored(search.spec)
            pool = make_executor(spec, self.executor, self.workers, self.ray_address)
            if getattr(pool, "owns_ray", False) and self._ray_owner is None:
                self._ray_owner = pool  # the Ray it started serves every later search, until the runner stops
            run(self.store, search.id, pool, should_stop=watch.reason, holder=self.name)
            outcome = "finished"
        except Stopped as stop:
            outcome = self._stopped(search.id, stop.reason)
        except Exception as exc:  # recorded on the search (below, if the engine had not started); keep serving
            log.error("runner %s: search %s failed: %s", self.name, search.id, exc)
            self._record_failure(search.id, exc)
            outcome = "failed"
        finally:
            watch.done.set()
            if pool is not None and pool is not self._ray_owner:
                pool.shutdown()
        log.info("runner %s: search %s %s", self.name, search.id, outcome)
        return outcome

    def run_trainings(self) -> bool:
        """Claims queued trainings and runs them, a worker each, claiming more as workers free up, until
        none is queued or in flight (or the runner shuts down, handing those in flight back to the queue).
        False when there was none to claim. The workers are made for the first training's search."""
        try:
            first = self.store.claim_training(self.name, self.lease_seconds)
        except Exception:  # the database is away: serve() waits and tries again
            log.warning("runner %s: cannot claim a training from the store", self.name, exc_info=True)
            return False
        if first is None:
            return False
        claimed: list[Training] = [first]

        def source() -> Training | None:
            if claimed:
                return claimed.pop()
            return None if self.shutdown.is_set() else self.store.claim_training(self.name, self.lease_seconds)

        pool: Any = None
        runs: TrainingRuns | None = None
        watch: _TrainingWatch | None = None
        try:
            spec = SearchSpec.from_stored(self.store.get_search(first.search_id).spec)
            pool = make_training_executor(spec, self.workers, self.executor, self.workers, self.ray_address)
            if getattr(pool, "owns_ray", False) and self._ray_owner is None:
                self._ray_owner = pool
            runs = TrainingRuns(self.store, pool, self.name,
                                should_stop=lambda: "shutdown" if self.shutdown.is_set() else None)
            watch = _TrainingWatch(self.store, runs, self.name, self.lease_seconds)
            watch.start()
            ended = runs.run(source)
            log.info("runner %s: trainings %s", self.name, ended)
        except StoppedTrainings:
            log.info("runner %s: shutting down; the trainings in flight went back to the queue", self.name)
        except Exception as exc:  # the workers did not start: the claimed trainings fail, saying why
            log.error("runner %s: trainings stopped: %s", self.name, exc)
            held = runs.held() if runs is not None else [first.id]
            for training_id in held or [first.id]:
                self.store.stop_training(training_id, "failed", f"{type(exc).__name__}: {exc}", self.name)
        finally:
            if watch is not None:
                watch.done.set()
            if pool is not None and pool is not self._ray_owner:
                pool.shutdown()
        return True

    def _stopped(self, search_id: int, reason: str) -> str:
        if reason == "cancelled":
            self.store.set_status(search_id, "cancelled", holder=self.name)
        elif reason == "shutdown":
            self.store.release(search_id, self.name)  # back to the queue, for this or another runner
        return reason  # "lost": another runner has it now; its status is theirs to set

    def _record_failure(self, search_id: int, exc: Exception) -> None:
        """Errors before the engine started (a space that no longer loads, no Ray) would leave the
        search running under this runner until its lease ran out: mark it failed now."""
        try:
            self.store.set_status(search_id, "failed", error=f"{type(exc).__name__}: {exc}", holder=self.name)
        except Exception:
            log.warning("runner %s: cannot record the failure of search %s", self.name, search_id, exc_info=True)
