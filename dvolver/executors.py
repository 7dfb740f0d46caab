"""Where evaluations run: Ray (a local instance, or a cluster at an address), local processes, or inline.

An executor has `submit(fn, *args) -> handle`, `as_completed(handles)` yielding each handle with
its `Outcome` as soon as it is done, `share(value)` (a value many submissions take, sent to the
workers once), `cancel(handles)` and `shutdown()`. A failing evaluation
comes back as an Outcome with an error, never as an exception: one bad candidate must not stop a
search. An evaluation whose worker died (killed, out of memory, its node lost) is not the
candidate's fault: Ray runs it again, a bounded number of times, and the Outcome says how often.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    value: Any
    error: str | None
    worker: str
    seconds: float
    attempts: int = 1
    lost: tuple[str, ...] = ()  # why each earlier attempt's worker was lost
    node: str | None = None  # the Ray node that ran it
    cpu_seconds: float = 0.0  # CPU time of the process that ran it, while it ran

    def worker_metrics(self) -> dict[str, Any]:
        """What a candidate's metrics keep of where it ran: its Ray node, and the workers lost on the way."""
        metrics: dict[str, Any] = {"ray_node": self.node} if self.node else {}
        if self.lost:
            metrics |= {"attempts": self.attempts, "lost_workers": list(self.lost)}
        return metrics


def timed_call(fn: Callable[..., Any], *args: Any) -> Outcome:
    worker = f"{socket.gethostname()}:{os.getpid()}"
    node = _ray_node()
    start, cpu = time.perf_counter(), time.process_time()
    try:
        value = fn(*args)
    except Exception as exc:  # an evaluation may fail in any way; the search records it and goes on
        log.debug("evaluation failed: %s", traceback.format_exc())
        return Outcome(None, f"{type(exc).__name__}: {exc}", worker, time.perf_counter() - start, node=node,
                       cpu_seconds=time.process_time() - cpu)
    return Outcome(value, None, worker, time.perf_counter() - start, node=node, cpu_seconds=time.process_time() - cpu)


def lost_for_good(lost: list[str]) -> Outcome:
    """The outcome of an evaluation whose worker was lost on every attempt: `lost` holds why, in order."""
    return Outcome(None, f"the worker was lost on all {len(lost)} attempts; last: {lost[-1]}", "lost worker", 0.0,
                   len(lost), tuple(lost))


def _ray_node() -> str | None:
    """The Ray node this process runs on; host names alone do not tell apart nodes that share a host
    (containers, or several `ray start` on one machine)."""
    ray = sys.modules.get("ray")  # only where Ray is already loaded: inline runs stay free of it
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


class Executor(Protocol):
    slots: int

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def share(self, value: Any) -> Any: ...

    def as_completed(self, handles: Iterable[Any], tick: Callable[[], None] | None = None
                     ) -> Iterator[tuple[Any, Outcome]]:
        """Each handle with its Outcome once done. Given a list, handles appended to it while this runs are
        waited on too: early stopping sends a candidate's next rung while results are handed back."""
        ...

    def cancel(self, handles: Iterable[Any]) -> None: ...

    def shutdown(self) -> None: ...


class _Call:
    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args


class _Task:
    """One evaluation sent to workers: its current attempt (a Ray ObjectRef or a pool's Future), and why
    each earlier attempt's worker was lost."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self.attempt: Any = None
        self.lost: list[str] = []


class _Retrying:
    """What the process and Ray executors share: each evaluation is a _Task whose current attempt runs on a
    worker. An attempt whose worker was lost is sent again, at most `max_retries` more times, and then comes
    back as lost_for_good; an attempt that failed otherwise comes back as a failed Outcome, not retried.

    A subclass says how an attempt is sent (`_send`), waited for (`_wait`) and read (`_result`), which
    errors mean its worker was lost (`_lost_reason`), and what to do once one was (`_after_lost`)."""

    max_retries: int
    _lost_words = "an evaluation's worker was lost"  # how the retry warning says it

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        task = _Task(fn, args)
        self._send(task)
        return task

    def as_completed(self, handles: Iterable[Any], tick: Callable[[], None] | None = None
                     ) -> Iterator[tuple[Any, Outcome]]:
        """`tick` is called about once a second while waiting: a caller may raise from it to stop. Handles
        appended to a list `handles` meanwhile are waited on too."""
        handles = handles if isinstance(handles, list) else list(handles)
        tasks: dict[Any, _Task] = {}
        joined = 0
        while True:
            tasks.update((task.attempt, task) for task in handles[joined:])
            joined = len(handles)
            if not tasks:
                break
            if tick:
                tick()
            lost: list[_Task] = []
            for attempt in self._wait(list(tasks), 1.0 if tick else None):
                task = tasks.pop(attempt)
                try:
                    outcome = self._result(attempt)
                except Exception as exc:  # timed_call catches the evaluation's own errors: this is the worker's
                    reason = self._lost_reason(exc)
                    if reason is None:  # the task itself failed, as it would again
                        yield task, Outcome(None, f"{type(exc).__name__}: {_first_line(exc)}", "unknown", 0.0,
                                            len(task.lost) + 1, tuple(task.lost))
                    else:
                        task.lost.append(reason)
                        lost.append(task)
                    continue
                yield task, replace(outcome, attempts=len(task.lost) + 1, lost=tuple(task.lost))
            if lost:
                self._after_lost()
            for task in lost:
                if len(task.lost) <= self.max_retries:
                    log.warning("%s (%s); running it again (attempt %d of %d)", self._lost_words, task.lost[-1],
                                len(task.lost) + 1, self.max_retries + 1)
                    self._send(task)
                    tasks[task.attempt] = task
                else:
                    yield task, lost_for_good(task.lost)

    def _send(self, task: _Task) -> None:
        """Starts a new attempt of `task` on a worker; sets task.attempt."""
        raise NotImplementedError

    def _wait(self, attempts: list[Any], timeout: float | None) -> Iterable[Any]:
        """The attempts done within `timeout` seconds (None: until one is)."""
        raise NotImplementedError

    def _result(self, attempt: Any) -> Outcome:
        """A done attempt's Outcome, or the error that ended it."""
        raise NotImplementedError

    def _lost_reason(self, exc: Exception) -> str | None:
        """Why the attempt's worker was lost, when `exc` says it was; None when the attempt itself failed."""
        raise NotImplementedError

    def _after_lost(self) -> None:
        """Called once lost workers were found, before their attempts are sent again."""


