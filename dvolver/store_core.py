"""What every part of a Store shares: the tables, the records read from them, the SQL pieces more
than one part uses, and StoreCore, the state and the holder checks each part's methods work with.

dvolver.store assembles the Store from its parts (store_searches, store_leases, store_candidates,
store_events, store_trainings) and re-exports what callers use from here; import these names from dvolver.store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from .dialects import Dialect
from .errors import ConflictError, DvolverError, LeaseLost, LimitError, NotFoundError

# Searches are queued, running, interrupted, cancelled, finished or failed; only queued and running
# ones may still change by themselves. A candidate is pending while a worker has it; its other
# statuses are final.
FINAL_STATUSES = ("finished", "failed", "infeasible", "stopped")
ACTIVE_SEARCH_STATUSES = ("queued", "running")
RESUMABLE_STATUSES = ("interrupted", "failed", "cancelled")
SEARCH_STATUSES = (*ACTIVE_SEARCH_STATUSES, "finished", *RESUMABLE_STATUSES)


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
    owner: Mapped[str | None] = mapped_column(String(200), index=True)
    # The runner process that holds the search, and until when: a runner that stops renewing its
    # lease has died, and another may take the search over.
    runner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool | None] = mapped_column(Boolean, default=False)
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


class WeightsRow(Base):
    """A finished candidate's trained state_dict (torch.save bytes), what exports are made from."""

    __tablename__ = "weights"

    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class TrainingRow(Base):
    """A final training of one finished candidate, or of a reference architecture (no candidate), at its
    final scale (dvolver.trainings): the recipe, each epoch's metrics, and what the trained network measures.
    The store itself holds the latest checkpoint and the final weights, as bytes in TrainingBlobRow; this row
    holds their SHA-256, no file path."""

    __tablename__ = "trainings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"), index=True)
    # None: a reference architecture (`dvolver train --genome`), retrained to compare the candidates with
    candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id", ondelete="CASCADE"), index=True)
    genome: Mapped[list[int]] = mapped_column(JSON)
    space: Mapped[str] = mapped_column(String(100))
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON)  # the FinalTraining, as the space fills it in
    # queued until a process takes it, then running, then finished, failed or cancelled; every status but
    # finished can be taken again, and resumes from the last checkpoint
    status: Mapped[str] = mapped_column(String(20), index=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)  # epochs committed, each with its checkpoint
    epochs: Mapped[int] = mapped_column(Integer)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # one dict per epoch
    val_acc: Mapped[float | None] = mapped_column(Float)
    test_acc: Mapped[float | None] = mapped_column(Float)
    macs: Mapped[int | None] = mapped_column(BigInteger)
    flops: Mapped[int | None] = mapped_column(BigInteger)  # 2 x macs
    params: Mapped[int | None] = mapped_column(BigInteger)
    latency_ms: Mapped[float | None] = mapped_column(Float)  # CPU, batch 1
    check_outputs: Mapped[list[list[float]] | None] = mapped_column(JSON)  # what its exports are held to
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(200), index=True)  # the search's, when it was created
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The runner that holds it, and until when, as for a search (schema version 4); None while a `dvolver
    # train` process runs it, which no runner takes over.
    runner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool | None] = mapped_column(Boolean, default=False)


