"""`create_app(settings)`: the FastAPI service over a Dvolver store.

The API never trains: it validates, stores and reads. Runner processes (service/runner.py) claim
queued searches and final trainings from the same store and run them.
"""

from __future__ import annotations

import json
import math
from importlib import metadata

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from dvolver.errors import ConflictError, DvolverError, NotFoundError, SpecError, StoreError
from dvolver.store import Store

from .guard import BodyGuard
from .paths import resolved_roots
from .routes import dashboard, docs, events, health, results, searches, submit, trainings
from .settings import Settings
from .views import Exports, SharedHypervolumes, Snapshots

ERROR_STATUS: list[tuple[type[DvolverError], int]] = [
    (NotFoundError, 404), (ConflictError, 409), (SpecError, 422), (StoreError, 503), (DvolverError, 400),
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(title="Dvolver", version=metadata.version("dvolver"), docs_url=None, redoc_url=None,
                  description="Multi-objective neural architecture search as a service: submit searches, "
                              "follow them live, read their Pareto fronts.")
    app.state.settings = settings
    app.state.data_roots = resolved_roots(settings.data_roots)
    app.state.store = Store(settings.db)
    app.state.snapshots = Snapshots(app.state.store)
    app.state.exports = Exports(app.state.store)
    app.state.shared_hypervolumes = SharedHypervolumes(app.state.store)
    app.include_router(submit.router(app.state.data_roots))
    for module in (health, searches, results, trainings, events, dashboard, docs):
        app.include_router(module.router)
    app.add_exception_handler(DvolverError, _dvolver_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes, max_depth=settings.max_json_depth)
    return app


class ErrorJSON(JSONResponse):
    """Escaped to ASCII: an error may quote a lone surrogate from the request, which UTF-8 cannot encode."""

    def render(self, content: object) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


async def _dvolver_error(request: Request, exc: Exception) -> ErrorJSON:
    status = next(code for kind, code in ERROR_STATUS if isinstance(exc, kind))
    return ErrorJSON({"detail": str(exc)}, status_code=status)


async def _invalid_request(request: Request, exc: Exception) -> ErrorJSON:
    # FastAPI's own handler echoes each input back: a NaN there cannot be written as JSON (a 500),
    # and a large input would come back whole. Where, what and why are enough.
    assert isinstance(exc, RequestValidationError)
    errors = [{"type": e.get("type"), "loc": [str(p) if not isinstance(p, int) else p for p in e.get("loc", ())],
               "msg": str(e.get("msg"))} | ({"ctx": ctx} if (ctx := _plain(e.get("ctx") or {})) else {})
              for e in exc.errors()]
    return ErrorJSON({"detail": errors}, status_code=422)


def _plain(ctx: dict) -> dict:
    # ctx["error"] is the exception whose message is already msg.
    return {str(k): v if isinstance(v, str | int | bool) or (isinstance(v, float) and math.isfinite(v)) else str(v)
            for k, v in ctx.items() if k != "error"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):  # no body allowed
        return Response(status_code=exc.status_code, headers=exc.headers)
    headers = exc.headers
    if exc.status_code == 405:
        # Starlette's Allow names the methods of the first route matching the path only; /searches
        # has GET and POST in two routes. Every route on the path counts.
        headers = (headers or {}) | {"Allow": ", ".join(_allowed_methods(request))}
    return ErrorJSON({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """The methods of every operation whose path template matches, from the app's own OpenAPI paths
    (FastAPI's included routers do not expose their routes to a walk)."""
    from starlette.routing import compile_path

    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        if compile_path(template)[0].match(request.url.path):
            methods |= {m.upper() for m in operations if m != "parameters"}
    return sorted(methods)


async def _unexpected(request: Request, exc: Exception) -> ErrorJSON:
    # The traceback goes to the log (the server re-raises it there), never to the client.
    return ErrorJSON({"detail": "internal server error"}, status_code=500)
