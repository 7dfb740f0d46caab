"""A final training's life in the store, on SQLite and on PostgreSQL: created queued with its search's owner,
taken, each epoch committed with its checkpoint, finished with its weights, their SHA-256 in the row; epochs
only in order, a finished training never changed, a store from before trainings gains their tables, and one
from before reference trainings keeps its trainings and takes trainings with no candidate."""

from __future__ import annotations

import hashlib
import time

import pytest
from sqlalchemy import MetaData, create_engine, insert, inspect, text

from dvolver.errors import ConflictError, LeaseLost, NotFoundError
from dvolver.schema import SCHEMA_VERSION
from dvolver.store import Base, Store
from dvolver.store_trainings import CHECKPOINT, WEIGHTS

RECIPE = {"epochs": 2, "scale": {"nasnet": {"cells": 1, "filters": 4}}}


def _epoch(n: int) -> dict:
    return {"epoch": n, "train_loss": 2.0 / n, "val_acc": 40.0 + n, "lr": 0.01, "drop_path": 0.0, "seconds": 0.5}


@pytest.fixture
def store(store_url) -> Store:
    return Store(store_url)


def _queued(store: Store, owner: str | None = "alice") -> tuple[int, int]:
    search_id = store.create_search({"name": "found"}, {}, owner=owner)
    candidate = store.record(search_id, "nasnet:1", (1, 2, 3), "finished", {"acc": 90.0})
    [training_id] = store.create_trainings(search_id, [{"candidate_id": candidate.id, "genome": (1, 2, 3),
                                                        "space": "nasnet", "recipe": RECIPE, "epochs": 2}])
    return search_id, training_id


def test_a_training_is_created_taken_checkpointed_each_epoch_and_finished_with_its_weights(store):
    search_id, training_id = _queued(store)
    queued = store.get_training(training_id)
    assert (queued.status, queued.epoch, queued.epochs, queued.owner) == ("queued", 0, 2, "alice")
    assert queued.recipe == RECIPE
    assert store.training_bytes(training_id, CHECKPOINT) is None and queued.started_at is None

    assert store.take_training(training_id).status == "running"
    for n in (1, 2):
        blob = bytes([n]) * 1000
        store.record_epoch(training_id, _epoch(n), blob)
        now = store.get_training(training_id)
        assert (now.epoch, now.val_acc, now.history) == (n, 40.0 + n, [_epoch(k) for k in range(1, n + 1)])
        assert store.training_bytes(training_id, CHECKPOINT) == blob  # the one before it is gone
        assert now.checkpoint_sha256 == hashlib.sha256(blob).hexdigest()

    weights = b"state_dict bytes"
    results = {"val_acc": 42.0, "test_acc": 41.5, "macs": 1000, "flops": 2000, "params": 300, "latency_ms": 1.5,
               "check_outputs": [[0.5, -0.5]]}
    store.finish_training(training_id, results, weights)
    done = store.get_training(training_id)
    assert done.status == "finished" and done.finished_at is not None and done.error is None
    assert (done.test_acc, done.macs, done.flops, done.params, done.latency_ms, done.check_outputs) == (
        41.5, 1000, 2000, 300, 1.5, [[0.5, -0.5]])
    assert store.training_bytes(training_id, WEIGHTS) == weights
    assert done.weights_sha256 == hashlib.sha256(weights).hexdigest()
    assert store.training_bytes(training_id, CHECKPOINT) is None and done.checkpoint_sha256 is None

    journal = [e["payload"] for e in store.events(search_id, kinds=("training",))]
    assert [(e["status"], e["epoch"]) for e in journal] == [("queued", 0), ("running", 0), ("running", 1),
                                                            ("running", 2), ("finished", 2)]
    with pytest.raises(ConflictError, match="has finished"):
        store.take_training(training_id)
    with pytest.raises(ConflictError, match="is finished, not running"):
        store.record_epoch(training_id, _epoch(3), b"x")
    assert store.get_training(training_id) == done


def test_epochs_are_recorded_in_order_once_and_only_while_running(store):
    _, training_id = _queued(store)
    with pytest.raises(ConflictError, match="is queued, not running"):
        store.record_epoch(training_id, _epoch(1), b"one")
    store.take_training(training_id)
    store.record_epoch(training_id, _epoch(1), b"one")
    before = store.get_training(training_id)
    for wrong in (1, 3):  # a second process's epoch 1, or an epoch skipped
        with pytest.raises(ConflictError, match="has recorded 1 epochs"):
            store.record_epoch(training_id, _epoch(wrong), b"wrong")
    with pytest.raises(ConflictError, match="has recorded 1 of 2 epochs"):
        store.finish_training(training_id, {"test_acc": 1.0}, b"w")
    assert store.get_training(training_id) == before and store.training_bytes(training_id, CHECKPOINT) == b"one"

    store.stop_training(training_id, "failed", "RuntimeError: boom")
    failed = store.get_training(training_id)
    assert (failed.status, failed.error, failed.epoch) == ("failed", "RuntimeError: boom", 1)
    assert store.training_bytes(training_id, CHECKPOINT) == b"one"  # kept, to resume from
    resumed = store.take_training(training_id)
    assert (resumed.status, resumed.error, resumed.started_at) == ("running", None, failed.started_at)
    store.record_epoch(training_id, _epoch(2), b"two")
    assert store.get_training(training_id).epoch == 2
    with pytest.raises(NotFoundError):
        store.take_training(training_id + 1)


