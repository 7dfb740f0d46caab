"""End to end: the real service on a loopback port, runner processes on a real local Ray, digits
searches submitted over HTTP and by the CLI, followed through their events."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from dvolver.client import ServiceClient
from dvolver.tokens import create_token
from service.settings import Settings
from tests.helpers import TINY, live_service

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def service(tmp_path_factory, ray_local):
    folder = tmp_path_factory.mktemp("e2e")
    db = str(folder / "dvolver.db")
    with live_service(Settings(db=db, open_reads=False)) as (url, app):
        token = create_token(app.state.store, "alice")
        runners: list[subprocess.Popen] = []

        def start_runner(name: str) -> subprocess.Popen:
            log = open(folder / f"runner-{name}-{len(runners)}.log", "w")  # noqa: SIM115 - lives as long as the process
            proc = subprocess.Popen(
                [sys.executable, "-m", "dvolver", "runner", "--db", db, "--name", name, "--lease", "3",
                 "--ray-address", ray_local.get_runtime_context().gcs_address],
                stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"PYTHONUNBUFFERED": "1"})
            runners.append(proc)
            return proc

        start_runner("e2e")
        yield {"url": url, "db": db, "token": token, "store": app.state.store, "start_runner": start_runner,
               "runners": runners, "logs": folder}
        for proc in runners:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(60)


def _wait(condition, timeout: float, what: str, logs: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    runner_logs = "\n".join(p.read_text()[-2000:] for p in logs.glob("runner-*.log"))
    raise AssertionError(f"timed out waiting for {what}; runner logs:\n{runner_logs}")


def test_a_search_posted_over_http_runs_on_ray_and_its_front_is_served(service):
    client = ServiceClient(service["url"], service["token"])
    submitted = client.submit(TINY | {"name": "e2e"})
    assert submitted["status"] == "queued"
    events = list(client.events(submitted["id"]))
    kinds = [k for k, _ in events]
    assert kinds[-1] == "end" and events[-1][1]["status"] == "finished", events[-3:]
    assert "front" in kinds and kinds.count("generation") >= 1
    finished = [d for k, d in events if k == "candidate" and d["status"] == "finished"]
    assert len(finished) == TINY["evaluations"]
    front = client.front(submitted["id"])["items"]
    assert front and all(0 < c["objectives"]["acc"] <= 100 and c["objectives"]["flops"] > 0 for c in front)
    assert all(":" in c["worker"] for c in front)  # trained by a Ray worker process, not by the API
    # The trained network comes back as a file that loads and matches the search's figures.
    http = httpx.Client(base_url=service["url"], headers={"Authorization": f"Bearer {service['token']}"})
    detail = http.get(f"/searches/{submitted['id']}/candidates/{front[0]['id']}").json()
    assert set(detail["exports"]) >= {"genotype", "state_dict"}
    assert set(detail["architecture"]) == {"space", "normal", "reduction"}
    weights = http.get(detail["exports"]["state_dict"])
    assert weights.status_code == 200 and len(weights.content) > 1000


def test_the_cli_submits_to_a_server_and_follows_the_search(service):
    out = subprocess.run(
        [sys.executable, "-m", "dvolver", "search", "--server", service["url"], "--token", service["token"],
         "--objectives", "acc,params", "--population", "4", "--evaluations", "8", "--epochs", "1",
         "--train-limit", "300", "--filters", "4", "--seed", "3"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Pareto front of search" in out.stdout and "queued on" in out.stderr
    sid = int(out.stderr.split("search ", 1)[1].split()[0])
    search = service["store"].get_search(sid)
    assert search.status == "finished" and search.owner == "alice" and search.spec["objectives"] == ["acc", "params"]


def test_the_cli_reports_a_refused_spec_and_creates_nothing(service):
    before = service["store"].count_searches()
    out = subprocess.run([sys.executable, "-m", "dvolver", "search", "--server", service["url"], "--token",
                          service["token"], "--objectives", "acc,speed"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "422" in out.stderr and "objectives" in out.stderr
    assert "Traceback" not in out.stderr
    assert service["store"].count_searches() == before


def test_cancelling_a_running_search_stops_it_and_keeps_its_results(service):
    client = ServiceClient(service["url"], service["token"])
    store = service["store"]
    sid = client.submit(TINY | {"evaluations": 40, "seed": 11})["id"]
    _wait(lambda: len(store.candidates(sid, ("finished",))) >= 2, 120, "two finished candidates", service["logs"])
    http = httpx.Client(base_url=service["url"], headers={"Authorization": f"Bearer {service['token']}"})
    assert http.post(f"/searches/{sid}/cancel").status_code == 200
    _wait(lambda: store.get_search(sid).status == "cancelled", 30, "the cancel", service["logs"])
    kept = len(store.candidates(sid, ("finished",)))
    assert 2 <= kept < 40
    assert http.get(f"/searches/{sid}/front").json()["items"]


def test_killing_the_runner_mid_search_loses_and_retrains_nothing(service):
    store, client = service["store"], ServiceClient(service["url"], service["token"])
    sid = client.submit(TINY | {"evaluations": 16, "seed": 7})["id"]
    _wait(lambda: len(store.candidates(sid, ("finished",))) >= 4, 180, "four finished candidates", service["logs"])
    for proc in service["runners"]:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    before = {c.key: (c.worker, c.seconds) for c in store.candidates(sid, ("finished",))}
    assert store.get_search(sid).status == "running"  # nobody said otherwise: the runner just vanished
    service["start_runner"]("e2e-second")  # another name: it must wait for the dead runner's lease
    _wait(lambda: store.get_search(sid).status == "finished", 240, "the search to finish", service["logs"])
    after = {c.key: (c.worker, c.seconds) for c in store.candidates(sid, ("finished",))}
    assert len(after) == 16
    assert all(after[k] == v for k, v in before.items())  # the results from before the kill, untouched
    stats = store.get_search(sid).stats  # what the second runner did: reuse, and train only the rest
    assert stats["reused"] == len(before) and stats["trained"] == 16 - len(before)
    finals = [e["payload"]["key"] for e in store.events(sid, kinds=("candidate",))
              if e["payload"]["status"] == "finished"]
    assert sorted(finals) == sorted(after)  # each candidate finished exactly once
    claims = [e["payload"]["runner"] for e in store.events(sid) if e["kind"] == "claimed"]
    assert claims == ["e2e", "e2e-second"]
