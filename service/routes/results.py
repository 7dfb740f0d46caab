"""A search's results: its front, its candidates, one candidate with its drawing and exports, the
points to plot and the front's history."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from dvolver.export import FORMATS
from dvolver.export import formats as export_formats
from dvolver.objectives import OBJECTIVES
from dvolver.store import FINAL_STATUSES

from .. import views
from ..auth import Caller, reader, visible_search
from ..responses import READ, errors
from ..schemas import CandidateDetail, CandidateId, CandidatePage, FrontOut, HistoryOut, PointsOut, SearchId

router = APIRouter(tags=["results"])

# Query values as enums in the OpenAPI schema, built from the registries they must match.
CandidateStatus = Literal[("pending", *FINAL_STATUSES)]  # type: ignore[valid-type]
ObjectiveName = Literal[tuple(OBJECTIVES)]  # type: ignore[valid-type]
ExportFormat = Literal[FORMATS]  # type: ignore[valid-type]
# A NaN bound would silently match nothing; an infinite one is no bound.
Bound = Annotated[float | None, Query(allow_inf_nan=False, description="a finite number")]


def _snapshot(request: Request, search_id: int, who: Caller) -> tuple[object, views.Snapshot]:
    search = visible_search(request.app.state.store, search_id, who)
    return search, request.app.state.snapshots.get(search)


# A cost objective, then a finite number (what float() reads, without inf and nan).
BEST_UNDER = r"^(flops|macs|params|latency):[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


def _query_error(name: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", name), "msg": message, "type": "value_error"}])


def _budget(text: str) -> tuple[str, float]:
    objective, _, bound = text.partition(":")
    try:
        value = float(bound)
    except ValueError:
        value = math.nan
    if objective not in OBJECTIVES or OBJECTIVES[objective].direction != "min" or math.isnan(value):
        costs = ", ".join(o for o, d in OBJECTIVES.items() if d.direction == "min")
        raise _query_error("best_under", f"best_under must be OBJECTIVE:BOUND with OBJECTIVE among {costs}, "
                                         f"e.g. flops:5e6; got {text!r}")
    return objective, value


@router.get("/searches/{search_id}/front", response_model=FrontOut, responses=errors(*READ))
def front(search_id: SearchId, request: Request, knee: bool = False,
          best_under: str | None = Query(None, max_length=100, description="OBJECTIVE:BOUND, e.g. flops:5e6",
                                         pattern=BEST_UNDER),
          who: Caller = Depends(reader)) -> FrontOut:
    """The non-dominated feasible candidates, sorted by the first objective; or just the knee point,
    or the best one under a budget."""
    _, snap = _snapshot(request, search_id, who)
    members, note = snap.front, None
    if knee:
        members = views.knee(snap)
    elif best_under is not None:
        members, note = views.best_under(snap, *_budget(best_under))
    return FrontOut(objectives=snap.spec.objectives, items=[views.candidate(c, snap.front_ids) for c in members],
                    note=note)


@router.get("/searches/{search_id}/candidates", response_model=CandidatePage, responses=errors(*READ))
def candidates(search_id: SearchId, request: Request, status: CandidateStatus | None = None,
               on_front: bool | None = None,
               min_acc: Bound = None, max_flops: Bound = None, max_macs: Bound = None,
               max_params: Bound = None, max_latency: Bound = None,
               limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=2**31),
               who: Caller = Depends(reader)) -> CandidatePage:
    """Every candidate in the order they were met, filtered; a bound drops candidates without that value."""
    _, snap = _snapshot(request, search_id, who)
    bounds = {"acc": (min_acc, "min"), "flops": (max_flops, "max"), "macs": (max_macs, "max"),
              "params": (max_params, "max"), "latency": (max_latency, "max")}
    chosen = []
    for c in snap.candidates:
        if status is not None and c.status != status:
            continue
        if on_front is not None and (c.id in snap.front_ids) != on_front:
            continue
        if any(bound is not None and not _within(c.objectives.get(name), bound, kind)
               for name, (bound, kind) in bounds.items()):
            continue
        chosen.append(c)
    limit = min(limit, request.app.state.settings.max_page)
    page = chosen[offset:offset + limit]
    return CandidatePage(items=[views.candidate(c, snap.front_ids) for c in page], total=len(chosen), limit=limit,
                         offset=offset)


def _within(value: float | None, bound: float, kind: str) -> bool:
    if value is None:
        return False
    return value >= bound if kind == "min" else value <= bound


def _exports(request: Request, search_id: int, candidate_id: int, metrics: dict, has_weights: bool) -> dict[str, str]:
    base = str(request.url_for("export_candidate", search_id=search_id, candidate_id=candidate_id))
    return {f: f"{base}?format={f}" for f in export_formats(metrics, has_weights)}


@router.get("/searches/{search_id}/candidates/{candidate_id}", response_model=CandidateDetail,
            responses=errors(*READ))
def candidate(search_id: SearchId, candidate_id: CandidateId, request: Request,
              who: Caller = Depends(reader)) -> CandidateDetail:
    """One candidate with its architecture (cells as small DAGs) and links to its exports."""
    search, snap = _snapshot(request, search_id, who)
    found = snap.by_id.get(candidate_id) or request.app.state.store.candidate(search_id, candidate_id)
    space = snap.spec.search_space(structure=True)
    has_weights = found.status == "finished" and not snap.spec.table_mode
    return CandidateDetail(**views.candidate(found, snap.front_ids).model_dump(),
                           architecture=space.describe(found.genome),
                           exports=_exports(request, search_id, candidate_id, found.metrics, has_weights))


@router.get("/searches/{search_id}/candidates/{candidate_id}/export", name="export_candidate",
            response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}} | errors(400, *READ))
def export_file(search_id: SearchId, candidate_id: CandidateId, request: Request,
                fmt: ExportFormat = Query("genotype", alias="format"), who: Caller = Depends(reader)) -> Response:
    """The candidate as a file: genotype JSON, or its trained network, checked against the original."""
    search = visible_search(request.app.state.store, search_id, who)
    out = request.app.state.exports.get(search, candidate_id, fmt)
    headers = {"Content-Disposition": f'attachment; filename="{out.filename}"'}
    if out.checked_against:  # what the file's outputs were checked against: "evaluation" or "stored weights"
        headers["X-Dvolver-Checked-Against"] = out.checked_against
    return Response(out.data, media_type=out.media_type, headers=headers)


@router.get("/searches/{search_id}/points", response_model=PointsOut, responses=errors(*READ))
def points(search_id: SearchId, request: Request, x: ObjectiveName = "flops",
           y: ObjectiveName = "acc", max_dominated: int = Query(2000, ge=0, le=100_000),
           who: Caller = Depends(reader)) -> PointsOut:
    """What a front plot draws: every front member, and dominated candidates thinned to `max_dominated`."""
    _, snap = _snapshot(request, search_id, who)
    return views.points(snap, x, y, max_dominated)


@router.get("/searches/{search_id}/history", response_model=HistoryOut, responses=errors(*READ))
def history(search_id: SearchId, request: Request, max_generations: int = Query(200, ge=1, le=100_000),
            who: Caller = Depends(reader)) -> Response:
    """The front after each generation (thinned evenly to `max_generations`), for replaying a search."""
    search, snap = _snapshot(request, search_id, who)
    body = request.app.state.snapshots.history_json(search, snap, max_generations)
    return Response(body, media_type="application/json")
