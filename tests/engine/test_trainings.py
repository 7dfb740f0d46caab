"""`dvolver train` and `dvolver training` (issue 19): found candidates retrained at final scale as jobs in the
store. Bad input is refused naming the field, creating nothing; a finished training shows its measures and
the SHA-256 of its weights; and a `dvolver train` killed with SIGKILL, mid-epoch or in the middle of writing
an epoch, resumes to the weights of a straight run, bit for bit (CPU, digits, a tiny scale).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dvolver import run_search
from dvolver.cli import app
from dvolver.front import minimised
from dvolver.output_check import record
from dvolver.pareto import knee_point
from dvolver.store import Store
from dvolver.store_trainings import CHECKPOINT, WEIGHTS
from dvolver.trainings import create_trainings
from search_spaces import make_space
from tests.helpers import TINY

DRIVER = Path(__file__).with_name("crash_driver.py")
# 200 images in batches of 32: 7 steps an epoch, so step 10 is inside the second of the 3 epochs.
TINY_FINAL = ["--filters", "4", "--cells", "1", "--epochs", "3", "--train-limit", "200", "--batch-size", "32",
              "--device", "cpu"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """A finished tiny search, and one failed candidate recorded beside its own."""
    path = tmp_path_factory.mktemp("searched") / "search.db"
    run_search(TINY | {"evaluations": 6, "population": 3}, db=str(path), executor="inline")
    Store(str(path)).record(1, "nasnet:broken", (0,) * 42, "failed", error="RuntimeError: boom")
    return path


def _copy(source: Path, folder: Path) -> str:
    """A copy of a SQLite store (its backup copies what the WAL holds too)."""
    copy = folder / "store.db"
    source_db, target = sqlite3.connect(source), sqlite3.connect(copy)
    source_db.backup(target)
    source_db.close()
    target.close()
    return str(copy)


@pytest.fixture
def db(searched, tmp_path) -> str:
    return _copy(searched, tmp_path)


def _cli(*args: str) -> object:
    return CliRunner().invoke(app, [*args], env={"COLUMNS": "200"})


def _ids(db: str, status: str) -> list[int]:
    return [c.id for c in Store(db).candidates(1, (status,))]


@pytest.fixture
def different_shape(tmp_path) -> Path:
    path, rng = tmp_path / "twelve.npz", np.random.default_rng(0)
    np.savez(path, x_train=rng.random((40, 12, 12)), y_train=np.arange(40) % 10, x_test=rng.random((10, 12, 12)),
             y_test=np.arange(10))
    return path


BAD = {
    "not in the search": (lambda db: ["99"], "candidates: search 1 has no candidate 99"),
    "not finished": (lambda db: [str(_ids(db, "failed")[0])], "is failed, not finished"),
    "a filter count the space cannot build": (lambda db: [str(_ids(db, "finished")[0]), "--filters", "1"],
                                              "invalid final training: scale.nasnet.filters"),
    "a dimension the space lacks": (lambda db: [str(_ids(db, "finished")[0]), "--channels", "8"],
                                    "--channels: the nasnet space's networks have no channels"),
    "a bad recipe field": (lambda db: ["--front", "--epochs", "0"], "invalid final training: epochs"),
    "front and knee": (lambda db: ["--front", "--knee"], "one of: candidate ids, --front, --knee or --genome"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line_naming_the_field_and_creates_nothing(case, db):
    args, message = BAD[case]
    out = _cli("train", "1", *args(db), "--db", db)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.exit_code == 2, out.output
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], out.stderr
    assert Store(db).list_trainings() == []


def test_a_dataset_of_another_shape_than_the_search_s_is_refused(db, different_shape):
    out = _cli("train", "1", "--knee", "--dataset", str(different_shape), "--db", db)
    assert out.exit_code == 2
    assert (f"dataset: {different_shape} holds 1x12x12 images in 10 classes, and search 1 ran on 1x8x8 images in "
            "10 classes") in out.stderr
    assert Store(db).list_trainings() == []


def test_front_and_knee_choose_from_the_search_s_front(db):
    from dvolver.engine import result

    store = Store(db)
    front = result(store, 1).front
    trainings = [store.get_training(i) for i in create_trainings(store, 1, "front")]
    assert [t.candidate_id for t in trainings] == [c.id for c in front]
    assert {t.status for t in trainings} == {"queued"} and trainings[0].recipe["dataset"] == "digits"
    [knee] = create_trainings(store, 1, "knee", {"epochs": 1})
    points = np.array([minimised(c, result(store, 1).spec.objectives) for c in front])
    assert store.get_training(knee).candidate_id == front[knee_point(points)].id
    assert store.get_training(knee).recipe["epochs"] == 1


@pytest.fixture
def one_thread():
    """Training in this process on one thread: the tests share two cores, and torch's default takes both."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_finished_training_shows_its_measures_weights_and_history_as_json(db, one_thread):
    candidate = _ids(db, "finished")[0]
    out = _cli("train", "1", str(candidate), "--filters", "4", "--cells", "1", "--epochs", "2", "--train-limit", "100",
               "--batch-size", "32", "--device", "cpu", "--db", db)
    assert out.exit_code == 0, out.output
    assert "training 1 (candidate" in out.stderr and "finished: val acc" in out.stderr
    shown = _cli("training", "show", "1", "--format", "json", "--db", db)
    assert shown.exit_code == 0, shown.output
    t = json.loads(shown.stdout)
    assert (t["status"], t["epoch"], t["epochs"], t["candidate_id"], t["search_id"]) == ("finished", 2, 2, candidate, 1)
    assert [m["epoch"] for m in t["history"]] == [1, 2] and t["val_acc"] == t["history"][-1]["val_acc"]
    assert 0 <= t["test_acc"] <= 100 and t["latency_ms"] > 0 and t["flops"] == 2 * t["macs"] > 0
    assert t["checkpoint_sha256"] is None and t["recipe"]["scale"]["nasnet"] == {"cells": 1, "filters": 4}

    store = Store(db)
    weights = store.training_bytes(1, WEIGHTS)
    assert t["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert store.training_bytes(1, CHECKPOINT) is None
    net = make_space("nasnet", {"cells_per_stage": 1, "filters": 4}).build(store.get_training(1).genome, (1, 8, 8), 10)
    net.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))  # strict: the deployed network
    assert t["params"] == sum(p.numel() for p in net.parameters())
    assert record(net, (1, 8, 8)) == store.get_training(1).check_outputs

    listed = json.loads(_cli("training", "list", "--search", "1", "--format", "json", "--db", db).stdout)
    assert [(x["id"], x["weights_sha256"]) for x in listed] == [(1, t["weights_sha256"])] and "history" not in listed[0]
    again = _cli("train", "--resume", "1", "--db", db)
    assert again.exit_code == 2 and "training 1 has finished" in again.stderr


