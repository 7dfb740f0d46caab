from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.helpers import CIFAR_NPZ, NB201_TABLE, data_file, free_port, missing

# pytest-xdist's workers start with COLUMNS=80 and LINES=24 set, and rich's console, made when
# dvolver.cli_render is first imported, would keep that size for good; without them it reads the
# terminal's size, or the COLUMNS a CLI test sets, whenever it prints.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)


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


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL server on loopback for the session (tests/postgres.py).

    Skips when PostgreSQL or psycopg is missing, unless DVOLVER_REQUIRE_POSTGRES=1 (CI sets it):
    then it fails, so that the PostgreSQL tests can never be skipped there unnoticed.
    """
    from tests.postgres import PostgresUnavailable, throwaway_postgres

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
