"""The leases part of a Store: which runner holds a search, and handing searches between runners,
the queue and `dvolver` commands run in-process (StoreCore's state)."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Self

from sqlalchemy import or_, select, update

from .store_core import (
    RESUMABLE_STATUSES,
    EventRow,
    Search,
    SearchRow,
    StoreCore,
    _cannot,
    _now,
    _search,
    _transition,
)


class Leases(StoreCore):
    """Ownership of searches under a lease.

    Its part of the Store's contract: a queued search is run by whichever runner's `claim_search`
    takes it, and that runner holds it under a lease until the lease runs out, unless `renew_lease`
    extends it. While it holds the search it writes through `held_by(runner)`, so that each of those
    writes checks the lease in its own transaction and raises LeaseLost instead of writing once
    another has taken over. A runner whose lease ran out loses the search to the next
    `claim_search` (a takeover: the new holder resumes from the journal); a runner that stops hands
    the search back with `release`. Searches run in-process (`take_locally`) have no runner and no
    lease, and no runner takes them over. Every change here is one conditional UPDATE, so that
    runners (and the API) sharing a database never act on a search at once: the database decides
    who got it.
    """

    def held_by(self, runner: str) -> Self:
        """This store as ``runner`` writes through it while it runs a claimed search: each write to a
        search (a candidate, an event, its stats) first checks, in the same transaction, that the
        runner still holds the search running, and raises LeaseLost instead of writing if not.
        Shares this store's engine; the store itself is unchanged."""
        held = copy.copy(self)
        held._holder = runner
        return held

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
        with self._session.begin() as s:
            _transition(s, search_id, "queued", None, SearchRow.runner == runner, SearchRow.status == "running")
