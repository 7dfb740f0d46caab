"""API tokens, kept in a store: who a bearer token belongs to.

A token is shown once, when it is made; the store keeps only its SHA-256 (TokenRow), so a leaked
database leaks no token. Each function is one transaction on the store's database.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .errors import ConflictError, NotFoundError
from .store import Store, TokenRow, as_utc

TOKEN_PREFIX = "dvt_"


def create_token(store: Store, name: str, owner: str | None = None) -> str:
    """A new token for `owner` (default: the name). Raises ConflictError if a token has that name."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with Session(store.engine) as s, s.begin():
        if s.scalar(select(TokenRow.id).where(TokenRow.name == name)) is not None:
            raise ConflictError(f"a token named {name!r} exists; pick another name or revoke it first")
        s.add(TokenRow(name=name, owner=owner or name, digest=_digest(token)))
    return token


def token_owner(store: Store, token: str) -> str | None:
    """The owner `token` was made for; None for a token never made or since revoked."""
    with Session(store.engine) as s:
        return s.scalar(select(TokenRow.owner).where(TokenRow.digest == _digest(token)))


def tokens(store: Store) -> list[dict[str, Any]]:
    """Name, owner and created_at of every token, oldest first; never the tokens themselves."""
    with Session(store.engine) as s:
        return [{"name": t.name, "owner": t.owner, "created_at": as_utc(t.created_at)}
                for t in s.scalars(select(TokenRow).order_by(TokenRow.id))]


def revoke_token(store: Store, name: str) -> None:
    """Deletes the token `name`; it authenticates no one from then on. Raises NotFoundError if there
    is none."""
    with Session(store.engine) as s, s.begin():
        if s.execute(delete(TokenRow).where(TokenRow.name == name)).rowcount == 0:
            raise NotFoundError(f"no token named {name!r}; `dvolver token list` shows them")


def _digest(token: str) -> str:
    # Tokens are 256 random bits, so a plain hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()
