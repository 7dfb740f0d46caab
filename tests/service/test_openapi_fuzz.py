"""Property-based requests generated from /openapi.json (schemathesis): no input makes a 5xx."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from dvolver.api import run_search
from dvolver.tokens import create_token
from service.app import create_app
from service.settings import Settings
from tests.helpers import NB201_TABLE, table_spec

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = 100  # per operation; derandomised, so every run sends the same requests


@pytest.fixture(scope="module")
def app_and_token(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("fuzz") / "dvolver.db")
    app = create_app(Settings(db=db, open_reads=True, max_evaluations=50))
    token = create_token(app.state.store, "fuzzer")
    if NB201_TABLE.is_file():  # a finished search, so that the result routes have something to serve
        run_search(table_spec(NB201_TABLE), db=db, executor="inline")
    return app, token


def _operations():
    from service.app import create_app as make

    schema = schemathesis.openapi.from_asgi("/openapi.json", make(Settings(db="sqlite://")))
    return [(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()]


@pytest.mark.parametrize(("method", "path"), _operations())
def test_no_request_makes_a_server_error(app_and_token, method, path):
    app, token = app_and_token
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operation = schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def check(case):
        if path.endswith("/events"):
            case.query = (case.query or {}) | {"after": 10**9}  # a live stream would wait for events
        for headers in ({"Authorization": f"Bearer {token}"}, {}):
            response = case.call(headers=headers)
            request = f"{case.method} {case.formatted_path} {case.query} {case.body!r}"
            assert response.status_code < 500, f"{request}: {response.status_code} {response.text}"

    check()
