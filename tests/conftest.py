from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

# ../shared/data beside the project; DVOLVER_TEST_DATA points elsewhere (the switch test below uses it).
SHARED_DATA = Path(os.environ.get("DVOLVER_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
NB201_TABLE = SHARED_DATA / "nb201_cifar10.csv"
CIFAR_NPZ = SHARED_DATA / "cifar10_subset.npz"
CHROMIUM = Path(os.environ.get("DVOLVER_TEST_CHROMIUM", "/usr/bin/chromium"))


def missing(switch: str, what: str) -> None:
    """Skips a test that needs ``what``, or fails it where ``switch`` is 1: CI sets DVOLVER_REQUIRE_DATA,
    DVOLVER_REQUIRE_BROWSER and DVOLVER_REQUIRE_POSTGRES, so nothing a user has is skipped there unnoticed."""
    if os.environ.get(switch) == "1":
        pytest.fail(f"{switch}=1 but {what}", pytrace=False)
    pytest.skip(what)


def data_file(path: Path) -> Path:
    if not path.is_file():
        missing("DVOLVER_REQUIRE_DATA", f"{path.name} not found at {path} (../shared/data beside the project)")
    return path

# A tiny proxy: enough to exercise every code path in well under a second per candidate.
TINY = {
    "space_options": {"filters": 4, "cells_per_stage": 1},
    "training": {"epochs": 1, "train_limit": 300},
    "population": 4,
    "evaluations": 8,
}


@pytest.fixture
def nb201_table() -> Path:
    return data_file(NB201_TABLE)


@pytest.fixture
def cifar_npz() -> Path:
    return data_file(CIFAR_NPZ)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "dvolver.db")


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole session, with 2 worker CPUs."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def table_spec(table: Path, **overrides: object) -> dict:
    """A NAS-Bench-201 table search: real results, looked up in milliseconds."""
    return {"space": "nb201", "space_options": {"table": str(table)}, "objectives": ["acc", "flops"],
            "population": 10, "evaluations": 40} | overrides


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_service(settings):
    """The real service on a loopback port (uvicorn in a thread); yields (base URL, app).

    The socket is bound here and handed to uvicorn, so no other process can take the port between.
    """
    import uvicorn

    from service.app import create_app

    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        yield f"http://{host}:{port}", app
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL server on loopback for the session (tests/postgres.py).

    Skips when PostgreSQL or psycopg is missing, unless DVOLVER_REQUIRE_POSTGRES=1 (CI sets it):
    then it fails, so that the PostgreSQL tests can never be skipped there unnoticed.
    """
    from .postgres import PostgresUnavailable, throwaway_postgres

    stack = ExitStack()
    try:
        server = stack.enter_context(throwaway_postgres(free_port))
    except PostgresUnavailable as exc:
        missing("DVOLVER_REQUIRE_POSTGRES", f"no PostgreSQL to test against: {exc}")
    with stack:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres) -> str:
    """The SQLAlchemy URL of the throwaway server's default database (shared by the session)."""
    return postgres.url()


@pytest.fixture
def pg_db(postgres) -> str:
    """A fresh, empty database on the throwaway server, for one test; its SQLAlchemy URL."""
    return postgres.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path) -> str:
    """A fresh, empty store, once a SQLite file and once a new database on the throwaway PostgreSQL:
    what SQLite serialises with its file lock, PostgreSQL runs at once."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dvolver.db'}"
    return request.getfixturevalue("pg_db")
