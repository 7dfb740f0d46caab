from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..auth import Caller, caller
from ..schemas import Health, WhoAmI

router = APIRouter(tags=["service"])


@router.get("/healthz", response_model=Health)
def healthz(request: Request) -> Health | JSONResponse:
    try:
        request.app.state.store.count_searches()
    except Exception as exc:  # any database failure means the service cannot serve; say which
        return JSONResponse({"status": "unavailable", "db": f"{type(exc).__name__}: {exc}"}, status_code=503)
    return Health(status="ok", db="ok")


@router.get("/whoami", response_model=WhoAmI)
def whoami(request: Request, who: Caller = Depends(caller)) -> WhoAmI:
    return WhoAmI(owner=who.owner, open_reads=request.app.state.settings.open_reads)
