"""`create_app(settings)`: the FastAPI service over a Dvolver store.

The API never trains: it validates, stores and reads. Runner processes (service/runner.py) claim
queued searches from the same store and run them.
"""

from __future__ import annotations

from importlib import metadata

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dvolver.errors import ConflictError, DvolverError, NotFoundError, SpecError, StoreError
from dvolver.store import Store

from .routes import dashboard, docs, events, health, results, searches
from .settings import Settings
from .views import Exports, Snapshots

ERROR_STATUS: list[tuple[type[DvolverError], int]] = [
    (NotFoundError, 404), (ConflictError, 409), (SpecError, 422), (StoreError, 503), (DvolverError, 400),
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(title="Dvolver", version=metadata.version("dvolver"), docs_url=None, redoc_url=None,
                  description="Multi-objective neural architecture search as a service: submit searches, "
                              "follow them live, read their Pareto fronts.")
    app.state.settings = settings
    app.state.store = Store(settings.db)
    app.state.snapshots = Snapshots(app.state.store)
    app.state.exports = Exports(app.state.store)
    for module in (health, searches, results, events, dashboard, docs):
        app.include_router(module.router)
    app.add_exception_handler(DvolverError, _dvolver_error)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


async def _dvolver_error(request: Request, exc: Exception) -> JSONResponse:
    status = next(code for kind, code in ERROR_STATUS if isinstance(exc, kind))
    return JSONResponse({"detail": str(exc)}, status_code=status)


class BodyLimit:
    """Refuses request bodies over `max_bytes` with 413, whether they declare their length or are
    chunked. The body is read here, up to the limit, before the app sees any of it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: disconnects
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        response = JSONResponse({"detail": f"request body over this service's limit of {self.max_bytes} bytes"},
                                status_code=413)
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
