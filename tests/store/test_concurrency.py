"""Several processes on one store at once: API processes taking 50 submissions while runners record
results and clients read, against a SQLite file and against a real PostgreSQL (tests/postgres.py).

Each test runs on both: what SQLite serialises with its file lock (WAL, busy timeout), PostgreSQL
runs truly at once, so races that one hides the other shows.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from dvolver.store import Store
from dvolver.tokens import create_token
from tests.helpers import free_port, wait_up

# The default search (NASNet cells on the bundled digits): valid without any data file, and never
# run here, since no runner serves these stores.
SPEC = {"objectives": ["acc", "flops"], "population": 4, "evaluations": 8, "training": {"epochs": 1}}
SUBMISSIONS = 50
OWNERS = ("alice", "bob")
LOCK_MARKERS = ("database is locked", "database table is locked", "deadlock detected", "could not serialize",
                "OperationalError", "IntegrityError", "Traceback")


@pytest.fixture
def open_store(store_url):
    """Opens the test's store; its connections are closed after the test, not left to the GC."""
    opened: list[Store] = []

    def open_() -> Store:
        opened.append(Store(store_url))
        return opened[-1]

    yield open_
    for store in opened:
        store.engine.dispose()


def _genome(seed: int) -> list[int]:
    import numpy as np

    from dvolver.spec import SearchSpec

    space = SearchSpec.from_dict(SPEC).search_space(structure=True)
    return [int(g) for g in space.sample(np.random.default_rng(seed))]


def _stored_spec(**overrides: object) -> dict:
    from dvolver.spec import SearchSpec

    return SearchSpec.from_dict(SPEC | overrides).model_dump(mode="json")


# Store level: processes, not threads, so that each has its own connections and nothing in Python
# serialises them.

