"""Store is assembled from one class per part (searches, leases, candidates, events): every method is
still called on a Store, a view from held_by is still a Store, and each part is small enough to read."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from dvolver.errors import LeaseLost
from dvolver.store import Store
from dvolver.store_candidates import Candidates
from dvolver.store_events import Events
from dvolver.store_leases import Leases
from dvolver.store_searches import Searches

ROOT = Path(__file__).resolve().parents[2]
PARTS = (Searches, Leases, Candidates, Events)


def test_a_store_is_its_parts_and_each_public_method_says_what_it_does():
    assert all(issubclass(Store, part) for part in PARTS)
    public = [name for name in dir(Store) if not name.startswith("_")]
    assert {"create_search", "claim_search", "held_by", "record", "append_event", "events"} <= set(public)
    for name in public:
        member = inspect.getattr_static(Store, name)
        assert inspect.getdoc(member), f"Store.{name} has no docstring"
    for part in (Store, *PARTS):
        assert inspect.getdoc(part), f"{part.__name__} says nothing of its part of the contract"


def test_no_part_of_the_store_is_longer_than_200_lines():
    for path in sorted((ROOT / "dvolver").glob("store*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno - node.lineno + 1 <= 200, f"{path.name}: class {node.name}"


def test_a_view_held_by_a_runner_is_a_store_that_checks_the_lease(tmp_path):
    store = Store(str(tmp_path / "parts.db"))
    search_id = store.create_search({"name": "parts"}, {})
    assert store.claim_search("a", lease_seconds=60).id == search_id
    held = store.held_by("a")
    assert isinstance(held, Store) and held.engine is store.engine and held.url == store.url
    held.append_event(search_id, "note", {"n": 1})
    held.update_stats(search_id, {"n": 1})
    assert store.get_search(search_id).stats == {"n": 1}
    with pytest.raises(LeaseLost):
        store.held_by("b").append_event(search_id, "note", {"n": 2})
    store.release(search_id, "a")
    with pytest.raises(LeaseLost):
        held.record(search_id, "k", (1,), "finished")
    assert store.get_search(search_id).status == "queued" and store.candidates(search_id) == []
    assert store.get_search(search_id).runner is None and store._holder is None  # the store itself is unchanged
