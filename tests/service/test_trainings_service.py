"""Final trainings through the service (issue 19), against a real service on a loopback port and real runners:
POST /searches/{id}/trainings with auth, ownership and limits, bad input refused naming the field with nothing
created, a runner training what was queued, cancel and resume, the exports, the rank survival, the training
events on the SSE stream; two trainings side by side on a 2-CPU local Ray; a dead runner's training taken over
and finished with the weights of a straight run."""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest
import torch

from dvolver import data
from dvolver.executors import InlineExecutor, RayExecutor
from dvolver.spec import SearchSpec
from dvolver.store import Store
from dvolver.tokens import create_token
from dvolver.training_runs import run_trainings, train_epoch
from dvolver.trainings import create_trainings
from service.runner import Runner
from service.settings import Settings
from tests.helpers import SHARED_DATA, TINY, live_service

# 2 epochs of 160 digits at a tiny scale: about a second each on a 2-core CPU.
RECIPE = {"epochs": 2, "batch_size": 32, "train_limit": 160, "device": "cpu",
          "scale": {"nasnet": {"cells": 1, "filters": 4}}}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("trainings") / "dvolver.db")
    settings = Settings(db=db, open_reads=False, max_trainings=3, max_final_epochs=50,
                        data_roots=[str(SHARED_DATA)])
    with live_service(settings) as (url, app):
        store = app.state.store
        alice, bob = create_token(store, "alice"), create_token(store, "bob")
        http = httpx.Client(base_url=url, timeout=60)
        created = http.post("/searches", json=TINY | {"evaluations": 4, "population": 2}, headers=_auth(alice))
        assert created.status_code == 201, created.text
        Runner(db, "test-runner", executor="inline").serve(once=True)
        yield {"http": http, "store": store, "db": db, "alice": alice, "bob": bob, "search": created.json()["id"]}


def test_a_queued_training_is_run_by_a_runner_and_read_back_with_its_exports(service):
    http, sid, alice = service["http"], service["search"], _auth(service["alice"])
    queued = http.post(f"/searches/{sid}/trainings", json={"candidates": "knee", "recipe": RECIPE}, headers=alice)
    assert queued.status_code == 201, queued.text
    [training] = queued.json()
    assert (training["status"], training["epoch"], training["epochs"], training["exports"]) == ("queued", 0, 2, {})

    Runner(service["db"], "trainer", executor="inline").serve(once=True)
    done = http.get(f"/trainings/{training['id']}", headers=alice).json()
    assert done["status"] == "finished" and done["runner"] is None and done["epoch"] == 2
    assert [m["epoch"] for m in done["history"]] == [1, 2] and all(m["worker"] for m in done["history"])
    assert 0 <= done["test_acc"] <= 100 and done["flops"] == 2 * done["macs"] > 0 and done["params"] > 0
    assert done["recipe"]["scale"]["nasnet"] == {"cells": 1, "filters": 4}
    assert set(done["exports"]) == {"genotype", "state_dict", "torch_export", "onnx"}

    weights = http.get(done["exports"]["state_dict"], headers=alice)
    assert weights.status_code == 200, weights.text
    state = torch.load(io.BytesIO(weights.content), weights_only=True)
    assert state and not any(k.startswith("aux_head.") for k in state)  # the network deployed, not trained
    listed = http.get("/trainings", params={"search_id": sid}, headers=alice).json()
    assert [t["id"] for t in listed["items"]] == [training["id"]] and listed["total"] == 1

    survival = http.get(f"/searches/{sid}/survival", headers=alice).json()
    assert [p["training"] for p in survival["pairs"]] == [training["id"]]
    assert survival["final_front"] == [training["id"]] and survival["kendall_tau_val"] is None  # one pair: no tau

    kinds = _events(http, sid, alice)
    statuses = [e for e in kinds if e.startswith("training")]
    assert statuses[0] == "training queued" and statuses[-1] == "training finished", statuses


