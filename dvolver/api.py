"""The Python entry point: `run_search(spec)` creates a search in the store and runs it."""

from __future__ import annotations

import platform
from collections.abc import Callable
from importlib import metadata
from typing import Any

import search_spaces

from .engine import Progress, SearchResult, run
from .errors import ConflictError, DvolverError
from .executors import Executor, InlineExecutor, ProcessExecutor, RayExecutor
from .spec import SearchSpec
from .store import Store

EXECUTORS = ("auto", "ray", "processes", "inline")


def versions() -> dict[str, object]:
    found: dict[str, object] = {"python": platform.python_version(), "key_scheme": search_spaces.KEY_SCHEME}
    for package in ("dvolver", "torch", "pymoo", "ray", "fvcore"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def make_executor(spec: SearchSpec, kind: str = "auto", workers: int = 2, ray_address: str | None = None) -> Executor:
    """auto: inline for table look-ups (microseconds each, nothing to spread), Ray otherwise. processes:
    `workers` local processes without Ray."""
    return _executor(kind, workers, ray_address, spec.table_mode, spec.resources.cpus_per_eval,
                     spec.resources.gpus_per_eval)


def make_training_executor(spec: SearchSpec, trainings: int, kind: str = "auto", workers: int = 2,
                           ray_address: str | None = None) -> Executor:
    """Where final trainings run, each asking for the search's cpus_per_eval. auto: inline for one training
    (nothing to spread, and no Ray to start), Ray otherwise. On Ray each training takes one GPU where the
    cluster has GPUs, or gpus_per_eval where the search set it."""
    gpus = spec.resources.gpus_per_eval or "auto"
    return _executor(kind, workers, ray_address, trainings == 1, spec.resources.cpus_per_eval, gpus)


def _executor(kind: str, workers: int, ray_address: str | None, inline_when_auto: bool, cpus: int,
              gpus: float | str) -> Executor:
    if kind not in EXECUTORS:
        raise DvolverError(f"unknown executor {kind!r}; choose among {', '.join(EXECUTORS)}")
    if workers < 1:
        raise DvolverError(f"workers must be at least 1, got {workers}")
    if kind == "inline" or (kind == "auto" and inline_when_auto and not ray_address):
        return InlineExecutor()
    if kind == "processes":
        if ray_address:
            raise DvolverError("--ray-address needs the ray executor; drop --executor processes to join a cluster")
        return ProcessExecutor(workers=workers)
    try:
        return RayExecutor(workers=workers, address=ray_address, cpus=cpus, gpus=gpus)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {ray_address}" if ray_address else "a local Ray"
        raise DvolverError(f"cannot start {where}: {exc}") from exc


def run_search(spec: SearchSpec | dict[str, Any] | None = None, *, db: str | None = None, executor: str = "auto",
               workers: int = 2, ray_address: str | None = None,
               on_progress: Callable[[Progress], None] | None = None,
               on_created: Callable[[int], None] | None = None) -> SearchResult:
    """Validates the spec, records the search, runs it to its budget and returns its front.

    Nothing is written to the store unless the spec is valid and the executor has started.
    """
    if not isinstance(spec, SearchSpec):
        spec = SearchSpec.from_dict(spec or {})
    pool = make_executor(spec, executor, workers, ray_address)
    try:
        store = Store(db)
        # Created running, with no runner: a runner sharing this store never takes it.
        search_id = store.create_search(spec.model_dump(mode="json"), versions(), status="running")
        if on_created:
            on_created(search_id)
        return run(store, search_id, pool, on_progress)
    finally:
        pool.shutdown()


def resume_search(search_id: int, *, db: str | None = None, executor: str = "auto", workers: int = 2,
                  ray_address: str | None = None,
                  on_progress: Callable[[Progress], None] | None = None) -> SearchResult:
    store = Store(db)
    search = store.get_search(search_id)
    if search.status == "finished":
        raise DvolverError(f"search {search_id} has already finished; `dvolver front {search_id}` shows its front")
    pool = make_executor(SearchSpec.from_stored(search.spec), executor, workers, ray_address)
    if not store.take_locally(search_id):
        pool.shutdown()
        raise ConflictError(f"search {search_id} is being run by runner {store.get_search(search_id).runner}; "
                            "cancel it on the service first")
    try:
        return run(store, search_id, pool, on_progress)
    finally:
        pool.shutdown()
