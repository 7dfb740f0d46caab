"""Request bodies are read and measured here, before anything parses them."""

from __future__ import annotations

import re

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BRACKET_OR_QUOTE = re.compile(rb'[\[\]{}"]')


class BodyGuard:
    """Refuses request bodies over `max_bytes` with 413, whether they declare their length or are
    chunked, and JSON nested deeper than `max_depth` with 422: Python's parser would recurse until
    it gave up, and every layer after it would recurse again."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int) -> None:
        self.app, self.max_bytes, self.max_depth = app, max_bytes, max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send, 413, f"request body over this service's limit of {self.max_bytes} bytes")
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(send, 413, f"request body over this service's limit of {self.max_bytes} bytes")
                return
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False
        if json_depth_over(body, self.max_depth):
            await self._refuse(send, 422, [{"type": "json_too_deep", "loc": ["body"], "msg": (
                f"the JSON body is nested deeper than this service's limit of {self.max_depth} levels")}])
            return

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: disconnects
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, status: int, detail: object) -> None:
        await JSONResponse({"detail": detail}, status_code=status)({"type": "http"}, _no_receive, send)


def json_depth_over(body: bytes, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than `limit`; linear in the body's length.

    Bytes that are not JSON are measured all the same: the parser refuses them anyway."""
    depth, at = 0, 0
    while (found := _BRACKET_OR_QUOTE.search(body, at)) is not None:
        at = found.end()
        char = body[found.start()]
        if char == 0x22:  # '"': skip to the quote that ends the string
            at = _string_end(body, at)
            if at < 0:
                return False
        elif char in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _string_end(body: bytes, at: int) -> int:
    while (quote := body.find(b'"', at)) >= 0:
        before = quote
        while before > at and body[before - 1] == 0x5C:  # '\\': an odd run escapes the quote
            before -= 1
        if (quote - before) % 2 == 0:
            return quote + 1
        at = quote + 1
    return -1


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
