"""The error responses each route can give, with their bodies, for the OpenAPI schema: a client
generated from it then knows every status code the server sends and what it holds."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorOut(BaseModel):
    detail: str


class FieldError(BaseModel):
    type: str | None = None
    loc: list[str | int]
    msg: str
    ctx: dict[str, Any] | None = None


class InvalidOut(BaseModel):
    # A list naming each field for a request that does not fit the schema; one sentence for a search
    # spec the engine refuses as a whole.
    detail: list[FieldError] | str


_WHY = {
    400: (ErrorOut, "a body that is not JSON, or a request that cannot be carried out as asked (an export the "
               "candidate cannot give)"),
    401: (ErrorOut, "no token where one is needed, or an unknown, revoked or malformed one"),
    404: (ErrorOut, "no such search, candidate or training for this caller (another owner's are reported missing)"),
    409: (ErrorOut, "the status does not allow it (cancelling a finished search, deleting a running one, retraining "
               "a candidate that has not finished, exporting an unfinished training)"),
    413: (ErrorOut, "the body is larger than the service accepts"),
    422: (InvalidOut, "a parameter or the body is invalid; each problem names its field"),
    429: (ErrorOut, "the owner already has as many searches (or final trainings) queued or running as the service "
               "allows"),
    503: (ErrorOut, "the store cannot be reached"),
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that can answer with these error codes."""
    return {code: {"model": _WHY[code][0], "description": _WHY[code][1]} for code in codes}


READ = (401, 404, 422, 503)
WRITE = (401, 404, 409, 422, 503)
