"""Hostile inputs against the real service on a loopback port: every one is refused with a 4xx that
names the field, no traceback and no source path leaks, nothing is created, and the service is still
healthy afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np
import pytest

from dvolver.tokens import create_token
from service.settings import Settings
from tests.helpers import live_service

REPO = Path(__file__).resolve().parents[1]
VALID = {"population": 4, "evaluations": 8, "training": {"epochs": 1}}  # digits: no file needed
BIG = 2**63


class Case(NamedTuple):
    request: dict[str, Any]  # httpx.request arguments; "{sid}" in the url is an existing search
    status: int
    said: tuple[str, ...] | None  # words the error must say (the field); None: no field to name


def post(body: Any = None, **request: Any) -> dict[str, Any]:
    return {"method": "POST", "url": "/searches"} | ({"json": body} if body is not None else {}) | request


def raw(text: str | bytes, content_type: str = "application/json") -> dict[str, Any]:
    return post(content=text, headers={"Content-Type": content_type})


def get(url: str, **params: Any) -> dict[str, Any]:
    return {"method": "GET", "url": url, "params": params}


def spec(**fields: Any) -> dict[str, Any]:
    return VALID | fields


def refused(body: dict[str, Any], *said: str, status: int = 422) -> Case:
    return Case(post(body), status, said)


def in_raw(fragment: str, *said: str, status: int = 422) -> Case:
    """A body with a literal the json module cannot write (NaN, Infinity, a lone surrogate)."""
    return Case(raw(json.dumps(VALID)[:-1] + ", " + fragment + "}"), status, said)


def nested(depth: int) -> str:
    return '{"space_options": ' + '{"a":' * depth + "1" + "}" * depth + "}"


PADDED = json.dumps(spec(name="x", space_options={"padding": "y" * 100_000})).encode()

OVERSIZED_AND_MALFORMED = {
    "body over the limit, declared": Case(raw(PADDED), 413, ("body", "limit")),
    "body over the limit, chunked": Case(raw([PADDED[:40_000], PADDED[40_000:]]), 413, ("body", "limit")),
    "arrays 10,000 deep": Case(raw("[" * 10_000 + "]" * 10_000), 422, ("body", "deeper")),
    "objects 10,000 deep in space_options": Case(raw(nested(10_000)), 422, ("body", "deeper")),
    "objects 40 deep": Case(raw(nested(40)), 422, ("body", "deeper")),
    "deep inside a string is not deep": Case(raw(json.dumps(spec(name="[{" * 150))), 422, ("name",)),
    "a 5000-digit integer": Case(raw('{"population": ' + "9" * 5000 + "}"), 400, ("body",)),
    "not JSON": Case(raw('{"population": 4,'), 422, ("body",)),
    "not UTF-8": Case(raw(b'{"name": "\xff\xfe"}'), 400, ("body",)),
    "a JSON array": Case(raw("[]"), 422, ("body",)),
    "JSON sent as text/plain": Case(raw(json.dumps(VALID), "text/plain"), 422, ("body",)),
    "an unknown field": refused(spec(export_to="/etc/passwd"), "export_to"),
}

NOT_FINITE = {
    "population NaN": in_raw('"population": NaN', "population", "finite"),
    "evaluations Infinity": in_raw('"evaluations": Infinity', "evaluations", "finite"),
    "seed -Infinity": in_raw('"seed": -Infinity', "seed", "finite"),
    "batch NaN": in_raw('"batch": NaN', "batch"),
    "training.lr NaN": in_raw('"training": {"lr": NaN}', "training.lr", "finite"),
    "training.epochs Infinity": in_raw('"training": {"epochs": Infinity}', "training.epochs"),
    "training.grad_clip Infinity": in_raw('"training": {"grad_clip": Infinity}', "training.grad_clip", "finite"),
    "training.weight_decay 1e400": in_raw('"training": {"weight_decay": 1e400}', "training.weight_decay"),
    "resources.gpus_per_eval NaN": in_raw('"resources": {"gpus_per_eval": NaN}', "resources.gpus_per_eval"),
    "constraints.max_flops NaN": in_raw('"constraints": {"max_flops": NaN}', "constraint", "max_flops", "finite"),
    "constraints.min_acc -Infinity": in_raw('"constraints": {"min_acc": -Infinity}', "min_acc", "finite"),
    "space_options.filters NaN": in_raw('"space_options": {"filters": NaN}', "filters"),
    "pruning.budgets NaN": in_raw('"space": "conv4", "pruning": {"methods": ["magnitude"], "budgets": [NaN]}',
                                  "pruning.budgets", "finite"),
    "pruning option NaN": in_raw('"space": "conv4", "pruning": {"methods": ["magnitude"], '
                                 '"options": {"magnitude": {"finetune_lr_scale": NaN}}}', "finetune_lr_scale"),
    "an unknown field NaN": in_raw('"colour": NaN', "colour"),
}

NUMBERS = {f"{field} = {value!r}": refused(spec(**({field: value} if "." not in field else
                                                    {field.split(".")[0]: {field.split(".")[1]: value}})),
                                           *field.split("."))
           for field, values in {
               "population": (-1, 0, 1e30, BIG, 10**100, "many", 4.5),
               "evaluations": (-5, 0, 1e30, BIG),
               "seed": (-1, 2**32, BIG, 1e30),
               "batch": (-1, 0, BIG),
               "training.epochs": (-1, 0, 201, BIG, 1e30),
               "training.batch_size": (0, BIG),
               "training.train_limit": (-1, BIG),
               "training.latency_repeats": (-1, BIG),
               "training.lr": (-0.1, 1e30),
               "training.grad_clip": (-1, 1e300),
               "resources.cpus_per_eval": (-1, BIG),
               "resources.gpus_per_eval": (-1, 1e30),
               "space_options.filters": (-1, BIG),
           }.items() for value in values}
NUMBERS |= {
    "constraints.max_flops = -1": refused(spec(constraints={"max_flops": -1}), "constraint", "max_flops"),
    "pruning.budgets = [2]": refused(spec(space="conv4", pruning={"methods": ["magnitude"], "budgets": [2]}),
                                     "pruning.budgets"),
    "pruning finetune_epochs = 2**63": refused(
        spec(space="conv4", pruning={"methods": ["magnitude"], "options": {"magnitude": {"finetune_epochs": BIG}}}),
        "finetune_epochs"),
    "5,000 objectives": refused(spec(objectives=["acc"] * 5000), "objectives"),
    "1,000 constraints": refused(spec(constraints={f"c{i}": 1 for i in range(1000)}), "constraints"),
}

NAMES = {
    "a right-to-left override": refused(spec(name="evil\u202egnp.exe"), "name", "U+202E"),
    "a NUL byte": refused(spec(name="a\x00b"), "name", "U+0000"),
    "a newline": refused(spec(name="line\nbreak"), "name", "U+000A"),
    "a zero-width space": refused(spec(name="a\u200bb"), "name", "U+200B"),
    "a joined emoji (ZWJ)": refused(spec(name="\U0001f468\u200d\U0001f469\u200d\U0001f467"), "name", "U+200D"),
    "a byte-order mark": refused(spec(name="\ufeffname"), "name"),
    "a private-use character": refused(spec(name="\ue000"), "name"),
    "10,000 characters": refused(spec(name="n" * 10_000), "name", "200"),
    "1,000 emoji": refused(spec(name="\U0001f680" * 1000), "name", "200"),
    "a lone surrogate": in_raw('"name": "\\ud800"', "name"),
    "a number": refused(spec(name=12), "name"),
}

OUTSIDE, MISSING = "outside", "does not exist"  # refused unread; looked up under the root, not found
TRAVERSALS = {  # name: (value, why it is refused)
    "parent": ("../../etc/passwd", "'..'"),
    "parent inside a name": ("mini.npz/../../../etc/passwd", "'..'"),
    "absolute": ("/etc/passwd", OUTSIDE),
    "proc": ("/proc/self/environ", OUTSIDE),
    "device": ("/dev/zero", OUTSIDE),
    "url-encoded parent": ("..%2f..%2fetc%2fpasswd", MISSING),
    "doubled dots": ("....//....//etc/passwd", MISSING),
    "windows drive": ("C:\\Windows\\win.ini", MISSING),
    "windows share": ("\\\\server\\share\\x.npz", MISSING),
    "home": ("~/.ssh/id_rsa", MISSING),
    "another home": ("~root/.bashrc", MISSING),
    "file url": ("file:///etc/passwd", MISSING),
    "NUL": ("\x00", "NUL"),
    "NUL before a suffix": ("/etc/passwd\x00.npz", "NUL"),
    "empty": ("", "empty"),
    "blank": ("   ", "empty"),
    "4,000 characters": ("a/" * 2000, "1024"),
    "symlink out of the root": ("escape.npz", OUTSIDE),
    "through a symlinked folder": ("linked/outside.npz", OUTSIDE),
    "the source tree": (str(REPO / "pyproject.toml"), OUTSIDE),
}
PATHS = {f"dataset: {name}": refused(spec(dataset=value), "dataset", why) for name, (value, why) in TRAVERSALS.items()}
PATHS |= {f"space_options.table: {name}": refused(spec(space="nb201", space_options={"table": value}), "table", why)
          for name, (value, why) in TRAVERSALS.items()}
PATHS |= {
    "table on a space without tables": refused(spec(space_options={"table": "/etc/passwd"}), "table", OUTSIDE),
    "dataset under a table search": refused(spec(space="nb201", space_options={"table": "t.csv"},
                                                 dataset="/etc/passwd"), "dataset", OUTSIDE),
}

QUERIES = {
    "limit -1": Case(get("/searches", limit=-1), 422, ("query.limit",)),
    "limit 0": Case(get("/searches", limit=0), 422, ("query.limit",)),
    "limit 2**63": Case(get("/searches", limit=BIG), 422, ("query.limit",)),
    "limit 1e3": Case(get("/searches", limit="1e3"), 422, ("query.limit",)),
    "offset -1": Case(get("/searches", offset=-1), 422, ("query.offset",)),
    "offset 2**63": Case(get("/searches", offset=BIG), 422, ("query.offset",)),
    "status traversal": Case(get("/searches", status="../../etc/passwd"), 422, ("query.status",)),
    "candidates limit huge": Case(get("/searches/{sid}/candidates", limit=BIG), 422, ("query.limit",)),
    "candidates offset -1": Case(get("/searches/{sid}/candidates", offset=-1), 422, ("query.offset",)),
    "min_acc nan": Case(get("/searches/{sid}/candidates", min_acc="nan"), 422, ("query.min_acc", "finite")),
    "max_flops inf": Case(get("/searches/{sid}/candidates", max_flops="inf"), 422, ("query.max_flops",)),
    "max_params -Infinity": Case(get("/searches/{sid}/candidates", max_params="-Infinity"), 422,
                                 ("query.max_params",)),
    "max_latency 1e999": Case(get("/searches/{sid}/candidates", max_latency="1e999"), 422, ("query.max_latency",)),
    "on_front maybe": Case(get("/searches/{sid}/candidates", on_front="maybe"), 422, ("query.on_front",)),
    "best_under nan": Case(get("/searches/{sid}/front", best_under="flops:nan"), 422, ("best_under",)),
    "best_under traversal": Case(get("/searches/{sid}/front", best_under="../../etc/passwd"), 422, ("best_under",)),
    "best_under 10,000 chars": Case(get("/searches/{sid}/front", best_under="f" * 10_000), 422, ("best_under",)),
    "points axis traversal": Case(get("/searches/{sid}/points", x="../../etc/passwd"), 422, ("query.x",)),
    "points max_dominated -1": Case(get("/searches/{sid}/points", max_dominated=-1), 422, ("max_dominated",)),
    "history max_generations 2**63": Case(get("/searches/{sid}/history", max_generations=BIG), 422,
                                          ("max_generations",)),
    "events after -1": Case(get("/searches/{sid}/events", after=-1), 422, ("query.after",)),
    "events after 2**63": Case(get("/searches/{sid}/events", after=BIG), 422, ("query.after",)),
    "export format traversal": Case(get("/searches/{sid}/candidates/1/export", format="../../etc/passwd"), 422,
                                    ("query.format",)),
    "export format NUL": Case(get("/searches/{sid}/candidates/1/export", format="\x00"), 422, ("query.format",)),
}

IDS = {
    "search id -1": Case(get("/searches/-1"), 422, ("path.search_id",)),
    "search id 0": Case(get("/searches/0"), 422, ("path.search_id",)),
    "search id abc": Case(get("/searches/abc"), 422, ("path.search_id",)),
    "search id 1e3": Case(get("/searches/1e3"), 422, ("path.search_id",)),
    "search id 2**63": Case(get(f"/searches/{BIG}"), 422, ("path.search_id",)),
    "search id 10**30": Case(get(f"/searches/{10**30}"), 422, ("path.search_id",)),
    "search id missing": Case(get("/searches/999999"), 404, ("search", "999999")),
    "candidate id -1": Case(get("/searches/{sid}/candidates/-1"), 422, ("path.candidate_id",)),
    "candidate id 2**64": Case(get("/searches/{sid}/candidates/" + str(2**64)), 422, ("path.candidate_id",)),
    "cancel id abc": Case({"method": "POST", "url": "/searches/abc/cancel"}, 422, ("path.search_id",)),
    "resume id 2**63": Case({"method": "POST", "url": f"/searches/{BIG}/resume"}, 422, ("path.search_id",)),
    "resume missing": Case({"method": "POST", "url": "/searches/999999/resume"}, 404, ("search",)),
    "delete id -5": Case({"method": "DELETE", "url": "/searches/-5"}, 422, ("path.search_id",)),
    "search id traversal": Case(get("/searches/..%2f..%2fetc%2fpasswd"), 404, None),
    "dashboard file traversal": Case(get("/static/..%2f..%2fservice%2fapp.py"), 404, None),
    "dashboard file NUL": Case(get("/static/%00.js"), 404, ("dashboard file",)),
    "dashboard file backslashes": Case(get("/static/..%5c..%5capp.py"), 404, ("dashboard file",)),
    "docs asset traversal": Case(get("/docs/assets/..%2f..%2fapp.py"), 404, None),
    "docs asset unknown": Case(get("/docs/assets/app.py"), 404, ("docs asset",)),
}

TOKENS = {
    "a 10,000-character bearer token": Case(post(VALID, headers={"Authorization": "Bearer " + "t" * 10_000}), 401,
                                            ("token",)),
    "a 5,000-character query token": Case(post(VALID, params={"token": "t" * 5000}, headers={"Authorization": ""}),
                                          401, ("token",)),
    "a malformed Authorization header": Case(post(VALID, headers={"Authorization": "Basic x"}), 401, ("Bearer",)),
}

TABLE = OVERSIZED_AND_MALFORMED | NOT_FINITE | NUMBERS | NAMES | PATHS | QUERIES | IDS | TOKENS


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A data root with a small valid dataset, and links that lead out of it to valid datasets."""
    root, outside = tmp_path_factory.mktemp("data_root"), tmp_path_factory.mktemp("outside")
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.random((20, 8, 8), dtype=np.float32), "y_train": np.arange(20) % 2,
              "x_test": rng.random((10, 8, 8), dtype=np.float32), "y_test": np.arange(10) % 2}
    np.savez(root / "mini.npz", **arrays)
    np.savez(outside / "outside.npz", **arrays)
    (root / "escape.npz").symlink_to(outside / "outside.npz")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def service(tmp_path_factory, data_root):
    db = str(tmp_path_factory.mktemp("hostile") / "dvolver.db")
    with live_service(Settings(db=db, open_reads=False, max_concurrent=100, data_roots=[str(data_root)])) as (url, app):
        store = app.state.store
        token = create_token(store, "alice")
        http = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"})
        created = http.post("/searches", json=spec(name="the one before"))
        assert created.status_code == 201, created.text
        yield {"http": http, "store": store, "sid": created.json()["id"], "db": db}
        http.close()


