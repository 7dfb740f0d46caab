"""Bearer tokens: who is calling, and whether they may read or write.

Tokens are made with `dvolver token create NAME` and kept hashed in the store. A search belongs to
the owner of the token that created it; to anyone else it does not exist (404), so ids leak nothing.
EventSource cannot send headers, so `?token=` is accepted too.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dvolver.errors import NotFoundError
from dvolver.store import Search, Store, Training
from dvolver.tokens import token_owner

MAX_TOKEN_CHARS = 256  # tokens are about 50; anything far longer is not one, and is not hashed
bearer = HTTPBearer(auto_error=False, description="a token from `dvolver token create NAME`")
CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Caller:
    owner: str | None  # None: an anonymous reader, allowed only when reads are open


def _unauthorised(message: str) -> HTTPException:
    return HTTPException(401, message, headers=CHALLENGE)


def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Caller:
    if request.headers.get("authorization") and credentials is None:
        raise _unauthorised("the Authorization header must be 'Bearer <token>'")
    token = credentials.credentials if credentials else request.query_params.get("token")
    if not token:
        return Caller(None)
    owner = token_owner(request.app.state.store, token) if len(token) <= MAX_TOKEN_CHARS else None
    if owner is None:
        raise _unauthorised("unknown or revoked token; create one with `dvolver token create NAME`")
    return Caller(owner)


def reader(request: Request, who: Caller = Depends(caller)) -> Caller:
    if who.owner is None and not request.app.state.settings.open_reads:
        raise _unauthorised("this service needs a token to read; send 'Authorization: Bearer <token>' "
                            "(create one with `dvolver token create NAME`)")
    return who


def writer(who: Caller = Depends(caller)) -> Caller:
    if who.owner is None:
        raise _unauthorised("writes need a token; send 'Authorization: Bearer <token>' "
                            "(create one with `dvolver token create NAME`)")
    return who


def visible_search(store: Store, search_id: int, who: Caller) -> Search:
    """The search, if the caller may see it; another owner's search is reported as missing."""
    try:
        search = store.get_search(search_id)
    except NotFoundError:
        search = None
    if search is None or (who.owner is not None and search.owner != who.owner):
        raise NotFoundError(f"no search {search_id}")
    return search


def visible_training(store: Store, training_id: int, who: Caller) -> Training:
    """The training, if the caller may see it; another owner's is reported as missing, as searches are."""
    try:
        training = store.get_training(training_id)
    except NotFoundError:
        training = None
    if training is None or (who.owner is not None and training.owner != who.owner):
        raise NotFoundError(f"no training {training_id}")
    return training
