"""The runner: a process that claims queued searches from the store and runs them on the engine.

Several runners may share one database; the store's conditional claim makes sure each search has
one runner at a time. A runner holds a lease on its search and renews it while it works. If the
runner dies, the lease runs out and any runner takes the search over; a runner restarted under
the same name takes it back at once. The engine then replays the journal, so finished
candidates are reused, not retrained.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from dvolver.api import make_executor
from dvolver.engine import Stopped, run
from dvolver.errors import DvolverError
from dvolver.executors import RayExecutor
from dvolver.spec import SearchSpec
from dvolver.store import Search, Store

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
        self._reason: str | None = None

    def reason(self) -> str | None:
        if self.shutdown.is_set():
            return "shutdown"
        return self._reason

    def run(self) -> None:
        renew_every = self.lease_seconds / 3
        last_renewal = time.monotonic()
        while not self.done.wait(min(1.0, renew_every)):
            try:
                if time.monotonic() - last_renewal >= renew_every:
                    if not self.store.renew_lease(self.search_id, self.runner, self.lease_seconds):
                        self._reason = "lost"
                        return
                    last_renewal = time.monotonic()
                if self.store.get_search(self.search_id).cancel_requested:
                    self._reason = "cancelled"
                    return
            except Exception:  # a database hiccup: the next round tries again, the lease has slack
                log.warning("search %s: cannot reach the store to renew the lease", self.search_id, exc_info=True)


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
        self._ray: RayExecutor | None = None

    def serve(self, once: bool = False) -> None:
        """Claims and runs searches until `shutdown` is set (or, with `once`, until the queue is empty)."""
        log.info("runner %s serving %s", self.name, self.store.display_url)
        try:
            while not self.shutdown.is_set():
                search = self.store.claim_search(self.name, self.lease_seconds)
                if search is None:
                    if once:
                        return
                    self.shutdown.wait(self.poll_seconds)
                    continue
                self.run_claimed(search)
        finally:
            if self._ray is not None:
                self._ray.shutdown()

    def run_claimed(self, search: Search) -> str:
        """Runs a claimed search; returns what became of it."""
        log.info("runner %s: search %s claimed", self.name, search.id)
        watch = _Watch(self.store, search.id, self.name, self.lease_seconds, self.shutdown)
        watch.start()
        pool: Any = None
        try:
            spec = SearchSpec.from_stored(search.spec)
            self._start_ray(spec)
            pool = make_executor(spec, self.executor, self.workers, self.ray_address)
            run(self.store, search.id, pool, should_stop=watch.reason)
            outcome = "finished"
        except Stopped as stop:
            outcome = self._stopped(search.id, stop.reason)
        except Exception as exc:  # the engine has recorded the failure on the search; keep serving others
            log.error("runner %s: search %s failed: %s", self.name, search.id, exc)
            self._fail_unrecorded(search.id, exc)
            outcome = "failed"
        finally:
            watch.done.set()
            if pool is not None:
                pool.shutdown()
        log.info("runner %s: search %s %s", self.name, search.id, outcome)
        return outcome

    def _stopped(self, search_id: int, reason: str) -> str:
        if reason == "cancelled":
            self.store.set_status(search_id, "cancelled")
        elif reason == "shutdown":
            self.store.release(search_id, self.name)  # back to the queue, for this or another runner
        return reason  # "lost": another runner has it now; its status is theirs to set

    def _fail_unrecorded(self, search_id: int, exc: Exception) -> None:
        """Errors before the engine started (a space that no longer loads, no Ray) leave the search
        claimed but still marked running: record them, or it would wait for a lease to expire."""
        try:
            if self.store.get_search(search_id).status == "running":
                self.store.set_status(search_id, "failed", error=f"{type(exc).__name__}: {exc}")
        except DvolverError:
            pass

    def _start_ray(self, spec: SearchSpec) -> None:
        """One Ray for the runner's lifetime, started when the first search needs it."""
        wants_ray = self.executor == "ray" or (self.executor == "auto" and (not spec.table_mode or self.ray_address))
        if wants_ray and self._ray is None:
            try:
                self._ray = RayExecutor(workers=self.workers, address=self.ray_address)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {self.ray_address}" if self.ray_address else "a local Ray"
                raise DvolverError(f"cannot start {where}: {exc}") from exc