def _events(http: httpx.Client, sid: int, headers: dict) -> list[str]:
    """The event stream as a client reads it (it ends once the search and its trainings have stopped)."""
    seen, kind = [], None
    with http.stream("GET", f"/searches/{sid}/events", headers=headers) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind == "training":
                seen.append(f"training {json.loads(line.removeprefix('data: '))['status']}")
            elif line.startswith("data: ") and kind:
                seen.append(kind)
    return seen


def test_writes_need_a_token_and_another_owners_training_does_not_exist(service):
    http, sid, store = service["http"], service["search"], service["store"]
    before = len(store.list_trainings())
    assert http.post(f"/searches/{sid}/trainings", json={"candidates": "knee"}).status_code == 401
    assert http.post(f"/searches/{sid}/trainings", json={"candidates": "knee"},
                     headers=_auth(service["bob"])).status_code == 404  # bob cannot see alice's search
    assert len(store.list_trainings()) == before
    some = store.list_trainings()[0].id
    for method, path in (("GET", f"/trainings/{some}"), ("POST", f"/trainings/{some}/cancel"),
                         ("POST", f"/trainings/{some}/resume"), ("GET", f"/trainings/{some}/export")):
        response = http.request(method, path, headers=_auth(service["bob"]))
        assert response.status_code == 404 and response.json()["detail"] == f"no training {some}", (method, path)
    assert http.get("/trainings", headers=_auth(service["bob"])).json()["total"] == 0
    assert http.get(f"/trainings/{some}").status_code == 401  # a closed service: reads need a token too


@pytest.mark.parametrize(("body", "status", "field", "says"), [
    pytest.param({"candidates": [99999]}, 404, None, "has no candidate 99999", id="not in the search"),
    pytest.param({"candidates": "knee", "genome": "nasnet-a"}, 422, "candidates", "not both", id="both"),
    pytest.param({"candidates": "knee", "recipe": {"epochs": 0}}, 422, "recipe", "epochs", id="a bad recipe field"),
    pytest.param({"candidates": "knee", "recipe": {"epochs": 51}}, 422, "recipe", "max_final_epochs",
                 id="over the epochs limit"),
    pytest.param({"candidates": "knee", "recipe": {"dataset": "/etc/passwd"}}, 422, "recipe", "data roots",
                 id="a dataset outside the data roots"),
    pytest.param({"candidates": "knee", "recipe": {"scale": {"nasnet": {"filters": 1}}}}, 422, "recipe", "scale",
                 id="a scale the space cannot build"),
    pytest.param({"genome": "[1, 2]"}, 422, "genome", "genome", id="a genome of the wrong length"),
    pytest.param({"candidates": "knee", "recipe": {"dataset": "cifar10_subset.npz"}}, 422, "recipe", "search",
                 id="a dataset of another shape"),
])
def test_bad_input_is_refused_naming_the_field_and_creates_nothing(service, body, status, field, says):
    http, store = service["http"], service["store"]
    before = len(store.list_trainings())
    response = http.post(f"/searches/{service['search']}/trainings", json=body, headers=_auth(service["alice"]))
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    text = detail if isinstance(detail, str) else " ".join(d["msg"] for d in detail)
    assert says in text, text
    if field is not None:
        assert detail[0]["loc"][:2] == ["body", field], detail
    assert len(store.list_trainings()) == before


def test_cancel_and_resume_move_a_training_and_limits_hold(service):
    http, sid, alice, store = service["http"], service["search"], _auth(service["alice"]), service["store"]
    [queued] = http.post(f"/searches/{sid}/trainings", json={"genome": "nasnet-a", "recipe": RECIPE},
                         headers=alice).json()
    assert queued["candidate_id"] is None
    cancelled = http.post(f"/trainings/{queued['id']}/cancel", headers=alice).json()
    assert cancelled["status"] == "cancelled"
    again = http.post(f"/trainings/{queued['id']}/cancel", headers=alice)
    assert again.status_code == 409 and "only queued or running" in again.json()["detail"]
    assert http.post(f"/trainings/{queued['id']}/resume", headers=alice).json()["status"] == "queued"
    finished = next(t for t in store.list_trainings(sid) if t.status == "finished")
    assert http.post(f"/trainings/{finished.id}/resume", headers=alice).status_code == 409
    unfinished = http.get(f"/trainings/{queued['id']}/export", headers=alice)
    assert unfinished.status_code == 409 and "not finished" in unfinished.json()["detail"]

    # max_trainings = 3 queued or running per owner: one is queued, so three more are one too many.
    before = len(store.list_trainings())
    over = http.post(f"/searches/{sid}/trainings", json={"genome": "nasnet-a", "recipe": RECIPE}, headers=alice)
    assert over.status_code == 201
    too_many = http.post(f"/searches/{sid}/trainings", json={"candidates": [1, 2], "recipe": RECIPE}, headers=alice)
    assert too_many.status_code == 429 and "max_trainings = 3" in too_many.json()["detail"]
    assert len(store.list_trainings()) == before + 1
    for t in store.list_trainings(sid):
        if t.status == "queued":
            store.request_training_cancel(t.id)