def _train(args: list[str], db: str, log: Path, crash: str | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"TRAINING_LOG": str(log), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("CRASH_AT", None)
    if crash:
        env["CRASH_AT"] = crash
    return subprocess.run([sys.executable, str(DRIVER), "train", *args, "--db", db], env=env, capture_output=True,
                          text=True, timeout=300)


def _epochs_trained(log: Path) -> list[int]:
    """The epochs a driver process committed (crash_driver.py logs them)."""
    return [json.loads(line)["epoch"] for line in log.read_text().splitlines()] if log.exists() else []


def _timeless(history: list[dict]) -> list[dict]:
    """An epoch's record without what differs between two processes running it: its time and its worker."""
    return [m | {"seconds": 0, "worker": None} for m in history]


@pytest.fixture(scope="module")
def straight(searched, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("straight")
    db = _copy(searched, folder)
    done = _train(["1", "--knee", *TINY_FINAL], db, folder / "log")
    assert done.returncode == 0, done.stderr
    return dataclasses.asdict(Store(db).get_training(1))


@pytest.mark.slow
@pytest.mark.parametrize(("crash", "epochs_kept"), [
    pytest.param("step:10", 1, id="mid-epoch"),
    pytest.param("epoch_store:2", 1, id="while-an-epoch-is-written"),
    pytest.param("epoch:3", 3, id="after-the-last-epoch-before-the-end"),
])
def test_a_training_killed_with_sigkill_resumes_to_the_weights_of_a_straight_run(straight, db, tmp_path, crash,
                                                                                  epochs_kept):
    killed = _train(["1", "--knee", *TINY_FINAL], db, tmp_path / "log", crash)
    assert killed.returncode == -signal.SIGKILL, f"{crash} was not reached:\n{killed.stderr}"
    store = Store(db)
    left = store.get_training(1)
    assert (left.status, left.epoch) == ("running", epochs_kept)  # nothing marked it: the process just vanished
    assert left.checkpoint_sha256 == hashlib.sha256(store.training_bytes(1, CHECKPOINT)).hexdigest()
    assert _timeless(left.history) == _timeless(straight["history"][:epochs_kept])

    resumed = _train(["--resume", "1"], db, tmp_path / "resumed.log")
    assert resumed.returncode == 0, resumed.stderr
    assert _epochs_trained(tmp_path / "resumed.log") == list(range(epochs_kept + 1, 4))  # from the checkpoint on
    done = store.get_training(1)
    assert done.status == "finished" and done.candidate_id == straight["candidate_id"]
    assert done.weights_sha256 == straight["weights_sha256"]
    assert (done.val_acc, done.test_acc, done.macs, done.params) == (
        straight["val_acc"], straight["test_acc"], straight["macs"], straight["params"])
    assert _timeless(done.history) == _timeless(straight["history"])
