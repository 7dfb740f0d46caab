"""The searches part of a Store: making, reading, moving and deleting searches (StoreCore's state)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select

from .errors import NotFoundError
from .store_core import (
    CandidateRow,
    EventRow,
    Search,
    SearchRow,
    StoreCore,
    TrainingBlobRow,
    TrainingRow,
    WeightsRow,
    _cannot,
    _search,
    _search_filter,
    _transition,
    as_utc,
)


class Searches(StoreCore):
    """Searches, and each one's status and stats.

    Its part of the Store's contract: a search moves between statuses (SEARCH_STATUSES) only by
    one conditional UPDATE with its journal event, in one transaction; an owner's limit on active
    searches (`max_active`) holds however many requests come at once; a runner moving a search it
    holds (`holder`, held_by) never overwrites what a runner that took it over writes. Reads see
    every commit before them.
    """

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

    def delete_search(self, search_id: int) -> None:
        """Deletes the search with its candidates, weights, trainings and journal, all or nothing. Raises
        NotFoundError for no search, ConflictError for a running one."""
        with self._session.begin() as s:
            candidate_ids = select(CandidateRow.id).where(CandidateRow.search_id == search_id)
            training_ids = select(TrainingRow.id).where(TrainingRow.search_id == search_id)
            # Explicit deletes: SQLite only cascades with foreign keys on, which other tools may not set.
            s.execute(delete(TrainingBlobRow).where(TrainingBlobRow.training_id.in_(training_ids)))
            s.execute(delete(TrainingRow).where(TrainingRow.search_id == search_id))
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
