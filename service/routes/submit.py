"""POST /searches: queue a search. Its body type depends on the app's data roots, so the route is
made per app.

No `from __future__ import annotations` here: the body's annotation names a class made inside
`router()`, which FastAPI could not find again from a string.
"""

from pathlib import Path

from fastapi import APIRouter, Depends, Request

from dvolver.api import versions
from dvolver.errors import LimitError

from .. import views
from ..auth import Caller, writer
from ..responses import errors
from ..schemas import SearchSummary, submitted_spec
from .searches import check_limits, too_many


def router(data_roots: tuple[Path, ...]) -> APIRouter:
    spec_model = submitted_spec(data_roots)
    routes = APIRouter(tags=["searches"])

    @routes.post("/searches", status_code=201, response_model=SearchSummary,
                 responses=errors(400, 401, 413, 422, 429, 503))
    def create_search(spec: spec_model, request: Request, who: Caller = Depends(writer)) -> SearchSummary:
        """Queue a search; a runner picks it up. The body is the same SearchSpec the CLI builds, and
        the files it names must lie under the service's data roots."""
        store, settings = request.app.state.store, request.app.state.settings
        check_limits(spec, settings)
        try:
            search_id = store.create_search(spec.model_dump(mode="json"), versions(), owner=who.owner,
                                            max_active=settings.max_concurrent)
        except LimitError as exc:
            raise too_many(exc, settings) from None
        return views.summary(store.get_search(search_id))

    return routes
