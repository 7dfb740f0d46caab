"""Persistence: searches, their candidates and an append-only event journal (SQLAlchemy).

A SQLite file by default, any SQLAlchemy URL (PostgreSQL included) otherwise. The store is the
single source of truth: a search can be rebuilt from its rows, and every finished evaluation is
committed, with its journal event, in one transaction as soon as it arrives. What a Store
guarantees is written on the class. Beside it: dvolver.tokens (API tokens), dvolver.schema (the
schema version and upgrades), dvolver.dialects (what SQLite and PostgreSQL do differently).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
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
    create_engine,
    delete,
    func,
    make_url,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from .dialects import dialect_of
from .errors import ConflictError, DvolverError, LeaseLost, LimitError, NotFoundError, StoreError
from .schema import upgrade

DEFAULT_DB = Path.home() / ".dvolver" / "dvolver.db"
# Searches are queued, running, interrupted, cancelled, finished or failed; only queued and running
# ones may still change by themselves. A candidate is pending while a worker has it; its other
# statuses are final.
FINAL_STATUSES = ("finished", "failed", "infeasible")
ACTIVE_SEARCH_STATUSES = ("queued", "running")
RESUMABLE_STATUSES = ("interrupted", "failed", "cancelled")
SEARCH_STATUSES = (*ACTIVE_SEARCH_STATUSES, "finished", *RESUMABLE_STATUSES)


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


class Store:
    """The searches, their candidates, weights and journal, in one SQL database.

    Concurrency: a Store may be shared by threads; every call opens its own session from the
    engine's pool and ends its own transaction before it returns. Processes (runners, API servers,
    `dvolver` commands) each open their own Store on one URL; what they write at once is kept apart
    by the database, never by locks in Python: SQLite's one writer at a time (WAL, a 30 s busy
    timeout), PostgreSQL's row and advisory locks (dvolver.dialects).

    Ownership: a queued search is run by whichever runner's `claim_search` takes it, and that
    runner holds it under a lease until the lease runs out, unless `renew_lease` extends it.
    While it holds the search it writes through `held_by(runner)`, so that each of those writes
    checks the lease in its own transaction and raises LeaseLost instead of writing once another
    has taken over. A runner whose lease ran out loses the search to the next `claim_search`
    (a takeover: the new holder resumes from the journal); a runner that stops hands the search
    back with `release`. Searches run in-process (`dvolver search`, `take_locally`) have no runner
    and no lease, and no runner takes them over.

    Results: a search has one candidate row per key. `record` writes it, its journal event and
    its weights in one transaction; the first final result recorded for a key is the one kept,
    whoever records it later (a re-run, a runner after a takeover).

    Persistence: every method that writes commits before it returns, or rolls back and writes
    nothing if it raises. Nothing is cached between calls: a read sees every commit before it, by
    any process. Besides the errors each method names, a database that fails during a call raises
    sqlalchemy.exc.SQLAlchemyError, with the call's transaction rolled back.
    """

    def __init__(self, url: str | None = None) -> None:
        """Opens the store at `url` (see resolve_url), creating its tables or upgrading an older
        store's (dvolver.schema). Raises StoreError when the database cannot be reached, its driver
        is not installed, or its schema is newer than this Dvolver's."""
        self.url = resolve_url(url)
        try:
            self.engine: Engine = create_engine(self.url)
            self._dialect = dialect_of(self.engine)
            self._dialect.prepare(self.engine)
            upgrade(self.engine, Base.metadata, self._dialect)
        except (SQLAlchemyError, ImportError, StoreError) as exc:
            shown = make_url(self.url).render_as_string(hide_password=True) if "://" in self.url else self.url
            reason = str(exc).strip().splitlines()[0]  # drivers add hints and links on further lines
            raise StoreError(f"cannot open the store at {shown}: {reason}") from None
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._holder: str | None = None

    def held_by(self, runner: str) -> Store:
        """This store as ``runner`` writes through it while it runs a claimed search: each write to a
        search (a candidate, an event, its stats) first checks, in the same transaction, that the
        runner still holds the search running, and raises LeaseLost instead of writing if not.
        Shares this store's engine; the store itself is unchanged."""
        held = copy.copy(self)
        held._holder = runner
        return held

    def _check_held(self, s: Any, search_id: int) -> None:
        if self._holder is None:
            return
        row = s.execute(select(SearchRow.runner, SearchRow.status).where(SearchRow.id == search_id)).one_or_none()
        if row is None or row.runner != self._holder or row.status != "running":
            raise LeaseLost(f"runner {self._holder} no longer holds search {search_id}")

    @property
    def display_url(self) -> str:
        """The URL without its password, for printing."""
        return self.engine.url.render_as_string(hide_password=True)

    def create_search(self, spec: dict[str, Any], versions: dict[str, Any], status: str = "queued",
                      owner: str | None = None, max_active: int | None = None) -> int:
        """Stores a new search with its first journal event; returns its id. With `max_active`,
        raises LimitError, storing nothing, for one that would give `owner` more queued or running
        searches than that, however many are created at once."""
        with self._session.begin() as s:
            row = SearchRow(name=spec.get("name"), status=status, seed=int(spec.get("seed", 0)), spec=spec,
                            versions=versions, stats={}, owner=owner, cancel_requested=False)
            s.add(row)
            s.flush()
            self._check_active(s, owner, max_active)
            s.add(EventRow(search_id=row.id, kind="status", payload={"status": status}))
            return row.id

    def _check_active(self, s: Any, owner: str | None, max_active: int | None) -> None:
        """Counts after the write, in its transaction, so that two requests at once cannot both
        pass: SQLite lets one writer at a time, and PostgreSQL is told to, per owner."""
        if max_active is None:
            return
        self._dialect.lock_owner(s.connection(), owner)
        active = s.scalar(_search_filter(select(func.count(SearchRow.id)), ACTIVE_SEARCH_STATUSES, owner))
        if active > max_active:  # raising rolls the write back
            raise LimitError(f"{owner or 'this owner'} already has {active - 1} queued or running searches")

    def get_search(self, search_id: int) -> Search:
        """The search as now stored. Raises NotFoundError if there is none."""
        with self._session() as s:
            row = s.get(SearchRow, search_id)
            if row is None:
                raise NotFoundError(f"no search {search_id} in {self.display_url}; `dvolver list` shows the searches "
                                    "there")
            return _search(row)

    def list_searches(self, status: str | None = None, owner: str | None = None, limit: int | None = None,
                      offset: int = 0, newest_first: bool = False) -> list[Search]:
        """The searches (with `status`, of `owner`) in id order, or newest first; `offset` and
        `limit` page through them."""
        with self._session() as s:
            order = SearchRow.id.desc() if newest_first else SearchRow.id
            query = _search_filter(select(SearchRow), status, owner).order_by(order).offset(offset).limit(limit)
            return [_search(r) for r in s.scalars(query)]

    def count_searches(self, status: str | tuple[str, ...] | None = None, owner: str | None = None) -> int:
        """How many searches list_searches would give without a limit (`status` may name several)."""
        with self._session() as s:
            return int(s.scalar(_search_filter(select(func.count(SearchRow.id)), status, owner)) or 0)

    def search_specs(self, owner: str | None = None) -> list[tuple[int, datetime, dict[str, Any]]]:
        """(id, created_at, spec) of every search (of `owner`), without stats or versions: enough to
        tell which searches are of the same problem, and cheap to read on every list request."""
        with self._session() as s:
            query = _search_filter(select(SearchRow.id, SearchRow.created_at, SearchRow.spec), None, owner)
            return [(int(i), as_utc(at), spec) for i, at, spec in s.execute(query.order_by(SearchRow.id))]

    def candidate_counts_of(self, search_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
        """candidate_counts for many searches in one query; a search without candidates is (0, 0)."""
        ids = list(search_ids)
        counts = dict.fromkeys(ids, (0, 0))
        if not ids:
            return counts
        with self._session() as s:
            rows = s.execute(select(
                CandidateRow.search_id, func.count(CandidateRow.id),
                func.count(CandidateRow.id).filter(CandidateRow.status.in_(FINAL_STATUSES)),
            ).where(CandidateRow.search_id.in_(ids)).group_by(CandidateRow.search_id))
            counts.update({int(i): (int(total), int(final)) for i, total, final in rows})
        return counts

    def set_status(self, search_id: int, status: str, error: str | None = None, holder: str | None = None) -> bool:
        """Moves a search to `status`. With `holder`, only while that runner still holds it running:
        a runner that lost its search must not overwrite what the new holder writes. True if moved;
        False if `holder` no longer holds it. Raises NotFoundError, without `holder`, for no search."""
        with self._session.begin() as s:
            condition = [SearchRow.runner == holder, SearchRow.status == "running"] if holder else []
            if _transition(s, search_id, status, error, *condition):
                return True
            if holder is None:
                raise NotFoundError(f"no search {search_id}")
            return False

    # Runners. Every change below is one conditional UPDATE, so that runners (and the API) sharing a
    # database never act on a search at once: the database decides who got it.

    def claim_search(self, runner: str, lease_seconds: float) -> Search | None:
        """Takes the oldest queued search, or a running one whose runner's lease has run out; None
        when there is nothing to take. Of runners claiming at once, each search goes to one. Searches
        run by `dvolver search` have no runner and no lease: nobody takes them over."""
        now = _now()
        takeable = or_(SearchRow.status == "queued",
                       (SearchRow.status == "running") & SearchRow.runner.is_not(None) & (SearchRow.lease_until < now))
        with self._session.begin() as s:
            for search_id in list(s.scalars(select(SearchRow.id).where(takeable).order_by(SearchRow.id).limit(20))):
                taken = s.execute(update(SearchRow).where(SearchRow.id == search_id, takeable).values(
                    status="running", runner=runner, lease_until=now + timedelta(seconds=lease_seconds)))
                if taken.rowcount == 1:
                    row = s.get(SearchRow, search_id)
                    assert row is not None
                    s.add(EventRow(search_id=search_id, kind="claimed", payload={"runner": runner}))
                    return _search(row)
        return None

    def renew_lease(self, search_id: int, runner: str, lease_seconds: float) -> bool:
        """Extends `runner`'s lease to `lease_seconds` from now. False, changing nothing, when the
        search is no longer this runner's (taken over, deleted, or stopped)."""
        with self._session.begin() as s:
            renewed = s.execute(update(SearchRow).where(
                SearchRow.id == search_id, SearchRow.runner == runner, SearchRow.status == "running",
            ).values(lease_until=_now() + timedelta(seconds=lease_seconds)))
            return renewed.rowcount == 1

    def request_cancel(self, search_id: int) -> Search:
        """A queued search is cancelled at once; a running one is flagged, and stops when its runner
        next looks. Raises NotFoundError for no search, ConflictError for one in any other status."""
        with self._session.begin() as s:
            if not _transition(s, search_id, "cancelled", None, SearchRow.status == "queued"):
                flagged = s.execute(update(SearchRow).where(SearchRow.id == search_id, SearchRow.status == "running")
                                    .values(cancel_requested=True))
                if flagged.rowcount == 1:
                    s.add(EventRow(search_id=search_id, kind="cancel_requested", payload={}))
                else:
                    raise _cannot(s, search_id, "only queued or running searches can be cancelled")
            return _search(s.get(SearchRow, search_id))

    def requeue(self, search_id: int, max_active: int | None = None) -> Search:
        """Puts a stopped search back in the queue; a runner resumes it from its journal. Raises
        NotFoundError for no search, ConflictError for one that is not interrupted, failed or
        cancelled, and LimitError (changing nothing) past `max_active` as in create_search."""
        with self._session.begin() as s:
            if not _transition(s, search_id, "queued", None, SearchRow.status.in_(RESUMABLE_STATUSES)):
                raise _cannot(s, search_id, f"only {', '.join(RESUMABLE_STATUSES)} searches can be resumed")
            self._check_active(s, s.get(SearchRow, search_id).owner, max_active)
            return _search(s.get(SearchRow, search_id))

    def take_locally(self, search_id: int) -> bool:
        """For `dvolver resume`: marks the search running in this process, with no runner and no
        lease, unless a live runner holds it or it is finished. True if taken; False for that, or
        for no search."""
        with self._session.begin() as s:
            taken = _transition(s, search_id, "running", None, or_(
                SearchRow.status.in_(RESUMABLE_STATUSES + ("queued",)),
                (SearchRow.status == "running") & (SearchRow.runner.is_(None) | (SearchRow.lease_until < _now()))))
            if taken:  # no runner and no lease: no runner takes it over while this process runs it
                s.execute(update(SearchRow).where(SearchRow.id == search_id).values(runner=None, lease_until=None))
            return taken

    def release(self, search_id: int, runner: str) -> None:
        """A runner that shuts down hands its search back to the queue for another to resume; does
        nothing if `runner` no longer holds it."""
        self.set_status(search_id, "queued", holder=runner)

    def delete_search(self, search_id: int) -> None:
        """Deletes the search with its candidates, weights and journal, all or nothing. Raises
        NotFoundError for no search, ConflictError for a running one."""
        with self._session.begin() as s:
            candidate_ids = select(CandidateRow.id).where(CandidateRow.search_id == search_id)
            # Explicit deletes: SQLite only cascades with foreign keys on, which other tools may not set.
            s.execute(delete(WeightsRow).where(WeightsRow.candidate_id.in_(candidate_ids)))
            s.execute(delete(CandidateRow).where(CandidateRow.search_id == search_id))
            s.execute(delete(EventRow).where(EventRow.search_id == search_id))
            gone = s.execute(delete(SearchRow).where(SearchRow.id == search_id, SearchRow.status != "running"))
            if gone.rowcount != 1:  # raising rolls the deletes above back
                raise _cannot(s, search_id, "cancel it first")

    def update_stats(self, search_id: int, stats: dict[str, Any]) -> None:
        """Merges `stats` into the search's stats, key by key. Raises NotFoundError for no search;
        through held_by, LeaseLost instead."""
        with self._session.begin() as s:
            self._lock_search(s, search_id)
            self._check_held(s, search_id)
            row = s.get(SearchRow, search_id)
            if row is None:
                raise NotFoundError(f"no search {search_id}")
            row.stats = {**(row.stats or {}), **stats}

    def append_event(self, search_id: int, kind: str, payload: dict[str, Any]) -> None:
        """Adds an event to the search's journal, after every event before it. Through held_by,
        raises LeaseLost; an unknown search raises sqlalchemy's IntegrityError."""
        with self._session.begin() as s:
            self._lock_search(s, search_id)
            self._check_held(s, search_id)
            s.add(EventRow(search_id=search_id, kind=kind, payload=payload))

    def record(self, search_id: int, key: str, genome: tuple[int, ...], status: str,
               objectives: dict[str, float] | None = None, metrics: dict[str, Any] | None = None,
               error: str | None = None, worker: str | None = None, seconds: float | None = None,
               weights: bytes | None = None) -> Candidate:
        """Insert or update the candidate `key` of a search, with its journal event and trained
        weights, atomically.

        Idempotent: recording the same final result twice leaves one row. Safe between processes
        (two runners on one search after a lease takeover): the first final result recorded wins,
        and recording over it returns it unchanged, with no event. Through held_by, raises
        LeaseLost; an unknown search raises sqlalchemy's IntegrityError.
        """
        with self._session.begin() as s:
            self._lock_candidate(s, search_id, key)
            self._check_held(s, search_id)
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
            if weights is not None:
                s.merge(WeightsRow(candidate_id=row.id, data=weights))
            s.add(EventRow(search_id=search_id, kind="candidate",
                           payload={"candidate": row.id, "key": key, "status": status, "objectives": row.objectives}))
            return _candidate(row)

    def _lock_search(self, s: Any, search_id: int) -> None:
        """For a holder's write: the holder check and the write after it as one step (a takeover
        between them would let the old holder write once more)."""
        if self._holder is not None:
            self._dialect.lock_search(s.connection(), search_id)

    def _lock_candidate(self, s: Any, search_id: int, key: str) -> None:
        """Makes the look-up and the write after it one step between processes. Without it, two
        that record one key at once both find no row and the second insert fails, or both find it
        pending and the second final result overwrites the first."""
        self._dialect.lock_candidate(s.connection(), search_id, key)

    def candidates(self, search_id: int, statuses: tuple[str, ...] | None = None, after: int = 0,
                   also: Iterable[int] = ()) -> list[Candidate]:
        """The search's candidates in id order; with `after`, only those past that id, plus the ids in
        `also` (a reader catching up: new rows, and rows that were pending when it last looked)."""
        with self._session() as s:
            query = select(CandidateRow).where(CandidateRow.search_id == search_id).order_by(CandidateRow.id)
            if after or also:
                query = query.where(or_(CandidateRow.id > after, CandidateRow.id.in_(list(also))))
            if statuses:
                query = query.where(CandidateRow.status.in_(statuses))
            return [_candidate(r) for r in s.scalars(query)]

    def candidate_objectives(self, search_id: int, after: int = 0, also: Iterable[int] = ()
                             ) -> list[tuple[int, str, dict[str, float]]]:
        """(id, status, objectives) of the search's candidates, as `candidates` selects them: without
        genomes and metrics, a fraction of the reading for what needs only the objectives."""
        with self._session() as s:
            query = (select(CandidateRow.id, CandidateRow.status, CandidateRow.objectives)
                     .where(CandidateRow.search_id == search_id).order_by(CandidateRow.id))
            if after or also:
                query = query.where(or_(CandidateRow.id > after, CandidateRow.id.in_(list(also))))
            return [(int(i), status, dict(objectives or {})) for i, status, objectives in s.execute(query)]

    def candidate(self, search_id: int, candidate_id: int) -> Candidate:
        """One candidate of the search. Raises NotFoundError if the search has no such candidate."""
        with self._session() as s:
            row = s.get(CandidateRow, candidate_id)
            if row is None or row.search_id != search_id:
                raise NotFoundError(f"search {search_id} has no candidate {candidate_id}")
            return _candidate(row)

    def candidate_counts(self, search_id: int) -> tuple[int, int]:
        """(all rows, final rows): final rows never change, so the pair changes whenever the
        candidates do; readers use it to know when a cached view is stale."""
        with self._session() as s:
            total, final = s.execute(select(
                func.count(CandidateRow.id),
                func.count(CandidateRow.id).filter(CandidateRow.status.in_(FINAL_STATUSES)),
            ).where(CandidateRow.search_id == search_id)).one()
            return int(total), int(final)

    def weights(self, candidate_id: int) -> bytes | None:
        """The candidate's trained state_dict as recorded (torch.save bytes); None if none was kept."""
        with self._session() as s:
            row = s.get(WeightsRow, candidate_id)
            return None if row is None else bytes(row.data)

    def events(self, search_id: int, after: int = 0, kinds: tuple[str, ...] | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
        """The search's journal past event id `after` (of `kinds`), oldest first, as dicts of id,
        kind, payload and at (ISO 8601, UTC)."""
        with self._session() as s:
            query = select(EventRow).where(EventRow.search_id == search_id, EventRow.id > after)
            if kinds:
                query = query.where(EventRow.kind.in_(kinds))
            query = query.order_by(EventRow.id).limit(limit)
            return [{"id": e.id, "kind": e.kind, "payload": e.payload, "at": as_utc(e.at).isoformat()}
                    for e in s.scalars(query)]

    def last_event_id(self, search_id: int) -> int:
        """The id of the search's newest event; 0 when it has none."""
        with self._session() as s:
            return int(s.scalar(select(func.max(EventRow.id)).where(EventRow.search_id == search_id)) or 0)


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