def _recorder(url: str, search_id: int, worker: int, genome: list[int], own: int, shared: int, go,
              failures) -> None:
    """One runner's writes: the `shared` keys every recorder records too (two runners on one search
    after a lease takeover), all at once at the start; then its own candidates. Each is recorded
    pending, then final, as the engine does."""
    try:
        store = Store(url)
        go.wait(60)  # every recorder, and the test, start together
        for i in range(shared):
            key = f"shared-{i}"
            store.record(search_id, key, genome, "pending", {"flops": 2e6 + i}, worker=f"w{worker}")
            store.record(search_id, key, genome, "finished", {"acc": float(worker), "flops": 2e6 + i},
                         worker=f"w{worker}", seconds=0.01)
        for i in range(own):
            key = f"w{worker}-{i}"
            store.record(search_id, key, genome, "pending", {"flops": 1e6 + i})
            store.record(search_id, key, genome, "finished", {"acc": 50.0 + i / 10, "flops": 1e6 + i},
                         {"epochs": 1}, worker=f"w{worker}", seconds=0.01)
        store.engine.dispose()
    except BaseException as exc:  # reported to the test, which shows it
        go.abort()
        failures.put(f"recorder {worker}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        raise


def _spawn_recorders(url: str, search_id: int, count: int, own: int, shared: int) -> tuple[list, object, object]:
    """Started; they begin writing when the caller too waits on the returned barrier."""
    context = multiprocessing.get_context("spawn")  # fork would copy this process's threads and connections
    go, failures = context.Barrier(count + 1), context.Queue()
    genome = _genome(0)  # here, once: importing the search spaces (torch) in each child would take seconds
    processes = [context.Process(target=_recorder, args=(url, search_id, w, genome, own, shared, go, failures))
                 for w in range(count)]
    for process in processes:
        process.start()
    return processes, go, failures


def _start(barrier) -> None:
    with suppress(threading.BrokenBarrierError):  # a process failed before starting: _join says which and why
        barrier.wait(60)


def _join(processes: list, failures, timeout: float = 120) -> list[str]:
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    problems = []
    while not failures.empty():
        problems.append(failures.get())
    for process in processes:
        if process.is_alive():
            process.kill()
            problems.append(f"recorder pid {process.pid} still running after {timeout} s")
        elif process.exitcode != 0:
            problems.append(f"recorder pid {process.pid} exited {process.exitcode}")
    return problems


def _check_recorded(store: Store, search_id: int, recorders: int, own: int, shared: int) -> None:
    rows = store.candidates(search_id)
    keys = Counter(c.key for c in rows)
    assert len(rows) == recorders * own + shared and max(keys.values()) == 1, keys.most_common(3)
    assert {c.status for c in rows} == {"finished"}
    finals: dict[str, list[dict]] = {}
    for event in store.events(search_id, kinds=("candidate",)):
        if event["payload"]["status"] == "finished":
            finals.setdefault(event["payload"]["key"], []).append(event["payload"])
    twice = {k: v for k, v in finals.items() if len(v) != 1}
    assert not twice, f"final results recorded more than once: {twice}"
    assert set(finals) == set(keys)
    for c in rows:
        # The journal and the row tell the same story: the one result that won is the one kept.
        assert finals[c.key][0]["objectives"] == c.objectives and finals[c.key][0]["candidate"] == c.id


def test_processes_recording_into_one_store_at_once_lose_nothing(store_url, open_store):
    recorders, own, shared = 4, 20, 8
    store = open_store()
    search_id = store.create_search(_stored_spec(name="recorded"), {}, status="running")
    processes, go, failures = _spawn_recorders(store_url, search_id, recorders, own, shared)
    _start(go)
    assert _join(processes, failures) == []
    _check_recorded(store, search_id, recorders, own, shared)


def _opener(url: str, barrier, failures) -> None:
    try:
        for _ in range(2):
            barrier.wait(60)  # all open together
            store = Store(url)
            store.count_searches()
            store.engine.dispose()
            barrier.wait(60)  # all opened: the test changes the schema before the next round
    except BaseException as exc:
        barrier.abort()  # the others and the test stop waiting at once
        failures.put(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        raise


def test_processes_opening_a_new_or_older_store_at_once_all_succeed(store_url, open_store):
    """Runners and an API started together on an empty database, or on one an older Dvolver made,
    each create the tables or columns they find missing; none may fail because another got there
    first."""
    from sqlalchemy import create_engine, inspect, text

    context = multiprocessing.get_context("spawn")
    barrier, failures = context.Barrier(7), context.Queue()
    processes = [context.Process(target=_opener, args=(store_url, barrier, failures)) for _ in range(6)]
    for process in processes:
        process.start()
    newer = ("runner", "lease_until", "cancel_requested")
    engine = create_engine(store_url)
    with suppress(threading.BrokenBarrierError):  # a process failed: _join below says which and why
        barrier.wait(60)
        barrier.wait(60)
        with engine.begin() as connection:  # what a store from before runners looks like: no version either
            for column in newer:
                connection.execute(text(f"ALTER TABLE searches DROP COLUMN {column}"))
            connection.execute(text("DROP TABLE schema_version"))
        barrier.wait(60)
        barrier.wait(60)
    assert _join(processes, failures) == []
    assert {c["name"] for c in inspect(engine).get_columns("searches")} >= set(newer)
    engine.dispose()
    assert open_store().count_searches() == 0


# Service level: two API processes (`dvolver serve`, as an operator starts them) on one store.

def _serve(url: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "dvolver", "serve", "--host", "127.0.0.1", "--port", str(port), "--db", url,
               "--runners", "0", "--closed-reads", "--max-concurrent", str(SUBMISSIONS // len(OWNERS))]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return process, f"http://127.0.0.1:{port}"


def test_fifty_submissions_at_once_to_two_api_processes_while_others_read_and_record(store_url, open_store,
                                                                                     tmp_path):
    setup = open_store()  # tables and tokens exist before the servers start
    tokens = {owner: create_token(setup, owner) for owner in (*OWNERS, "carol")}
    busy = setup.create_search(_stored_spec(name="busy"), {}, status="running", owner="carol")
    logs = [tmp_path / f"serve{i}.log" for i in range(2)]
    servers = [_serve(store_url, log) for log in logs]
    recorders: list = []
    clients: list[httpx.Client] = []
    done = threading.Event()  # the readers stop when it is set, however the test ends
    try:
        for (process, base), log in zip(servers, logs):
            wait_up(f"{base}/healthz", process, log=log.read_text)
        bases = [base for _, base in servers]
        limits = httpx.Limits(max_connections=SUBMISSIONS + 20, max_keepalive_connections=SUBMISSIONS + 20)
        clients += [httpx.Client(base_url=b, timeout=60, limits=limits) for b in bases]
        reads: list[tuple[str, int, str]] = []
        created: list[tuple[int, str]] = []

        def auth(owner: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {tokens[owner]}"}

        def read(n: int) -> None:
            http, owner = clients[n % 2], OWNERS[n % 2]
            busy_paths = [f"/searches/{busy}", f"/searches/{busy}/front", f"/searches/{busy}/candidates",
                          f"/searches/{busy}/points"]
            i = 0
            while not done.is_set() or i < 10:
                if i % 3 == 0:
                    path, who = "/searches", owner
                elif i % 3 == 1 and created:
                    search_id, who = created[-1]  # one just submitted, maybe through the other process
                    path = f"/searches/{search_id}"
                else:
                    path, who = busy_paths[i % len(busy_paths)], "carol"
                try:
                    response = http.get(path, headers=auth(who))
                    reads.append((path, response.status_code, response.text[:300]))
                except httpx.HTTPError as exc:  # a dropped connection is a failed read too
                    reads.append((path, 0, repr(exc)))
                i += 1

        def submit(n: int) -> httpx.Response:
            owner = OWNERS[n % 2]
            start.wait(60)
            response = clients[n % 2].post("/searches", json=SPEC | {"name": f"submitted-{n}"}, headers=auth(owner))
            if response.status_code == 201:
                created.append((response.json()["id"], owner))
            return response

        start = threading.Barrier(SUBMISSIONS)
        recorders, go, failures = _spawn_recorders(store_url, busy, 2, 15, 5)
        readers = [threading.Thread(target=read, args=(n,), daemon=True) for n in range(4)]
        for thread in readers:
            thread.start()
        _start(go)  # the recorders are running once this returns
        began = time.monotonic()
        with ThreadPoolExecutor(SUBMISSIONS) as pool:
            responses = list(pool.map(submit, range(SUBMISSIONS)))
        took = time.monotonic() - began
        assert _join(recorders, failures) == []
        done.set()
        for thread in readers:
            thread.join(60)

        assert [r.status_code for r in responses] == [201] * SUBMISSIONS, [r.text for r in responses
                                                                              if r.status_code != 201]
        ids = [r.json()["id"] for r in responses]
        assert len(set(ids)) == SUBMISSIONS
        store = open_store()
        for n, (search_id, response) in enumerate(zip(ids, responses)):
            search = store.get_search(search_id)
            assert (search.spec["name"], search.owner, search.status) == (f"submitted-{n}", OWNERS[n % 2], "queued")
            assert search.spec["population"] == SPEC["population"] and response.json()["name"] == search.spec["name"]
        names = Counter(s.name for s in store.list_searches())
        assert all(names[f"submitted-{n}"] == 1 for n in range(SUBMISSIONS)), names
        assert store.count_searches() == SUBMISSIONS + 1
        for search_id in ids:  # one status event each: the write and its journal entry are one transaction
            assert [e["payload"] for e in store.events(search_id)] == [{"status": "queued"}]
        _check_recorded(store, busy, 2, 15, 5)

        assert len(reads) >= 20, f"only {len(reads)} reads in {took:.1f} s"
        assert [r for r in reads if r[1] != 200] == []
        bodies = [r.text for r in responses] + [text for *_, text in reads]
        assert not [b for b in bodies if any(m in b for m in LOCK_MARKERS)]
        # The limit still holds across the two processes: each owner is at max_concurrent now.
        for n, owner in enumerate(OWNERS):
            extra = clients[n].post("/searches", json=SPEC, headers=auth(owner))
            assert extra.status_code == 429 and "max_concurrent" in extra.text, extra.text
    finally:
        done.set()
        for client in clients:
            client.close()
        for process, _ in servers:
            process.terminate()
        for process, _ in servers:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        for process in recorders:
            if process.is_alive():
                process.kill()
    for log in logs:
        text = log.read_text()
        assert not [m for m in LOCK_MARKERS if m in text], text[-3000:]
