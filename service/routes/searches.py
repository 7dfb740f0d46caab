"""Search jobs: list, read, cancel, resume, delete (submitting is in submit.py). Nothing here trains."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from dvolver.errors import LimitError
from dvolver.spec import SearchSpec
from dvolver.store import SEARCH_STATUSES

from .. import views
from ..auth import Caller, reader, visible_search, writer
from ..paths import confine
from ..responses import READ, WRITE, errors
from ..schemas import SearchDetail, SearchId, SearchPage, SearchSummary
from ..settings import Settings

router = APIRouter(tags=["searches"])

SearchStatus = Literal[SEARCH_STATUSES]  # type: ignore[valid-type]


def _limit_error(loc: tuple[str, ...], message: str, kind: str = "limit_exceeded") -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", *loc), "msg": message, "type": kind}])


def check_limits(spec: SearchSpec, settings: Settings) -> None:
    """A spec beyond what this service allows is refused before anything is stored."""
    for loc, value, limit, name in (
        (("population",), spec.population, settings.max_population, "max_population"),
        (("evaluations",), spec.evaluations, settings.max_evaluations, "max_evaluations"),
        (("training", "epochs"), spec.training.epochs, settings.max_epochs, "max_epochs"),
    ):
        if value > limit:
            raise _limit_error(loc, f"{'.'.join(loc)} = {value} is over this service's limit {name} = {limit}")
    # Magnitude fine-tuning trains on top of training.epochs: the same limit holds for the sum.
    finetune = ((spec.pruning.options.get("magnitude") or {}).get("finetune_epochs", 0)) if spec.pruning else 0
    if spec.training.epochs + finetune > settings.max_epochs:
        loc = ("pruning", "options", "magnitude", "finetune_epochs")
        raise _limit_error(loc, f"training.epochs + {'.'.join(loc)} = {spec.training.epochs + finetune} is over "
                                f"this service's limit max_epochs = {settings.max_epochs}")


def check_paths(spec: dict, roots: tuple[Path, ...]) -> None:
    """A stored search's files must still lie under the data roots when it is queued again."""
    table = (spec.get("space_options") or {}).get("table")
    for loc, value in ((("space_options", "table"), table), (("dataset",), spec.get("dataset"))):
        if isinstance(value, str) and value != "digits":
            try:
                confine(value, roots)
            except ValueError as exc:
                raise _limit_error(loc, f"{'.'.join(loc)}: {exc}", "path_refused") from None


def too_many(exc: LimitError, settings: Settings) -> HTTPException:
    """429: the spec is fine, the owner has as many searches queued or running as the service allows."""
    return HTTPException(429, f"{exc}, this service's limit max_concurrent = {settings.max_concurrent}; "
                              "wait for one or cancel one")


@router.get("/searches", response_model=SearchPage, responses=errors(401, 422, 503))
def list_searches(request: Request, status: SearchStatus | None = None,
                  limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0, le=2**31),
                  who: Caller = Depends(reader)) -> SearchPage:
    """The caller's searches, newest first (every search, for an anonymous reader of an open service),
    each with its hypervolume on the reference it shares with the caller's other searches of its problem."""
    store = request.app.state.store
    limit = min(limit, request.app.state.settings.max_page)
    items = store.list_searches(status, who.owner, limit=limit, offset=offset, newest_first=True)
    shared = request.app.state.shared_hypervolumes.of(items, who.owner)
    return SearchPage(items=[views.summary(s, shared.get(s.id)) for s in items],
                      total=store.count_searches(status, who.owner), limit=limit, offset=offset)


@router.get("/searches/{search_id}", response_model=SearchDetail, responses=errors(*READ))
def get_search(search_id: SearchId, request: Request, who: Caller = Depends(reader)) -> SearchDetail:
    store = request.app.state.store
    # Read before the search, so that an event between the two reads is sent again, never missed.
    last_event_id = store.last_event_id(search_id)
    search = visible_search(store, search_id, who)
    shared = request.app.state.shared_hypervolumes.of([search], who.owner)
    return views.detail(search, last_event_id, shared.get(search.id))


@router.post("/searches/{search_id}/cancel", response_model=SearchSummary, responses=errors(*WRITE))
def cancel_search(search_id: SearchId, request: Request, who: Caller = Depends(writer)) -> SearchSummary:
    """A queued search is cancelled at once; a running one within a second or two, keeping its results."""
    store = request.app.state.store
    visible_search(store, search_id, who)
    return views.summary(store.request_cancel(search_id))


@router.post("/searches/{search_id}/resume", response_model=SearchSummary, responses=errors(*WRITE, 429))
def resume_search(search_id: SearchId, request: Request, who: Caller = Depends(writer)) -> SearchSummary:
    """Queue a stopped search again; its finished candidates are reused, never retrained."""
    store = request.app.state.store
    search = visible_search(store, search_id, who)
    settings = request.app.state.settings
    check_limits(SearchSpec.from_stored(search.spec), settings)  # the limits may have changed since
    check_paths(search.spec, request.app.state.data_roots)  # and so may the data roots
    try:
        return views.summary(store.requeue(search_id, max_active=settings.max_concurrent))
    except LimitError as exc:
        raise too_many(exc, settings) from None


@router.delete("/searches/{search_id}", status_code=204, response_class=Response, responses=errors(*WRITE))
def delete_search(search_id: SearchId, request: Request, who: Caller = Depends(writer)) -> Response:
    store = request.app.state.store
    visible_search(store, search_id, who)
    store.delete_search(search_id)
    return Response(status_code=204)