def _said(response: httpx.Response) -> str:
    detail = response.json()["detail"]
    if isinstance(detail, list):
        return " | ".join(".".join(str(p) for p in d["loc"]) + ": " + d["msg"] for d in detail)
    return str(detail)


@pytest.mark.parametrize("case", TABLE.values(), ids=list(TABLE))
def test_a_hostile_input_is_refused_naming_the_field_and_creates_nothing(service, case: Case):
    store, http = service["store"], service["http"]
    before = store.count_searches()
    request = dict(case.request, url=case.request["url"].replace("{sid}", str(service["sid"])))
    response = http.request(**request)
    assert response.status_code == case.status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    said = _said(response)
    for word in case.said or ():
        assert word in said, f"{word!r} not in {said[:500]!r}"
    text = response.content.decode("utf-8")  # valid UTF-8 even when the input was not
    assert "Traceback" not in text and str(REPO) not in text and 'File "' not in text
    assert store.count_searches() == before


def test_after_the_table_the_service_is_healthy_and_accepts_a_valid_search(service):
    http, store = service["http"], service["store"]
    assert http.get("/healthz").json() == {"status": "ok", "db": "ok"}
    before = store.count_searches()
    created = http.post("/searches", json=spec(name="still fine"))
    assert created.status_code == 201, created.text
    assert store.count_searches() == before + 1
    assert http.get(f"/searches/{created.json()['id']}").json()["name"] == "still fine"