def test_trainings_are_listed_by_search_and_owner_and_go_with_their_search(store):
    first, a = _queued(store, owner="alice")
    second, b = _queued(store, owner="bob")
    assert [t.id for t in store.list_trainings()] == [a, b]
    assert [t.id for t in store.list_trainings(search_id=second)] == [b]
    assert [t.id for t in store.list_trainings(owner="alice")] == [a]
    store.take_training(a)
    store.record_epoch(a, _epoch(1), b"one")
    store.stop_training(a, "cancelled", "interrupted")
    store.delete_search(first)
    assert [t.id for t in store.list_trainings()] == [b]
    assert store.training_bytes(a, CHECKPOINT) is None
    with pytest.raises(NotFoundError, match=f"no training {a}"):
        store.get_training(a)


def test_a_store_from_before_trainings_gains_their_tables(store_url):
    Store(store_url).engine.dispose()
    engine = create_engine(store_url)
    with engine.begin() as connection:  # version 1: no trainings yet
        connection.execute(text("DROP TABLE training_blobs"))
        connection.execute(text("DROP TABLE trainings"))
        connection.execute(text("UPDATE schema_version SET version = 1"))
    store = Store(store_url)
    assert {"trainings", "training_blobs"} <= set(inspect(engine).get_table_names())
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT version FROM schema_version")) == SCHEMA_VERSION == 4
    engine.dispose()
    _, training_id = _queued(store)
    assert store.get_training(training_id).status == "queued"


def test_a_version_2_store_keeps_its_trainings_and_takes_a_reference_training(store_url):
    store = Store(store_url)
    search_id = store.create_search({"name": "found"}, {})
    candidate = store.record(search_id, "nasnet:1", (1, 2, 3), "finished", {"acc": 90.0})
    store.engine.dispose()
    version_2 = MetaData()  # the training tables as version 2 declared them: every training has a candidate
    for table in Base.metadata.sorted_tables:
        table.to_metadata(version_2)
    version_2.tables["trainings"].c.candidate_id.nullable = False
    engine = create_engine(store_url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE training_blobs"))
        connection.execute(text("DROP TABLE trainings"))
        version_2.create_all(connection, tables=[version_2.tables["trainings"], version_2.tables["training_blobs"]])
        [old] = connection.execute(insert(version_2.tables["trainings"]).values(
            search_id=search_id, candidate_id=candidate.id, genome=[1, 2, 3], space="nasnet", recipe=RECIPE,
            status="running", epoch=1, epochs=2, history=[_epoch(1)],
            checkpoint_sha256=hashlib.sha256(b"c").hexdigest(),
        )).inserted_primary_key
        connection.execute(insert(version_2.tables["training_blobs"]).values(training_id=old, kind=CHECKPOINT,
                                                                             data=b"c"))
        connection.execute(text("UPDATE schema_version SET version = 2"))
    store = Store(store_url)
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT version FROM schema_version")) == SCHEMA_VERSION
        nullable = {c["name"]: c["nullable"] for c in inspect(connection).get_columns("trainings")}
    engine.dispose()
    assert nullable["candidate_id"]
    kept = store.get_training(old)
    assert (kept.candidate_id, kept.status, kept.epoch, kept.history) == (candidate.id, "running", 1, [_epoch(1)])
    assert store.training_bytes(old, CHECKPOINT) == b"c"
    [reference] = store.create_trainings(search_id, [{"candidate_id": None, "genome": (3, 2, 1), "space": "nasnet",
                                                      "recipe": RECIPE, "epochs": 2}])
    assert reference > old and store.get_training(reference).candidate_id is None


def test_runners_claim_trainings_under_leases_and_only_the_holder_writes(store):
    _, training_id = _queued(store)
    claimed = store.claim_training("a", lease_seconds=3)
    assert (claimed.id, claimed.status, claimed.runner) == (training_id, "running", "a")
    assert store.claim_training("b", lease_seconds=10) is None  # a's lease holds
    with pytest.raises(ConflictError, match="running on runner a"):
        store.take_training(training_id)  # nor may a `dvolver train` process take it from a live runner
    store.record_epoch(training_id, _epoch(1), b"one", holder="a")
    with pytest.raises(LeaseLost, match="held by a"):
        store.record_epoch(training_id, _epoch(2), b"two", holder="b")
    assert store.renew_training_leases([training_id], "a", 3) == {training_id}

    time.sleep(3.2)
    taken = store.claim_training("b", lease_seconds=10)
    assert (taken.id, taken.runner, taken.epoch) == (training_id, "b", 1)  # from the last epoch a committed
    assert store.renew_training_leases([training_id], "a", 10) == set()  # a is told it lost it
    with pytest.raises(LeaseLost):
        store.record_epoch(training_id, _epoch(2), b"two", holder="a")
    store.stop_training(training_id, "failed", "stale", holder="a")  # a's stop changes nothing of b's
    assert store.get_training(training_id).status == "running"

    assert store.request_training_cancel(training_id).cancel_requested  # running: flagged for its holder
    store.stop_training(training_id, "cancelled", "on request", holder="b")
    assert store.get_training(training_id).status == "cancelled"
    requeued = store.requeue_training(training_id)
    assert (requeued.status, requeued.runner, requeued.cancel_requested, requeued.epoch) == ("queued", None, False, 1)
    store.release_training(training_id, "b")  # no longer b's: nothing happens
    assert store.claim_training("c", lease_seconds=10).runner == "c"
    store.release_training(training_id, "c")  # a runner shutting down hands it back
    assert store.get_training(training_id).status == "queued"
    assert store.request_training_cancel(training_id).status == "cancelled"  # queued: at once
    with pytest.raises(ConflictError, match="only queued or running"):
        store.request_training_cancel(training_id)
    with pytest.raises(NotFoundError):
        store.requeue_training(training_id + 100)