class InlineExecutor:
    """Runs each evaluation in this process, in submission order: for debugging and tests."""

    slots = 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return _Call(fn, args)

    def share(self, value: Any) -> Any:
        return value

    def as_completed(self, handles: Iterable[Any], tick: Callable[[], None] | None = None
                     ) -> Iterator[tuple[Any, Outcome]]:
        for handle in handles:  # a list that grows meanwhile: its new handles run in their turn
            if tick:
                tick()
            yield handle, timed_call(handle.fn, *handle.args)

    def cancel(self, handles: Iterable[Any]) -> None:
        pass

    def shutdown(self) -> None:
        pass


@dataclass(frozen=True)
class _SharedRef:
    """Stands in a submission's arguments for a value every worker process received once at its start."""

    index: int


_WORKER_SHARED: dict[int, Any] = {}


def _start_worker(shared: dict[int, Any]) -> None:
    _WORKER_SHARED.update(shared)


def _call_in_worker(fn: Callable[..., Any], args: tuple[Any, ...]) -> Outcome:
    resolved = tuple(_WORKER_SHARED[a.index] if isinstance(a, _SharedRef) else a for a in args)
    return timed_call(fn, *resolved)


class ProcessExecutor(_Retrying):
    """Evaluations in `workers` local worker processes, without Ray.

    For a machine where Ray is not installed or cannot start: each evaluation runs in a spawned
    process (a fresh interpreter, so CUDA works there), `workers` at a time, all of them on this
    machine's CPUs and GPUs; with `gpus_per_eval` > 0 every worker trains on the GPU, which they
    share with no accounting (Ray's fractional GPUs are the same sharing, with admission control).
    A value given to `share` reaches each worker once, when it starts. A worker that dies takes the
    pool with it: the evaluations then in flight are each counted as a lost attempt and submitted
    again to a new pool, at most `max_retries` more times, as on Ray.
    """

    _lost_words = "an evaluation's worker process died"

    def __init__(self, workers: int = 2, max_retries: int = 2) -> None:
        self.slots = workers
        self.max_retries = max_retries
        self._shared: dict[int, Any] = {}
        self._pool: cf.ProcessPoolExecutor | None = None

    def _pool_now(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(self.slots, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_start_worker, initargs=(dict(self._shared),))
        return self._pool

    def share(self, value: Any) -> Any:
        ref = _SharedRef(len(self._shared))
        self._shared[ref.index] = value
        if self._pool is not None:  # workers started before this value existed cannot resolve it
            self._stop_pool()
        return ref

    def _send(self, task: _Task) -> None:
        try:
            task.attempt = self._pool_now().submit(_call_in_worker, task.fn, task.args)
        except BrokenProcessPool as exc:
            # A worker died since the last wait (work is sent while results are handed back): this attempt
            # is lost with the pool, and as_completed retries it on a new one like the others.
            task.attempt = cf.Future()
            task.attempt.set_exception(exc)

    def _wait(self, attempts: list[Any], timeout: float | None) -> Iterable[Any]:
        return cf.wait(attempts, timeout=timeout, return_when=cf.FIRST_COMPLETED)[0]

    def _result(self, attempt: Any) -> Outcome:
        return attempt.result()

    def _lost_reason(self, exc: Exception) -> str | None:
        if isinstance(exc, BrokenProcessPool):  # a worker died: not the candidate's fault
            return f"BrokenProcessPool: {_first_line(exc)}"
        return None  # timed_call catches the evaluation's own errors: this is the pool's

    def _after_lost(self) -> None:
        self._stop_pool()  # a pool with a dead worker is broken for good: the next attempt gets a new one

    def cancel(self, handles: Iterable[Any]) -> None:
        for task in handles:
            if task.attempt is not None:
                task.attempt.cancel()

    def _stop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # Evaluations still running are abandoned, as Ray's cancel(force=True) abandons them.
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(Exception):
                process.terminate()
        for process in processes:
            with contextlib.suppress(Exception):
                process.join(timeout=5)

    def shutdown(self) -> None:
        self._stop_pool()


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fails in seconds on an address nothing listens at; Ray itself retries for minutes."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Ray address {address!r} is not HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {hostport} ({exc}); is `ray start --head` running there?") from None


