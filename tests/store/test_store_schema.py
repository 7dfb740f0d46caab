"""A store an earlier Dvolver made opens in this one with everything its user saw still there, and a store
a later Dvolver made is refused, untouched.

tests/store/data holds stores frozen by tests/store/data/make_old_store.py from earlier commits, each one finished
NAS-Bench-201 table search of 8 candidates:
- store_schema_v0.sqlite: commit 5d22ed1, the last before schema versions; with a token of alice's
- store_schema_v0_before_runners.sqlite: commit 1e65151, before owners, runner leases, cancel
  requests, tokens and weights (the columns and tables version 1 adds to it)
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from dvolver.engine import result
from dvolver.errors import StoreError
from dvolver.schema import SCHEMA_VERSION
from dvolver.store import Store
from dvolver.tokens import create_token, token_owner, tokens

DATA = Path(__file__).parent / "data"
TOKEN = "dvt_tFWcappObpczQIfea1iDyoWpMy4T9nQBBS9wo61m310"  # make_old_store.py printed it, once
FROZEN = {
    "store_schema_v0.sqlite": {
        "front": {"nb201:0,0,0,1,0,0", "nb201:0,0,0,2,0,0", "nb201:0,3,0,4,0,2"}, "events": 35,
        "tokens": ["frozen"],
    },
    "store_schema_v0_before_runners.sqlite": {
        "front": {"nb201:0,0,0,1,0,0", "nb201:0,1,0,2,0,4", "nb201:0,2,0,4,0,2", "nb201:3,2,1,0,3,4",
                  "nb201:3,2,3,0,3,3"}, "events": 21, "tokens": [],
    },
}
REFUSED = f"database schema version {SCHEMA_VERSION + 1} is newer than this Dvolver's {SCHEMA_VERSION}: upgrade Dvolver"


def _copy(name: str, tmp_path: Path) -> Path:
    """The frozen file itself is never opened: opening upgrades it."""
    path = tmp_path / name
    shutil.copyfile(DATA / name, path)
    return path


def _version(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        version = connection.scalar(text("SELECT version FROM schema_version"))
    engine.dispose()
    return version


@pytest.mark.parametrize("name", FROZEN)
def test_an_older_store_opens_with_its_search_front_journal_and_tokens(name, tmp_path):
    expected = FROZEN[name]
    url = f"sqlite:///{_copy(name, tmp_path)}"
    store = Store(url)

    search = store.get_search(1)
    assert (search.name, search.status, search.owner, search.runner, search.cancel_requested) == (
        "frozen", "finished", None, None, False)
    assert search.spec["objectives"] == ["acc", "flops"] and search.stats["evaluations"] == 8
    candidates = store.candidates(1)
    assert len(candidates) == 8 and {c.status for c in candidates} == {"finished"}
    assert all(set(c.objectives) >= {"acc", "flops", "params"} for c in candidates)
    front = result(store, 1).front
    assert {c.key for c in front} == expected["front"]
    assert {c.key: c.objectives["flops"] for c in front}["nb201:0,0,0,1,0,0"] == 7783050.0  # the table's value
    events = store.events(1)
    assert len(events) == expected["events"] and store.last_event_id(1) == events[-1]["id"]
    assert [e["kind"] for e in events].count("candidate") >= 8
    assert (events[-1]["kind"], events[-1]["payload"]["status"]) == ("status", "finished")
    assert [t["name"] for t in tokens(store)] == expected["tokens"]
    if expected["tokens"]:
        assert token_owner(store, TOKEN) == "alice"

    # Upgraded, it is a store like any other: what version 1 added works on it.
    assert _version(url) == SCHEMA_VERSION
    assert token_owner(store, create_token(store, "bob")) == "bob"
    queued = store.create_search(search.spec, {}, owner="bob", max_active=1)
    assert store.claim_search("r", lease_seconds=30).id == queued and store.renew_lease(queued, "r", 30)
    store.engine.dispose()
    assert Store(url).get_search(queued).runner == "r"  # and opens again as it is


def _dump(path) -> list[str]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


def test_a_store_from_a_newer_dvolver_is_refused_and_left_as_it_was(tmp_path):
    path = _copy("store_schema_v0.sqlite", tmp_path)
    Store(str(path)).engine.dispose()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    connection.close()
    before = path.read_bytes(), _dump(path)
    with pytest.raises(StoreError, match=REFUSED):
        Store(str(path))
    # The dump reads the write-ahead log too: a write held there would not show in the main file's bytes.
    assert (path.read_bytes(), _dump(path)) == before


def test_a_new_store_is_at_the_current_version_and_a_newer_one_is_refused(store_url):
    Store(store_url).engine.dispose()
    assert _version(store_url) == SCHEMA_VERSION
    engine = create_engine(store_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE schema_version SET version = version + 1"))
    engine.dispose()
    with pytest.raises(StoreError, match=REFUSED):
        Store(store_url)
    assert _version(store_url) == SCHEMA_VERSION + 1
