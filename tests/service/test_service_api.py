"""The REST API against a real service on a loopback port: access, limits, results, events."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from dvolver.client import ServiceClient
from dvolver.tokens import create_token
from service.runner import Runner
from service.settings import Settings
from tests.helpers import NB201_TABLE, SHARED_DATA, TINY, data_file, live_service, table_spec

# What access, limit and validation tests submit: a digits search, so that they need no shared data.
SMALL = TINY | {"evaluations": 4, "population": 2}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("service") / "dvolver.db")
    settings = Settings(db=db, open_reads=False, max_population=50, max_evaluations=500, max_concurrent=3,
                        data_roots=[str(SHARED_DATA)])
    with live_service(settings) as (url, app):
        store = app.state.store
        alice, bob = create_token(store, "alice"), create_token(store, "bob")
        http = httpx.Client(base_url=url, timeout=30)
        created = http.post("/searches", json=SMALL | {"name": "alice's"}, headers=_auth(alice))
        assert created.status_code == 201, created.text
        Runner(db, "test-runner", executor="inline").serve(once=True)
        yield {"url": url, "http": http, "store": store, "alice": alice, "bob": bob, "search": created.json()["id"]}


@pytest.fixture(scope="module")
def table(service):
    """A finished NAS-Bench-201 table search of alice's: many candidates and generations, in seconds."""
    path = data_file(NB201_TABLE)
    created = service["http"].post("/searches", json=table_spec(path, name="alice's table"),
                                   headers=_auth(service["alice"]))
    assert created.status_code == 201, created.text
    Runner(service["store"].url, "test-runner", executor="inline").serve(once=True)
    return {"search": created.json()["id"], "path": path}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_submitted_search_is_queued_then_run_by_a_runner(service):
    http, sid = service["http"], service["search"]
    detail = http.get(f"/searches/{sid}", headers=_auth(service["alice"])).json()
    assert detail["status"] == "finished" and detail["owner"] == "alice" and detail["dataset"] == "digits"
    assert detail["progress"]["evaluations"] == 4 and detail["progress"]["front_size"] > 0
    assert detail["hypervolume_history"] and detail["timings"]["running_seconds"] >= 0
    assert detail["objective_info"]["flops"]["cost"] and not detail["objective_info"]["acc"]["cost"]


def test_every_write_without_a_token_is_401_and_creates_nothing(service):
    http, sid, store = service["http"], service["search"], service["store"]
    before = store.count_searches()
    for method, path in (("POST", "/searches"), ("POST", f"/searches/{sid}/cancel"),
                         ("POST", f"/searches/{sid}/resume"), ("DELETE", f"/searches/{sid}")):
        response = http.request(method, path, json=SMALL if path == "/searches" else None)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
        assert "token" in response.json()["detail"]
    assert http.post("/searches", json={}, headers=_auth("dvt_forged")).status_code == 401
    assert store.count_searches() == before
    assert store.get_search(sid).status == "finished"


def test_reads_need_a_token_when_the_service_is_closed(service):
    response = service["http"].get("/searches")
    assert response.status_code == 401
    assert service["http"].get("/healthz").json() == {"status": "ok", "db": "ok"}


def test_another_owners_search_is_404(service):
    http, sid, bob = service["http"], service["search"], _auth(service["bob"])
    cid = http.get(f"/searches/{sid}/front", headers=_auth(service["alice"])).json()["items"][0]["id"]
    for method, path in (("GET", f"/searches/{sid}"), ("GET", f"/searches/{sid}/front"),
                         ("GET", f"/searches/{sid}/candidates"), ("GET", f"/searches/{sid}/candidates/{cid}"),
                         ("GET", f"/searches/{sid}/candidates/{cid}/export"), ("GET", f"/searches/{sid}/points"),
                         ("GET", f"/searches/{sid}/history"), ("GET", f"/searches/{sid}/events"),
                         ("POST", f"/searches/{sid}/cancel"), ("POST", f"/searches/{sid}/resume"),
                         ("DELETE", f"/searches/{sid}")):
        response = http.request(method, path, headers=bob)
        assert response.status_code == 404 and response.json() == {"detail": f"no search {sid}"}, (method, path)
    assert http.get("/searches", headers=bob).json()["total"] == 0
    assert http.get("/searches", headers=_auth(service["alice"])).json()["total"] >= 1


