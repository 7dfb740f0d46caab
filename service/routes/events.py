"""Live progress as server-sent events, read from the search's journal.

Each event carries its journal id, so a client that reconnects with Last-Event-ID (EventSource does
this by itself) misses nothing and sees nothing twice. Once the search has stopped and every event
has been sent, an `end` event closes the stream.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from dvolver.errors import NotFoundError
from dvolver.jsonable import finite
from dvolver.store import ACTIVE_SEARCH_STATUSES, Store

from ..auth import Caller, reader, visible_search
from ..responses import READ, errors
from ..schemas import SearchId

router = APIRouter(tags=["results"])

# Journal kinds a client sees; the others (claims, cancel requests) are bookkeeping.
PUBLIC_KINDS = ("candidate", "front", "generation", "status", "training")
KEEPALIVE_SECONDS = 15.0
BATCH = 500


def _frame(kind: str, data: object, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, allow_nan=False, default=str)}\n\n"


def _training(store: Store, search_id: int) -> bool:
    return any(t.status in ("queued", "running") for t in store.list_trainings(search_id))


@router.get("/searches/{search_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}} | errors(*READ))
async def events(search_id: SearchId, request: Request, after: int = Query(0, ge=0, le=2**62),
                 last_event_id: str | None = Header(None), who: Caller = Depends(reader)) -> StreamingResponse:
    """Events: candidate, front, generation, status, and training (a final training's status and each epoch);
    then `end` once the search and its trainings have stopped."""
    store = request.app.state.store
    visible_search(store, search_id, who)
    # EventSource sends back the last id it saw; anything else in the header is ignored.
    start = int(last_event_id) if last_event_id and re.fullmatch(r"[0-9]{1,18}", last_event_id) else after
    poll = request.app.state.settings.event_poll_seconds

    async def stream() -> AsyncIterator[str]:
        cursor, quiet = start, 0.0
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            batch = await asyncio.to_thread(store.events, search_id, cursor, PUBLIC_KINDS, BATCH)
            for event in batch:
                cursor = event["id"]
                yield _frame(event["kind"], finite(event["payload"]), cursor)
            if len(batch) == BATCH:
                continue
            try:
                status = (await asyncio.to_thread(store.get_search, search_id)).status
            except NotFoundError:
                yield _frame("end", {"status": "deleted"})
                return
            if status not in ACTIVE_SEARCH_STATUSES and not await asyncio.to_thread(_training, store, search_id):
                tail = await asyncio.to_thread(store.events, search_id, cursor, PUBLIC_KINDS, BATCH)
                if not tail:
                    yield _frame("end", {"status": status})
                    return
                continue
            quiet = 0.0 if batch else quiet + poll
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield ": keep-alive\n\n"  # proxies close connections that stay silent
            await asyncio.sleep(poll)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