@pytest.mark.parametrize("name", ["café", "名前 — 二", "rocket \U0001f680", "Ωmega (v2) #3"])
def test_printable_unicode_names_are_accepted(service, name):
    created = service["http"].post("/searches", json=spec(name=name))
    assert created.status_code == 201, created.text
    assert created.json()["name"] == name


def test_a_dataset_under_a_data_root_is_accepted_by_a_relative_or_absolute_path(service, data_root):
    http, store = service["http"], service["store"]
    for given in ("mini.npz", str(data_root / "mini.npz"), str(data_root) + "/./mini.npz"):
        created = http.post("/searches", json=spec(dataset=given))
        assert created.status_code == 201, (given, created.text)
        assert store.get_search(created.json()["id"]).spec["dataset"] == str((data_root / "mini.npz").resolve())


def test_resuming_a_search_whose_files_left_the_data_roots_is_refused(service, data_root, tmp_path):
    http, store = service["http"], service["store"]
    sid = http.post("/searches", json=spec(dataset="mini.npz")).json()["id"]
    assert http.post(f"/searches/{sid}/cancel").json()["status"] == "cancelled"
    # The same store behind a service whose operator has since narrowed its data roots.
    elsewhere = tmp_path / "other_root"
    elsewhere.mkdir()
    settings = Settings(db=service["db"], open_reads=False, data_roots=[str(elsewhere)])
    with live_service(settings) as (url, app):
        token = create_token(app.state.store, "alice-again", owner="alice")
        response = httpx.post(f"{url}/searches/{sid}/resume", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422 and "dataset" in _said(response) and "outside" in _said(response)
    assert store.get_search(sid).status == "cancelled"
