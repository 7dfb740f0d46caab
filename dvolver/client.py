"""A small client for a Dvolver service: what `dvolver search --server` uses to submit a search
and follow it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

from .engine import SearchResult
from .errors import DvolverError
from .run_stats import Progress, RunStats
from .spec import SearchSpec
from .store import Candidate


class ServiceError(DvolverError):
    """The service refused a request or could not be reached."""


def _reason(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(detail, list):  # FastAPI's validation report: name each field
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:]) or 'body'}: {d.get('msg')}"
                         for d in detail)
    return str(detail)


class ServiceClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach the Dvolver service at {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise ServiceError(f"the service at {self.url} answered {response.status_code}: {_reason(response)}")
        return response.json() if response.content else None

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/searches", json=spec)

    def search(self, search_id: int) -> dict[str, Any]:
        return self._call("GET", f"/searches/{search_id}")

    def front(self, search_id: int) -> dict[str, Any]:
        return self._call("GET", f"/searches/{search_id}/front")

    def progress(self, search_id: int) -> Progress:
        return Progress(**self.search(search_id)["progress"])

    def result(self, search_id: int) -> SearchResult:
        """The search as the service holds it now, as the same SearchResult a local run returns."""
        detail = self.search(search_id)
        items: list[dict[str, Any]] = []
        while True:
            page = self._call("GET", f"/searches/{search_id}/candidates", params={"offset": len(items), "limit": 1000})
            items += page["items"]
            if not page["items"] or len(items) >= page["total"]:
                break
        candidates = [Candidate(c["id"], search_id, c["key"], tuple(c["genome"]), c["status"], c["objectives"],
                                c["metrics"], c["error"], c["worker"], c["seconds"]) for c in items]
        front = [c for c, item in zip(candidates, items) if item["on_front"]]
        return SearchResult(search_id, detail["status"], SearchSpec.from_stored(detail["spec"]), candidates, front,
                            RunStats.from_dict(detail["stats"]), error=detail.get("error"))

    def events(self, search_id: int, retries: int = 5) -> Iterator[tuple[str, dict[str, Any]]]:
        """Server-sent events until `end`; a dropped connection is resumed where it stopped."""
        last, failures = 0, 0
        while True:
            try:
                with self.http.stream("GET", f"/searches/{search_id}/events", params={"after": last},
                                      timeout=httpx.Timeout(10.0, read=60.0)) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise ServiceError(f"the service at {self.url} answered {response.status_code}: "
                                           f"{_reason(response)}")
                    for kind, event_id, data in _parse(response.iter_lines()):
                        failures = 0
                        last = event_id or last
                        yield kind, data
                        if kind == "end":
                            return
            except httpx.HTTPError as exc:
                failures += 1
                if failures > retries:
                    raise ServiceError(f"lost the event stream of search {search_id} at {self.url}: {exc}") from None
                time.sleep(min(2.0 * failures, 10.0))


def _parse(lines: Iterator[str]) -> Iterator[tuple[str, int | None, dict[str, Any]]]:
    kind, event_id, data = "message", None, []
    for line in lines:
        if not line:
            if data:
                yield kind, event_id, json.loads("\n".join(data))
            kind, event_id, data = "message", None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                kind = value
            elif field == "id" and value.isdigit():
                event_id = int(value)
            elif field == "data":
                data.append(value)
