from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..auth import Caller, reader
from ..responses import errors
from ..schemas import Health, WhoAmI

router = APIRouter(tags=["service"])


@router.get("/healthz", response_model=Health, responses=errors(503))
def healthz(request: Request) -> Health | JSONResponse:
    try:
        request.app.state.store.count_searches()
    except Exception as exc:  # any database failure means the service cannot serve; say which
        return JSONResponse({"status": "unavailable", "db": f"{type(exc).__name__}: {exc}"}, status_code=503)
    return Health(status="ok", db="ok")


@router.get("/whoami", response_model=WhoAmI, responses=errors(401, 503))
def whoami(request: Request, who: Caller = Depends(reader)) -> WhoAmI:
    """Who the token belongs to; without one, anonymous where reads are open, 401 where they are closed."""
    return WhoAmI(owner=who.owner, open_reads=request.app.state.settings.open_reads)
