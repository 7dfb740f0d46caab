"""The events part of a Store: each search's append-only journal (StoreCore's state)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from .store_core import EventRow, StoreCore, as_utc


class Events(StoreCore):
    """The journal, what a search is resumed from.

    Its part of the Store's contract: events are only ever appended, each after every event
    before it (ids grow), and never changed; through held_by nothing is appended once the runner
    lost the search. The other parts add their own events in the transaction of the change they
    record.
    """

    def append_event(self, search_id: int, kind: str, payload: dict[str, Any]) -> None:
        """Adds an event to the search's journal, after every event before it. Through held_by,
        raises LeaseLost; an unknown search raises sqlalchemy's IntegrityError."""
        with self._session.begin() as s:
            self._lock_search(s, search_id)
            self._check_held(s, search_id)
            s.add(EventRow(search_id=search_id, kind=kind, payload=payload))

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