class TrainingBlobRow(Base):
    """A training's bytes: its latest checkpoint (kind "checkpoint", while it trains) and its final weights
    (kind "weights", a state_dict as torch.save bytes)."""

    __tablename__ = "training_blobs"

    training_id: Mapped[int] = mapped_column(ForeignKey("trainings.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class TokenRow(Base):
    """An API token; only its SHA-256 is kept, so a leaked database leaks no token."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    owner: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


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
    owner: str | None = None
    runner: str | None = None
    cancel_requested: bool = False


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


@dataclass(frozen=True)
class Training:
    id: int
    search_id: int
    candidate_id: int | None  # None for a reference architecture
    genome: tuple[int, ...]
    space: str
    recipe: dict[str, Any]
    status: str
    epoch: int
    epochs: int
    history: list[dict[str, Any]]
    val_acc: float | None
    test_acc: float | None
    macs: int | None
    flops: int | None
    params: int | None
    latency_ms: float | None
    check_outputs: list[list[float]] | None
    checkpoint_sha256: str | None
    weights_sha256: str | None
    error: str | None
    owner: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    runner: str | None = None
    cancel_requested: bool = False


def _search(row: SearchRow) -> Search:
    return Search(row.id, row.name, row.status, row.seed, row.spec, row.versions, dict(row.stats or {}), row.error,
                  as_utc(row.created_at), as_utc(row.started_at), as_utc(row.finished_at), row.owner, row.runner,
                  bool(row.cancel_requested))


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _candidate(row: CandidateRow) -> Candidate:
    return Candidate(row.id, row.search_id, row.key, tuple(row.genome), row.status, dict(row.objectives or {}),
                     dict(row.metrics or {}), row.error, row.worker, row.seconds)


def _training(row: TrainingRow) -> Training:
    return Training(row.id, row.search_id, row.candidate_id, tuple(row.genome), row.space, dict(row.recipe),
                    row.status, row.epoch, row.epochs, list(row.history or []), row.val_acc, row.test_acc, row.macs,
                    row.flops, row.params, row.latency_ms, row.check_outputs, row.checkpoint_sha256,
                    row.weights_sha256, row.error, row.owner, as_utc(row.created_at), as_utc(row.updated_at),
                    as_utc(row.started_at), as_utc(row.finished_at), row.runner, bool(row.cancel_requested))


def _search_filter(query: Any, status: str | tuple[str, ...] | None, owner: str | None) -> Any:
    if isinstance(status, str):
        query = query.where(SearchRow.status == status)
    elif status:
        query = query.where(SearchRow.status.in_(status))
    if owner is not None:
        query = query.where(SearchRow.owner == owner)
    return query


def _cannot(s: Any, search_id: int, advice: str) -> DvolverError:
    row = s.get(SearchRow, search_id)
    if row is None:
        return NotFoundError(f"no search {search_id}")
    return ConflictError(f"search {search_id} is {row.status}: {advice}")


def _transition(s: Any, search_id: int, status: str, error: str | None, *conditions: Any) -> bool:
    """One conditional UPDATE of a search's status, with its journal event; False if nothing matched."""
    now = _now()
    values: dict[str, Any] = {"status": status, "error": error}
    if status == "running":
        values |= {"started_at": func.coalesce(SearchRow.started_at, now), "finished_at": None}
    else:
        values |= {"runner": None, "lease_until": None, "cancel_requested": False,
                   "finished_at": None if status == "queued" else now}
    moved = s.execute(update(SearchRow).where(SearchRow.id == search_id, *conditions).values(**values))
    if moved.rowcount != 1:
        return False
    s.add(EventRow(search_id=search_id, kind="status", payload={"status": status, "error": error}))
    return True


class StoreCore:
    """The state a Store's parts share: its engine, the dialect's locks, a session per call, and the
    runner it writes for (set by held_by, None for a plain store). The checks below are what makes a
    holder's write safe against a takeover: each runs inside the write's own transaction."""

    url: str
    engine: Engine
    _dialect: Dialect
    _session: sessionmaker[Session]
    _holder: str | None = None

    @property
    def display_url(self) -> str:
        """The URL without its password, for printing."""
        return self.engine.url.render_as_string(hide_password=True)

    def _check_held(self, s: Any, search_id: int) -> None:
        if self._holder is None:
            return
        row = s.execute(select(SearchRow.runner, SearchRow.status).where(SearchRow.id == search_id)).one_or_none()
        if row is None or row.runner != self._holder or row.status != "running":
            raise LeaseLost(f"runner {self._holder} no longer holds search {search_id}")

    def _lock_search(self, s: Any, search_id: int) -> None:
        """For a holder's write: the holder check and the write after it as one step (a takeover
        between them would let the old holder write once more)."""
        if self._holder is not None:
            self._dialect.lock_search(s.connection(), search_id)

    def _check_active(self, s: Any, owner: str | None, max_active: int | None) -> None:
        """Counts after the write, in its transaction, so that two requests at once cannot both
        pass: SQLite lets one writer at a time, and PostgreSQL is told to, per owner."""
        if max_active is None:
            return
        self._dialect.lock_owner(s.connection(), owner)
        active = s.scalar(_search_filter(select(func.count(SearchRow.id)), ACTIVE_SEARCH_STATUSES, owner))
        if active > max_active:  # raising rolls the write back
            raise LimitError(f"{owner or 'this owner'} already has {active - 1} queued or running searches")
