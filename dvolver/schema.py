"""The store's schema version, and the steps that bring an older store up to it.

A store keeps its version in the one-row table `schema_version`; version 0 is any store made before
the version was kept, by any earlier Dvolver. Opening a store upgrades it one step at a time, all
steps in one transaction, so a store is at one version or the next, never between. A store newer
than this code is refused before anything is written: an older Dvolver cannot know what its
columns mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, Integer, MetaData, Table, delete, func, insert, inspect, select, text
from sqlalchemy.engine import Connection, Engine

from .dialects import Dialect
from .errors import StoreError

_VERSION = Table("schema_version", MetaData(), Column("version", Integer, nullable=False))


def _from_0(connection: Connection, tables: MetaData) -> None:
    """Every table and column added since the first Dvolver is a new table or a nullable column, so
    creating what is missing brings any store from before versions up to version 1."""
    tables.create_all(connection)
    _add_missing_columns(connection, tables)


def _from_1(connection: Connection, tables: MetaData) -> None:
    """Version 2 adds the final trainings (`trainings`, `training_blobs`): new tables only."""
    tables.create_all(connection)


def _from_2(connection: Connection, tables: MetaData) -> None:
    """Version 3 lets a training have no candidate (`trainings.candidate_id` nullable): a reference
    architecture retrained beside a search's candidates. PostgreSQL drops the constraint in place. SQLite
    cannot, so both training tables are copied aside, dropped (the bytes first: with foreign keys on,
    dropping `trainings` would cascade into them) and created again as declared, then filled back."""
    if connection.dialect.name != "sqlite":
        connection.execute(text("ALTER TABLE trainings ALTER COLUMN candidate_id DROP NOT NULL"))
        return
    rebuilt = [tables.tables["trainings"], tables.tables["training_blobs"]]
    for table in rebuilt:
        connection.execute(text(f"CREATE TEMP TABLE old_{table.name} AS SELECT * FROM {table.name}"))
    for table in reversed(rebuilt):
        connection.execute(text(f"DROP TABLE {table.name}"))
    tables.create_all(connection, tables=rebuilt)
    for table in rebuilt:
        columns = ", ".join(f'"{c.name}"' for c in table.columns)
        connection.execute(text(f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM old_{table.name}"))
        connection.execute(text(f"DROP TABLE old_{table.name}"))


def _from_3(connection: Connection, tables: MetaData) -> None:
    """Version 4 lets runners hold trainings under leases (`trainings.runner`, `lease_until`,
    `cancel_requested`): nullable columns, added as version 1 added its own."""
    _add_missing_columns(connection, tables)


# UPGRADES[n] takes a store from version n to n + 1.
UPGRADES: tuple[Callable[[Connection, MetaData], None], ...] = (_from_0, _from_1, _from_2, _from_3)
SCHEMA_VERSION = len(UPGRADES)


def upgrade(engine: Engine, tables: MetaData, dialect: Dialect) -> None:
    """Brings the store up to SCHEMA_VERSION, one process at a time: runners and an API started
    together on an empty or older database would otherwise all try the same steps, and all but
    one fail. Raises StoreError, writing nothing, for a store newer than this code."""
    with engine.connect() as connection:
        if schema_version(connection) == SCHEMA_VERSION:
            return  # the usual case: nothing to write, no lock to take (the store may be read-only)
    with engine.begin() as connection:
        dialect.lock_schema(connection)
        version = schema_version(connection)  # another process may have upgraded it while this one waited
        for step in UPGRADES[version:]:
            step(connection, tables)
        if version < SCHEMA_VERSION:
            _VERSION.create(connection, checkfirst=True)
            connection.execute(delete(_VERSION))
            connection.execute(insert(_VERSION).values(version=SCHEMA_VERSION))


def schema_version(connection: Connection) -> int:
    """The store's version; raises StoreError if this code is too old for it."""
    version = 0
    if inspect(connection).has_table(_VERSION.name):
        version = connection.scalar(select(func.max(_VERSION.c.version))) or 0
    if version > SCHEMA_VERSION:
        raise StoreError(f"database schema version {version} is newer than this Dvolver's {SCHEMA_VERSION}: "
                         "upgrade Dvolver")
    return version


def _add_missing_columns(connection: Connection, tables: MetaData) -> None:
    for table, column in _missing_columns(connection, tables):
        kind = column.type.compile(dialect=connection.dialect)
        connection.execute(text(f'ALTER TABLE {table} ADD COLUMN "{column.name}" {kind}'))


def _missing_columns(connection: Connection, tables: MetaData) -> list[tuple[str, Any]]:
    inspector = inspect(connection)
    missing = []
    for table in tables.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        missing += [(table.name, c) for c in table.columns if c.name not in present and c.nullable]
    return missing