@pytest.mark.parametrize(("body", "field"), [
    ({"population": 51}, ["body", "population"]),
    ({"evaluations": 501}, ["body", "evaluations"]),
    ({"training": {"epochs": 201}}, ["body", "training", "epochs"]),
    ({"objectives": ["acc", "speed"]}, ["body", "objectives"]),
    ({"population": "many"}, ["body", "population"]),
    ({"colour": "red"}, ["body", "colour"]),
    ({"space": "conv4", "space_options": {}, "pruning": {"methods": ["obd"]}}, ["body", "pruning", "methods"]),
    ({"space": "conv4", "space_options": {}, "pruning": {"methods": ["reparam"], "budgets": [0]}},
     ["body", "pruning", "budgets"]),
    ({"space": "conv4", "space_options": {}, "training": {"epochs": 150},
      "pruning": {"methods": ["magnitude"], "options": {"magnitude": {"finetune_epochs": 100}}}},
     ["body", "pruning", "options", "magnitude", "finetune_epochs"]),
    ({"early_stopping": {"method": "sha", "eta": 1}}, ["body", "early_stopping", "eta"]),
    ({"early_stopping": {"method": "hyperband"}}, ["body", "early_stopping", "method"]),
])
def test_an_invalid_or_oversized_spec_is_422_naming_the_field_and_creates_nothing(service, body, field):
    store = service["store"]
    before = store.count_searches()
    response = service["http"].post("/searches", json=SMALL | body,
                                    headers=_auth(service["alice"]))
    assert response.status_code == 422
    assert field in [d["loc"] for d in response.json()["detail"]]
    assert store.count_searches() == before


def test_early_stopping_longer_than_full_training_is_422_naming_the_field_and_creates_nothing(service):
    store = service["store"]
    before = store.count_searches()
    response = service["http"].post("/searches", json=SMALL | {"early_stopping": {"method": "asha", "min_epochs": 4,
                                                                                  "max_epochs": 2}},
                                    headers=_auth(service["alice"]))
    assert response.status_code == 422 and "early_stopping.min_epochs" in response.text
    assert store.count_searches() == before


def test_an_oversized_body_is_413_and_creates_nothing(service):
    store = service["store"]
    before = store.count_searches()
    padded = json.dumps(SMALL | {"name": "x" * 100, "space_options": {"filters": 4, "padding": "y" * 100_000}}).encode()
    headers = _auth(service["alice"]) | {"Content-Type": "application/json"}
    declared = service["http"].post("/searches", content=padded, headers=headers)
    chunked = service["http"].post("/searches", content=iter([padded[:50_000], padded[50_000:]]), headers=headers)
    for response in (declared, chunked):
        assert response.status_code == 413 and "limit" in response.json()["detail"]
    assert store.count_searches() == before


def test_concurrent_searches_per_owner_are_limited(service):
    http, bob = service["http"], _auth(service["bob"])
    ids = [http.post("/searches", json=SMALL, headers=bob).json()["id"] for _ in range(3)]
    refused = http.post("/searches", json=SMALL, headers=bob)
    assert refused.status_code == 429 and "max_concurrent" in refused.text
    for sid in ids:
        assert http.post(f"/searches/{sid}/cancel", headers=bob).json()["status"] == "cancelled"
        assert http.delete(f"/searches/{sid}", headers=bob).status_code == 204
        assert http.get(f"/searches/{sid}", headers=bob).status_code == 404


def test_simultaneous_submissions_cannot_pass_the_concurrency_limit_together(service):
    from concurrent.futures import ThreadPoolExecutor

    carol = _auth(create_token(service["store"], "carol"))
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: service["http"].post("/searches", json=SMALL, headers=carol), range(8)))
    assert sorted(r.status_code for r in responses) == [201] * 3 + [429] * 5
    assert service["store"].count_searches(owner="carol") == 3
    for created in (r for r in responses if r.status_code == 201):  # cancelled: no later runner trains them
        assert service["http"].post(f"/searches/{created.json()['id']}/cancel", headers=carol).status_code == 200


