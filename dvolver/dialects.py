"""What the store does differently per database: connection set-up, and the locks that make a read and
the write after it one step between processes.

SQLite lets one writer at a time, so taking its write lock before the read is enough, whatever the
read is about. PostgreSQL runs writers at once, so each lock names what it guards and leaves the
other writers alone. Any other database gets only what its transactions give.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine


class Dialect:
    """The locks, each taken first thing in its transaction and held until the transaction ends."""

    def prepare(self, engine: Engine) -> None:
        """Sets up each new connection of `engine`."""

    def lock_schema(self, connection: Connection) -> None:
        """Creating or upgrading the tables, one process at a time."""

    def lock_search(self, connection: Connection, search_id: int) -> None:
        """A holder's write to a search: its lease check and the write as one step."""

    def lock_candidate(self, connection: Connection, search_id: int, key: str) -> None:
        """Recording one candidate key: its look-up and the write as one step."""

    def lock_training(self, connection: Connection, training_id: int) -> None:
        """Writing a training's epoch or end: its look-up and the write as one step."""

    def lock_owner(self, connection: Connection, owner: str | None) -> None:
        """Counting an owner's active searches after a write that may add one, so that two such
        writes at once cannot both pass a limit. Taken after that write, not first."""


class _SQLite(Dialect):
    def prepare(self, engine: Engine) -> None:
        event.listen(engine, "connect", _sqlite_pragmas)

    def lock_schema(self, connection: Connection) -> None:
        _write_lock(connection)

    def lock_search(self, connection: Connection, search_id: int) -> None:
        _write_lock(connection)

    def lock_candidate(self, connection: Connection, search_id: int, key: str) -> None:
        _write_lock(connection)

    def lock_training(self, connection: Connection, training_id: int) -> None:
        _write_lock(connection)

    # lock_owner: the write before the count already holds the one write lock.


class _PostgreSQL(Dialect):
    def lock_schema(self, connection: Connection) -> None:
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('dvolver schema'))"))

    def lock_search(self, connection: Connection, search_id: int) -> None:
        connection.execute(text("SELECT id FROM searches WHERE id = :search_id FOR UPDATE"), {"search_id": search_id})

    def lock_candidate(self, connection: Connection, search_id: int, key: str) -> None:
        connection.execute(text("SELECT pg_advisory_xact_lock(:search_id, hashtext(:key))"),
                           {"search_id": search_id, "key": key})

    def lock_training(self, connection: Connection, training_id: int) -> None:
        connection.execute(text("SELECT id FROM trainings WHERE id = :training_id FOR UPDATE"),
                           {"training_id": training_id})

    def lock_owner(self, connection: Connection, owner: str | None) -> None:
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:owner))"), {"owner": owner or ""})


def dialect_of(engine: Engine) -> Dialect:
    return {"sqlite": _SQLite, "postgresql": _PostgreSQL}.get(engine.dialect.name, Dialect)()


def _write_lock(connection: Connection) -> None:
    # pysqlite only begins a transaction at the first write, after the reads; this takes the write
    # lock first, waiting for it up to the busy timeout.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (list, show, the service) work while a search writes; the busy timeout makes
    # a second writer wait instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    # Switching a file to WAL needs it alone for a moment, and SQLite refuses at once, without the
    # busy timeout, while another connection reads it: processes opening a new store together.
    deadline = time.monotonic() + 30
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