def _join(ray: Any, address: str, options: dict[str, Any], attempts: int = 3) -> None:
    """Ray Client's head starts one server process per driver; under load that start can fail once and
    work on the next try, so a ray:// join is tried `attempts` times before the error is the user's."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, **options)
            return
        except ConnectionAbortedError as exc:
            ray.shutdown()
            if not address.startswith("ray://") or attempt == attempts:
                raise ConnectionError(f"the Ray head at {address} refused this driver {attempt} time(s): {exc}\n"
                                      "its ray_client_server_*.err logs (in the head's session logs folder, "
                                      "by default /tmp/ray/session_latest/logs) say why") from None
            time.sleep(2.0 * attempt)


class RayExecutor(_Retrying):
    """Ray tasks, one per evaluation, each asking for `cpus` CPUs and `gpus` GPUs.

    Retries are the executor's, not Ray's (Ray's own are off), so that a candidate's record can say
    it was retried and why: `max_retries` more attempts after a lost worker, then it fails with the
    reasons.

    With no address, a local Ray is started with `workers * cpus` CPUs (or an already initialised
    Ray in this process is reused). With an address (or RAY_ADDRESS) an existing cluster is joined.
    `gpus="auto"`: one GPU per task where the cluster has any, none otherwise.
    """

    def __init__(self, workers: int = 2, address: str | None = None, cpus: int = 1, gpus: float | str = 0.0,
                 max_retries: int = 2) -> None:
        import ray

        self._ray = ray
        self._owns_ray = False
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            check_reachable(address)
        if not ray.is_initialized():
            common: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "logging_level": logging.WARNING}
            if address:
                _join(ray, address, common)
            else:
                # "local": a new Ray of our own, even where `ray start` left a cluster running on this
                # machine, which ray.init() would otherwise join (and refuse num_cpus for).
                ray.init(address="local", num_cpus=workers * cpus, **common)
            self._owns_ray = True
        resources = ray.cluster_resources()
        if gpus == "auto":
            gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
        gpus = float(gpus)
        total_cpus = int(resources.get("CPU", workers * cpus))
        # A task asking for more than any cluster could give would wait forever: say so instead.
        if cpus > total_cpus or gpus > resources.get("GPU", 0):
            if self._owns_ray:
                ray.shutdown()
            raise ValueError(f"an evaluation asks for {cpus} CPU(s) and {gpus:g} GPU(s) but the Ray cluster has "
                             f"{total_cpus} CPU(s) and {resources.get('GPU', 0):g} GPU(s); lower cpus_per_eval / "
                             "gpus_per_eval or add machines")
        self.slots = max(1, total_cpus // cpus) if address else max(1, min(workers, total_cpus // cpus))
        if gpus:  # a task waits for its GPU as for its CPUs: no more in flight than the GPUs can take
            self.slots = min(self.slots, max(1, int(resources.get("GPU", 0) // gpus)))
        self.max_retries = max_retries
        self._not_retried = (ray.exceptions.RayTaskError, ray.exceptions.TaskCancelledError)
        self._remote = ray.remote(timed_call).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)

    def share(self, value: Any) -> Any:
        """Into the object store once; a task given the reference as an argument gets the value. Workers
        on other machines then need no copy of the driver's files."""
        return self._ray.put(value)

    def _send(self, task: _Task) -> None:
        task.attempt = self._remote.remote(task.fn, *task.args)

    def _wait(self, attempts: list[Any], timeout: float | None) -> Iterable[Any]:
        return self._ray.wait(attempts, num_returns=1, timeout=timeout)[0]

    def _result(self, attempt: Any) -> Outcome:
        return self._ray.get(attempt)

    def _lost_reason(self, exc: Exception) -> str | None:
        if isinstance(exc, self._not_retried):  # the task itself failed, as it would again
            return None
        return f"{type(exc).__name__}: {_first_line(exc)}"

    def cancel(self, handles: Iterable[Any]) -> None:
        for task in handles:
            with contextlib.suppress(Exception):  # already finished or gone: nothing left to cancel
                self._ray.cancel(task.attempt, force=True)

    @property
    def owns_ray(self) -> bool:
        """True when this executor started the Ray it uses (and so stops it on shutdown)."""
        return self._owns_ray

    def shutdown(self) -> None:
        if self._owns_ray:
            self._ray.shutdown()


def _first_line(exc: Exception) -> str:
    # Ray's errors carry multi-line explanations and log paths; the first line says what happened.
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
