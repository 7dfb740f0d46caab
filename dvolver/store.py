"""Persistence: searches, their candidates and an append-only event journal (SQLAlchemy).

A SQLite file by default, any SQLAlchemy URL (PostgreSQL included) otherwise. The store is the
single source of truth: a search can be rebuilt from its rows, and every finished evaluation is
committed, with its journal event, in one transaction as soon as it arrives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    make_url,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from .errors import NotFoundError, StoreError

DEFAULT_DB = Path.home() / ".dvolver" / "dvolver.db"
# Searches are queued, running, interrupted, finished or failed. A candidate is pending while a
# worker has it; its other statuses are final.
FINAL_STATUSES = ("finished", "failed", "infeasible")


def resolve_url(db: str | None = None) -> str:
    """`--db` beats DVOLVER_DB beats ~/.dvolver/dvolver.db; a value with '://' is a SQLAlchemy URL."""
    value = db or os.environ.get("DVOLVER_DB") or str(DEFAULT_DB)
    if "://" in value:
        return value
    path = Path(value).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class SearchRow(Base):
    __tablename__ = "searches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), index=True)
    seed: Mapped[int] = mapped_column(BigInteger)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    versions: Mapped[dict[str, Any]] = mapped_column(JSON)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CandidateRow(Base):
    __tablename__ = "candidates"
    __table_args__ = (UniqueConstraint("search_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(400))
    genome: Mapped[list[int]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))
    objectives: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))
    seconds: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


@dataclass(frozen=True)
class Search:
    id: int
    name: str | None
    status: str
    seed: int
    spec: dict[str, Any]
    versions: dict[str, Any]
    stats: dict[str, Any]
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class Candidate:
    id: int
    search_id: int
    key: str
    genome: tuple[int, ...]
    status: str
    objectives: dict[str, float]
    metrics: dict[str, Any]
    error: str | None
    worker: str | None
    seconds: float | None


def _search(row: SearchRow) -> Search:
    return Search(row.id, row.name, row.status, row.seed, row.spec, row.versions, dict(row.stats or {}), row.error,
                  row.created_at, row.started_at, row.finished_at)


def _candidate(row: CandidateRow) -> Candidate:
    return Candidate(row.id, row.search_id, row.key, tuple(row.genome), row.status, dict(row.objectives or {}),
                     dict(row.metrics or {}), row.error, row.worker, row.seconds)


class Store:
    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_url(url)
        try:
            self.engine: Engine = create_engine(self.url)
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            Base.metadata.create_all(self.engine)
        except (SQLAlchemyError, ImportError) as exc:
            shown = make_url(self.url).render_as_string(hide_password=True) if "://" in self.url else self.url
            reason = str(exc).strip().splitlines()[0]  # drivers add hints and links on further lines
            raise StoreError(f"cannot open the store at {shown}: {reason}") from None
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def display_url(self) -> str:
        """The URL without its password, for printing."""
        return self.engine.url.render_as_string(hide_password=True)

    def create_search(self, spec: dict[str, Any], versions: dict[str, Any], status: str = "queued") -> int:
        with self._session.begin() as s:
            row = SearchRow(name=spec.get("name"), status=status, seed=int(spec.get("seed", 0)), spec=spec,
                            versions=versions, stats={})
            s.add(row)
            s.flush()
            s.add(EventRow(search_id=row.id, kind="status", payload={"status": status}))
            return row.id

    def get_search(self, search_id: int) -> Search:
        with self._session() as s:
            row = s.get(SearchRow, search_id)
            if row is None:
                raise NotFoundError(f"no search {search_id} in {self.url}; `dvolver list` shows the searches there")
            return _search(row)

    def list_searches(self, status: str | None = None) -> list[Search]:
        with self._session() as s:
            query = select(SearchRow).order_by(SearchRow.id)
            if status:
                query = query.where(SearchRow.status == status)
            return [_search(r) for r in s.scalars(query)]

    def set_status(self, search_id: int, status: str, error: str | None = None) -> None:
        with self._session.begin() as s:
            row = s.get(SearchRow, search_id)
            if row is None:
                raise NotFoundError(f"no search {search_id}")
            row.status = status
            row.error = error
            if status == "running":
                row.started_at = row.started_at or _now()
                row.finished_at = None
            elif status in ("finished", "failed", "interrupted"):
                row.finished_at = _now()
            s.add(EventRow(search_id=search_id, kind="status", payload={"status": status, "error": error}))

    def update_stats(self, search_id: int, stats: dict[str, Any]) -> None:
        with self._session.begin() as s:
            row = s.get(SearchRow, search_id)
            if row is None:
                raise NotFoundError(f"no search {search_id}")
            row.stats = {**(row.stats or {}), **stats}

    def append_event(self, search_id: int, kind: str, payload: dict[str, Any]) -> None:
        with self._session.begin() as s:
            s.add(EventRow(search_id=search_id, kind=kind, payload=payload))

    def record(self, search_id: int, key: str, genome: tuple[int, ...], status: str,
               objectives: dict[str, float] | None = None, metrics: dict[str, Any] | None = None,
               error: str | None = None, worker: str | None = None, seconds: float | None = None) -> Candidate:
        """Insert or update the candidate `key` of a search, with its journal event, atomically.

        Idempotent: recording the same final result twice leaves one row.
        """
        with self._session.begin() as s:
            row = s.scalar(select(CandidateRow).where(CandidateRow.search_id == search_id, CandidateRow.key == key))
            if row is None:
                row = CandidateRow(search_id=search_id, key=key, genome=list(genome))
                s.add(row)
            elif row.status in FINAL_STATUSES:
                return _candidate(row)  # a final result is never overwritten, by a re-run or anything else
            row.status = status
            row.objectives = objectives or {}
            row.metrics = metrics or {}
            row.error, row.worker, row.seconds = error, worker, seconds
            if status != "pending":
                row.finished_at = _now()
            s.flush()
            s.add(EventRow(search_id=search_id, kind="candidate",
                           payload={"candidate": row.id, "key": key, "status": status, "objectives": row.objectives}))
            return _candidate(row)

    def candidates(self, search_id: int, statuses: tuple[str, ...] | None = None) -> list[Candidate]:
        with self._session() as s:
            query = select(CandidateRow).where(CandidateRow.search_id == search_id).order_by(CandidateRow.id)
            if statuses:
                query = query.where(CandidateRow.status.in_(statuses))
            return [_candidate(r) for r in s.scalars(query)]

    def events(self, search_id: int, after: int = 0) -> list[dict[str, Any]]:
        with self._session() as s:
            query = select(EventRow).where(EventRow.search_id == search_id, EventRow.id > after).order_by(EventRow.id)
            return [{"id": e.id, "kind": e.kind, "payload": e.payload, "at": e.at.isoformat()}
                    for e in s.scalars(query)]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (list, show, the service) work while a search writes; the busy timeout makes
    # a second writer wait instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
