"""Persistence: searches, their candidates and an append-only event journal (SQLAlchemy).

A SQLite file by default, any SQLAlchemy URL (PostgreSQL included) otherwise. The store is the
single source of truth: a search can be rebuilt from its rows, and every finished evaluation is
committed, with its journal event, in one transaction as soon as it arrives. What a Store
guarantees is written on the class; its methods come from one module per part (store_searches,
store_leases, store_candidates, store_events, store_trainings) over store_core's tables. Beside it:
dvolver.tokens (API tokens), dvolver.schema (the schema version and upgrades), dvolver.dialects (what
SQLite and PostgreSQL do differently).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from .dialects import dialect_of
from .errors import StoreError
from .schema import upgrade
from .store_candidates import Candidates
from .store_core import (
    ACTIVE_SEARCH_STATUSES,
    FINAL_STATUSES,
    RESUMABLE_STATUSES,
    SEARCH_STATUSES,
    Base,
    Candidate,
    CandidateRow,
    EventRow,
    Search,
    SearchRow,
    TokenRow,
    Training,
    TrainingBlobRow,
    TrainingRow,
    WeightsRow,
    as_utc,
)
from .store_events import Events
from .store_leases import Leases
from .store_searches import Searches
from .store_training_leases import TrainingLeases
from .store_trainings import Trainings

__all__ = ["ACTIVE_SEARCH_STATUSES", "DEFAULT_DB", "FINAL_STATUSES", "RESUMABLE_STATUSES", "SEARCH_STATUSES", "Base",
           "Candidate", "CandidateRow", "EventRow", "Search", "SearchRow", "Store", "TokenRow", "Training",
           "TrainingBlobRow", "TrainingRow", "WeightsRow", "as_utc", "resolve_url"]

DEFAULT_DB = Path.home() / ".dvolver" / "dvolver.db"


def resolve_url(db: str | None = None) -> str:
    """`--db` beats DVOLVER_DB beats ~/.dvolver/dvolver.db; a value with '://' is a SQLAlchemy URL."""
    value = db or os.environ.get("DVOLVER_DB") or str(DEFAULT_DB)
    if "://" in value:
        return value
    path = Path(value).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class Store(Searches, Leases, Candidates, Events, Trainings, TrainingLeases):
    """The searches, their candidates, weights and journal, and the final trainings of candidates, in one
    SQL database.

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

    Trainings: a final training's epochs are each committed with the checkpoint after them, in one
    transaction, so a process killed at any point resumes from the last whole epoch.

    Parts: the methods come from Searches (dvolver.store_searches), Leases (store_leases),
    Candidates (store_candidates), Events (store_events), Trainings (store_trainings) and TrainingLeases
    (store_training_leases), each with its part of this contract on its class; what they share (the tables,
    the holder checks) is dvolver.store_core's.
    """

    def __init__(self, url: str | None = None) -> None:
        """Opens the store at `url` (see resolve_url), creating its tables or upgrading an older
        store's (dvolver.schema). Raises StoreError when the database cannot be reached, its driver
        is not installed, or its schema is newer than this Dvolver's."""
        self.url = resolve_url(url)
        try:
            self.engine = create_engine(self.url)
            self._dialect = dialect_of(self.engine)
            self._dialect.prepare(self.engine)
            upgrade(self.engine, Base.metadata, self._dialect)
        except (SQLAlchemyError, ImportError, StoreError) as exc:
            shown = make_url(self.url).render_as_string(hide_password=True) if "://" in self.url else self.url
            reason = str(exc).strip().splitlines()[0]  # drivers add hints and links on further lines
            raise StoreError(f"cannot open the store at {shown}: {reason}") from None
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._holder = None