def test_front_knee_and_best_under_a_budget(service, table):
    http, sid, alice = service["http"], table["search"], _auth(service["alice"])
    front = http.get(f"/searches/{sid}/front", headers=alice).json()["items"]
    assert front and all(c["on_front"] and c["status"] == "finished" for c in front)
    flops = [c["objectives"]["flops"] for c in front]
    accs = [c["objectives"]["acc"] for c in front]
    # A front over (acc max, flops min): sorted by accuracy, costs fall as accuracy falls.
    assert accs == sorted(accs, reverse=True) and flops == sorted(flops, reverse=True)
    knee = http.get(f"/searches/{sid}/front", params={"knee": "true"}, headers=alice).json()["items"]
    assert len(knee) == 1 and knee[0]["id"] in {c["id"] for c in front}
    budget = sorted(flops)[len(flops) // 2]
    best = http.get(f"/searches/{sid}/front", params={"best_under": f"flops:{budget}"}, headers=alice).json()
    expected = max((c for c in front if c["objectives"]["flops"] <= budget), key=lambda c: c["objectives"]["acc"])
    assert [c["id"] for c in best["items"]] == [expected["id"]]
    none = http.get(f"/searches/{sid}/front", params={"best_under": "flops:1"}, headers=alice).json()
    assert none["items"] == [] and "cheapest" in none["note"]
    # A bound too large for a float is no bound: the most accurate member (the schema's pattern admits it).
    unbounded = http.get(f"/searches/{sid}/front", params={"best_under": "flops:1e999"}, headers=alice).json()
    assert [c["id"] for c in unbounded["items"]] == [front[0]["id"]]
    bad = http.get(f"/searches/{sid}/front", params={"best_under": "acc:3"}, headers=alice)
    assert bad.status_code == 422 and "best_under" in bad.text


def test_candidates_are_paged_and_filtered(service, table):
    http, sid, alice = service["http"], table["search"], _auth(service["alice"])
    everything = http.get(f"/searches/{sid}/candidates", params={"limit": 1000}, headers=alice).json()
    assert everything["total"] == len(everything["items"]) >= 40
    page = http.get(f"/searches/{sid}/candidates", params={"limit": 7, "offset": 7}, headers=alice).json()
    assert [c["id"] for c in page["items"]] == [c["id"] for c in everything["items"][7:14]]
    accs = sorted(c["objectives"]["acc"] for c in everything["items"] if c["status"] == "finished")
    cut = accs[len(accs) // 2]
    good = http.get(f"/searches/{sid}/candidates", params={"min_acc": cut, "max_flops": 1e8, "limit": 1000},
                    headers=alice).json()
    assert good["items"] and all(c["objectives"]["acc"] >= cut and c["objectives"]["flops"] <= 1e8
                                 for c in good["items"])
    assert good["total"] == sum(1 for c in everything["items"] if c["objectives"].get("acc", -1) >= cut
                                and c["objectives"].get("flops", 2e8) <= 1e8)


def test_a_candidate_comes_with_its_cell_and_a_genotype_export(service, table):
    http, sid, alice = service["http"], table["search"], _auth(service["alice"])
    first = http.get(f"/searches/{sid}/front", headers=alice).json()["items"][0]
    detail = http.get(f"/searches/{sid}/candidates/{first['id']}", headers=alice).json()
    assert detail["architecture"]["space"] == "nb201" and len(detail["architecture"]["cell"]["edges"]) == 6
    # A table look-up trains nothing: only the genotype can be exported.
    assert list(detail["exports"]) == ["genotype"]
    genotype = http.get(detail["exports"]["genotype"], headers=alice)
    assert genotype.status_code == 200 and genotype.json()["genome"] == first["genome"]
    refused = http.get(f"/searches/{sid}/candidates/{first['id']}/export", params={"format": "state_dict"},
                       headers=alice)
    assert refused.status_code == 400 and "weights" in refused.json()["detail"]


def test_points_and_history_for_the_plots(service, table):
    http, sid, alice = service["http"], table["search"], _auth(service["alice"])
    pts = http.get(f"/searches/{sid}/points", params={"x": "flops", "y": "acc", "max_dominated": 5},
                   headers=alice).json()
    front = http.get(f"/searches/{sid}/front", headers=alice).json()["items"]
    assert sorted(p["id"] for p in pts["front"]) == sorted(c["id"] for c in front)
    assert [p["x"] for p in pts["front"]] == sorted(p["x"] for p in pts["front"])
    assert pts["dominated_shown"] == len(pts["dominated"]) <= 5 < pts["dominated_total"]
    history = http.get(f"/searches/{sid}/history", headers=alice).json()
    assert history["total_generations"] == len(history["generations"]) >= 3
    assert {m["id"] for m in history["generations"][-1]["front"]} == {c["id"] for c in front}
    thinned = http.get(f"/searches/{sid}/history", params={"max_generations": 2}, headers=alice).json()
    assert len(thinned["generations"]) == 2 and thinned["generations"][-1] == history["generations"][-1]


def _run_as(store, owner: str, spec: dict) -> int:
    """A search of `owner`'s, run to its end by the real engine in this process."""
    from dvolver.api import versions
    from dvolver.engine import run
    from dvolver.executors import InlineExecutor
    from dvolver.spec import SearchSpec

    search_id = store.create_search(SearchSpec.from_dict(spec).model_dump(mode="json"), versions(), owner=owner)
    run(store, search_id, InlineExecutor())
    return search_id


def _minimised_points(candidates: list[dict]) -> np.ndarray:
    """(-acc, flops) of each candidate: both minimised, as pymoo's indicator takes them."""
    return np.array([[-c["objectives"]["acc"], c["objectives"]["flops"]] for c in candidates], dtype=float)


def test_searches_of_one_problem_share_a_hypervolume_reference(service, table):
    """Two random searches on one table with one seed, 20 and 60 evaluations: the longer one met every
    network the shorter one did, so its front dominates; on the shared reference its value is larger,
    and both equal pymoo's hypervolume of their fronts on the reference computed here from the candidates."""
    from pymoo.indicators.hv import HV

    http, store = service["http"], service["store"]
    erin = _auth(create_token(store, "erin"))
    spec = table_spec(table["path"], algorithm="random", population=10, seed=4)
    short = _run_as(store, "erin", spec | {"evaluations": 20, "name": "short"})
    long = _run_as(store, "erin", spec | {"evaluations": 60, "name": "long"})
    assert {c.key for c in store.candidates(short)} <= {c.key for c in store.candidates(long)}

    listed = {s["id"]: s for s in http.get("/searches", headers=erin).json()["items"]}
    shared = {sid: listed[sid]["shared_hypervolume"] for sid in (short, long)}
    # Alice's search of the same table is hers: it is not in erin's group, nor does it move erin's reference.
    assert shared[short]["searches"] == shared[long]["searches"] == [short, long]
    assert shared[short]["reference"] == shared[long]["reference"]
    for sid in (short, long):
        assert http.get(f"/searches/{sid}", headers=erin).json()["shared_hypervolume"] == shared[sid]

    seen = np.concatenate([_minimised_points(http.get(f"/searches/{sid}/candidates", headers=erin,
                                                      params={"status": "finished", "limit": 1000}).json()["items"])
                           for sid in (short, long)])
    ideal, nadir = seen.min(axis=0), seen.max(axis=0)
    reference = nadir + 0.1 * (nadir - ideal)
    assert shared[long]["ideal"] == pytest.approx({"acc": -ideal[0], "flops": ideal[1]})
    assert shared[long]["reference"] == pytest.approx({"acc": -reference[0], "flops": reference[1]})

    fronts = {sid: _minimised_points(http.get(f"/searches/{sid}/front", headers=erin).json()["items"])
              for sid in (short, long)}
    assert all(any((q <= p).all() for q in fronts[long]) for p in fronts[short])  # the long front dominates
    box = np.prod(reference - ideal)
    for sid in (short, long):
        assert shared[sid]["value"] == pytest.approx(HV(ref_point=reference)(fronts[sid]) / box, rel=1e-9)
    assert 0 < shared[short]["value"] < shared[long]["value"] <= 1


def test_events_replay_the_journal_and_end(service, table):
    client = ServiceClient(service["url"], service["alice"])
    events = list(client.events(table["search"]))
    kinds = [k for k, _ in events]
    assert kinds[-1] == "end" and events[-1][1] == {"status": "finished"}
    assert kinds.count("candidate") >= 40 and "front" in kinds and "generation" in kinds
    statuses = [d["status"] for k, d in events if k == "status"]
    assert statuses[0] == "queued" and statuses[-1] == "finished"
    # A page that has drawn the detail follows from its last_event_id: nothing it has seen comes again.
    detail = service["http"].get(f"/searches/{table['search']}", headers=_auth(service["alice"])).json()
    assert detail["dataset"] == "table nb201_cifar10.csv"
    tail = service["http"].get(f"/searches/{table['search']}/events", params={"after": detail["last_event_id"]},
                               headers=_auth(service["alice"])).text
    assert "event: candidate" not in tail and "event: end" in tail
    # Reconnecting after an event id sends only what came later.
    response = service["http"].get(f"/searches/{table['search']}/events",
                                   headers=_auth(service["alice"]) | {"Last-Event-ID": "1000000"})
    assert response.text.strip().splitlines()[-2:] == ["event: end", 'data: {"status": "finished"}']


def test_resume_and_delete_follow_the_status(service, table):
    http, sid, alice = service["http"], table["search"], _auth(service["alice"])
    conflict = http.post(f"/searches/{sid}/resume", headers=alice)
    assert conflict.status_code == 409 and "finished" in conflict.json()["detail"]
    assert http.post(f"/searches/{sid}/cancel", headers=alice).status_code == 409
    # A cancelled search resumes from the queue; a finished one is deleted with everything it holds.
    other = http.post("/searches", json=table_spec(table["path"], evaluations=20), headers=alice).json()["id"]
    assert http.post(f"/searches/{other}/cancel", headers=alice).json()["status"] == "cancelled"
    assert http.post(f"/searches/{other}/resume", headers=alice).json()["status"] == "queued"
    Runner(service["store"].url, "test-runner", executor="inline").serve(once=True)
    assert http.get(f"/searches/{other}", headers=alice).json()["status"] == "finished"
    assert http.delete(f"/searches/{other}", headers=alice).status_code == 204
    assert http.get(f"/searches/{other}/front", headers=alice).status_code == 404
    assert service["store"].candidates(other) == [] and service["store"].events(other) == []


def test_a_malformed_last_event_id_is_ignored(service):
    for header in ("\u00b2".encode(), b"9" * 30, b"-1", b"abc"):  # a superscript two passes str.isdigit()
        response = service["http"].get(f"/searches/{service['search']}/events",
                                       headers=_auth(service["alice"]) | {"Last-Event-ID": header})
        assert response.status_code == 200 and response.text.rstrip().endswith('data: {"status": "finished"}')


def test_the_api_docs_are_served_without_a_cdn(service):
    http = service["http"]
    page = http.get("/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text.replace("https://fastapi", "")
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
        assert http.get(asset).status_code == 200
    assert "/searches" in http.get("/openapi.json").json()["paths"]


def test_the_schema_names_every_error_a_route_gives_and_the_values_the_server_takes(service):
    schema = service["http"].get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        if not path.startswith(("/searches", "/whoami")):
            continue
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert "401" in codes and "503" in codes, (method, path, codes)
            assert ("{search_id}" not in path) or "404" in codes, (method, path, codes)
    assert {"400", "413", "422"} <= set(schema["paths"]["/searches"]["post"]["responses"])
    specs = schema["components"]["schemas"]
    spec = next(s for name, s in specs.items() if name.startswith("SearchSpec") or name.startswith("Submitted"))
    assert "surrogate" in spec["properties"]["algorithm"]["enum"]
    pruning = specs["PruningSpec"]["properties"]
    assert pruning["methods"]["items"]["enum"] == ["aslp", "edgepopup", "supermask", "reparam", "magnitude", "joint"]
    assert pruning["budgets"]["items"] | {"type": "number"} == {"exclusiveMinimum": 0, "maximum": 1, "type": "number"}


def test_a_method_a_path_does_not_take_is_405_naming_every_method_it_does(service):
    http = service["http"]
    assert http.request("OPTIONS", "/searches").headers["allow"] == "GET, POST"
    assert http.request("PUT", f"/searches/{service['search']}").headers["allow"] == "DELETE, GET"


def test_whoami_needs_a_token_where_reads_are_closed(service):
    assert service["http"].get("/whoami").status_code == 401
    me = service["http"].get("/whoami", headers=_auth(service["alice"])).json()
    assert me == {"owner": "alice", "open_reads": False}