@pytest.fixture(scope="module")
def straight(service) -> dict[int, str]:
    """The weights' SHA-256 of the search's first two finished candidates trained straight, one after the
    other in this process: what Ray workers and a takeover must end with."""
    store, sid = service["store"], service["search"]
    ids = create_trainings(store, sid, _two_finished(store, sid), RECIPE)
    assert run_trainings(store, ids, InlineExecutor()) == {i: "finished" for i in ids}
    return {store.get_training(i).candidate_id: store.get_training(i).weights_sha256 for i in ids}


def _two_finished(store: Store, search_id: int) -> list[int]:
    return [c.id for c in store.candidates(search_id, ("finished",))][:2]


def test_two_trainings_run_side_by_side_on_a_2_cpu_local_ray_with_a_straight_run_s_weights(ray_local, service,
                                                                                             straight):
    store, sid = service["store"], service["search"]
    ids = create_trainings(store, sid, list(straight), RECIPE)
    pool = RayExecutor(workers=2)
    assert pool.slots == 2
    assert run_trainings(store, ids, pool) == {i: "finished" for i in ids}
    done = [store.get_training(i) for i in ids]
    # Each epoch is committed as it arrives: the two trainings' first epochs come before either's second,
    # which they could not if one waited for the other, and they ran in two worker processes.
    order = [(e["payload"]["training"], e["payload"]["epoch"]) for e in store.events(sid, kinds=("training",))
             if e["payload"]["training"] in ids and e["payload"]["status"] == "running" and e["payload"]["epoch"]]
    assert sorted(order[:2]) == [(ids[0], 1), (ids[1], 1)], order
    assert len({t.history[0]["worker"] for t in done}) == 2
    # Where an epoch ran changes no weight: bit for bit those of the straight runs.
    assert {t.candidate_id: t.weights_sha256 for t in done} == straight


def test_a_dead_runner_s_training_is_taken_over_and_ends_with_a_straight_run_s_weights(service, straight):
    store, sid = service["store"], service["search"]
    candidate = next(iter(straight))
    [training_id] = create_trainings(store, sid, [candidate], RECIPE)
    dead = store.claim_training("dead", lease_seconds=3)
    assert dead.id == training_id and dead.runner == "dead"
    # The dead runner trained and committed its first epoch, then vanished without a word.
    spec = SearchSpec.from_stored(store.get_search(sid).spec)
    first = train_epoch(dead.genome, dead.space, dead.recipe, spec.space_options, None, 1, data.load("digits"), 1,
                        spec.training.latency_repeats)
    store.record_epoch(training_id, *first["epochs"][0], holder="dead")
    assert store.claim_training("alive", lease_seconds=10) is None  # its lease still holds

    time.sleep(3.2)
    Runner(service["db"], "alive", lease_seconds=10, executor="inline").serve(once=True)
    done = store.get_training(training_id)
    assert done.status == "finished" and [m["epoch"] for m in done.history] == [1, 2]
    assert done.weights_sha256 == straight[candidate]
    claims = [e["payload"]["runner"] for e in store.events(sid, kinds=("training",))
              if e["payload"]["training"] == training_id and e["payload"]["status"] == "running"
              and e["payload"]["epoch"] in (0, 1)]
    assert claims[0] == "dead" and "alive" in claims
