import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

DVOLVER = [sys.executable, "-m", "dvolver"]
TINY_FLAGS = ["--filters", "4", "--cells", "1", "--epochs", "1", "--train-limit", "300", "--population", "4"]


def dvolver(*args, db=None, cwd=None, timeout=300):
    env = os.environ | {"COLUMNS": "200"}
    extra = ["--db", str(db)] if db else []
    return subprocess.run(DVOLVER + list(args) + extra, capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


@pytest.fixture
def npz_without_labels(tmp_path):
    path = tmp_path / "images_only.npz"
    np.savez(path, x_train=np.zeros((4, 8, 8)), x_test=np.zeros((2, 8, 8)))
    return path


BAD_INPUTS = {
    "unknown objective": (["--objectives", "acc,speed"], "unknown objective 'speed'"),
    "empty objectives": (["--objectives", ","], "name at least one objective"),
    "unknown space": (["--space", "resnet9000"], "unknown space 'resnet9000'"),
    "unknown algorithm": (["--algorithm", "cmaes"], "unknown algorithm 'cmaes'"),
    "missing dataset": (["--dataset", "/no/such/cifar.npz"], "dataset '/no/such/cifar.npz' does not exist"),
    "zero budget": (["--evaluations", "0"], "evaluations: Input should be greater than or equal to 1"),
    "negative budget": (["--evaluations", "-5"], "evaluations: Input should be greater than or equal to 1"),
    "negative population": (["--population", "-1"], "population: Input should be greater than or equal to 2"),
    "missing table": (["--space", "nb201", "--table", "/no/table.csv"], "table '/no/table.csv' does not exist"),
    "unknown pruning method": (["--prune", "obd"], "unknown pruning method 'obd'"),
    "budget outside (0, 1]": (["--space", "conv4", "--prune", "reparam", "--budgets", "0.1,1.5"],
                              "budget 1.5 is outside (0, 1]"),
    "budgets not numbers": (["--space", "conv4", "--prune", "reparam", "--budgets", "ten%"],
                            "--budgets takes comma-separated numbers"),
    "joint without convs": (["--space", "lenet300", "--prune", "joint"], "LeNet300 has no Conv2d layer"),
    "backbone unpruned": (["--space", "conv4"], "only its pruning can be searched"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path):
    flags, message = BAD_INPUTS[case]
    db = tmp_path / "store.db"
    out = dvolver("search", *flags, db=db)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    assert message in lines[0]
    assert not db.exists()


def test_npz_without_expected_arrays_is_refused(npz_without_labels, tmp_path):
    db = tmp_path / "store.db"
    out = dvolver("search", "--dataset", str(npz_without_labels), db=db)
    assert out.returncode == 2
    assert "lacks the array(s) y_train, y_test" in out.stderr
    assert not db.exists()


def test_unknown_search_id_is_a_clear_error(tmp_path):
    out = dvolver("show", "42", db=tmp_path / "s.db")
    assert out.returncode == 2 and "no search 42" in out.stderr


def test_table_search_prints_the_front_and_plots_it(nb201_table, tmp_path):
    db = tmp_path / "store.db"
    out = dvolver("search", "--space", "nb201", "--table", str(nb201_table), "--evaluations", "300", db=db,
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Pareto front of search 1" in out.stdout
    assert "FLOPs (table's count)" in out.stdout
    assert (tmp_path / "dvolver_front_1.png").stat().st_size > 10_000
    front = json.loads(dvolver("front", "1", "--format", "json", db=db).stdout)
    assert len(front) >= 8 and {"acc_pct", "flops", "params", "genome"} <= set(front[0])
    csv_out = dvolver("front", "1", "--format", "csv", db=db).stdout.splitlines()
    assert csv_out[0].startswith("id,acc_pct,flops,params") and len(csv_out) == len(front) + 1
    listing = dvolver("list", db=db).stdout
    assert "finished" in listing and "300/300" in listing
    shown = json.loads(dvolver("show", "1", db=db).stdout)
    assert shown["status"] == "finished" and shown["stats"]["evaluations"] == 300


def _finished(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        try:
            return con.execute("select count(*) from candidates where status='finished'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def test_ctrl_c_then_resume_retrains_nothing_that_finished(tmp_path):
    db = tmp_path / "store.db"
    env = dict(os.environ)
    proc = subprocess.Popen(DVOLVER + ["search", *TINY_FLAGS, "--evaluations", "12", "--executor", "inline",
                                       "--db", str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env=env)
    deadline = time.time() + 120
    while _finished(db) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Continue with: dvolver resume 1" in stderr
    with sqlite3.connect(db) as con:
        before = dict(con.execute("select key, finished_at from candidates where status='finished'").fetchall())
        assert con.execute("select status from searches").fetchone()[0] == "interrupted"
    assert 3 <= len(before) < 12

    out = dvolver("resume", "1", "--executor", "inline", db=db, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"{len(before)} reused from the store" in out.stderr
    assert "MACs" in out.stdout and "FLOPs" in out.stdout  # both labelled, never a bare "cost"
    with sqlite3.connect(db) as con:
        after = dict(con.execute("select key, finished_at from candidates where status='finished'").fetchall())
        events = con.execute("select payload from events where kind='candidate'").fetchall()
    assert len(after) == 12
    assert all(after[k] == v for k, v in before.items())  # untouched: not trained again
    finished_events = [json.loads(p)["key"] for (p,) in events if json.loads(p)["status"] == "finished"]
    assert sorted(finished_events) == sorted(after)


def test_unreachable_ray_cluster_fails_fast_and_writes_nothing(tmp_path):
    db = tmp_path / "store.db"
    start = time.time()
    out = dvolver("search", "--ray-address", "127.0.0.1:1", db=db)
    assert out.returncode == 2
    assert "cannot start the Ray cluster at 127.0.0.1:1" in out.stderr
    assert time.time() - start < 60 and not db.exists()


def test_an_unreachable_database_is_one_line_without_its_password():
    out = dvolver("list", "--db", "postgresql+psycopg://dv:hunter2@127.0.0.1:1/dvolver")
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot open the store at postgresql+psycopg://dv:***@")
    assert "hunter2" not in out.stderr + out.stdout


def test_a_front_member_is_exported_as_files_that_load(tmp_path):
    import torch

    db = tmp_path / "store.db"
    out = dvolver("search", *TINY_FLAGS, "--evaluations", "4", "--executor", "inline", db=db, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    front = json.loads(dvolver("front", "1", "--format", "json", db=db).stdout)
    cid = front[0]["id"]
    for fmt in ("genotype", "state_dict", "torch_export"):
        done = dvolver("export", "1", str(cid), "--format", fmt, "-o", str(tmp_path / fmt), db=db)
        assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "genotype").read_text())["genome"] == front[0]["genome"]
    assert torch.load(tmp_path / "state_dict", weights_only=True)
    program = torch.export.load(tmp_path / "torch_export")
    assert program.module()(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    refused = dvolver("export", "1", str(cid), "--format", "pickle", db=db)
    assert refused.returncode == 2 and "choose among" in refused.stderr


def test_tokens_are_created_listed_and_revoked(tmp_path):
    db = tmp_path / "store.db"
    created = dvolver("token", "create", "ci-bot", "--owner", "alice", db=db)
    assert created.returncode == 0 and created.stdout.startswith("dvt_")
    from dvolver.store import Store
    from dvolver.tokens import token_owner

    assert token_owner(Store(str(db)), created.stdout.strip()) == "alice"
    with sqlite3.connect(db) as con:  # only a hash is kept
        rows = str(con.execute("select * from tokens").fetchall())
    assert "ci-bot" in rows and created.stdout.strip() not in rows
    assert "ci-bot" in dvolver("token", "list", db=db).stdout
    again = dvolver("token", "create", "ci-bot", db=db)
    assert again.returncode == 2 and "exists" in again.stderr
    assert dvolver("token", "revoke", "ci-bot", db=db).returncode == 0
    assert token_owner(Store(str(db)), created.stdout.strip()) is None


def test_prune_sweeps_budgets_and_prints_the_front_with_sparse_costs_labelled(tmp_path):
    db = tmp_path / "store.db"
    out = dvolver("prune", "--backbone", "conv2", "--method", "magnitude", "--budgets", "0.5,0.2", "--dense",
                  "--epochs", "1", "--train-limit", "200", "--executor", "inline", "--plot", str(tmp_path / "f.png"),
                  db=db)
    assert out.returncode == 0, out.stderr
    assert "conv2 pruned by magnitude on digits" in out.stderr and "3 evaluations" in out.stderr
    assert "costs counted sparse" in out.stdout and "kept %" in out.stdout
    rows = json.loads(dvolver("front", "1", "--format", "json", db=db).stdout)
    # The cheapest network is on any accuracy-cost front: the one pruned to 20 %.
    assert "magnitude 0.2" in {r["pruning"] for r in rows} <= {"none", "magnitude 0.5", "magnitude 0.2"}
    for r in rows:
        assert r["costs"] == ("dense" if r["pruning"] == "none" else "sparse")
        if r["pruning"] != "none":
            assert r["kept_pct"] == pytest.approx(100 * float(r["pruning"].split()[1]))
    bad = dvolver("prune", "--backbone", "lenet300", "--method", "joint", db=tmp_path / "other.db")
    assert bad.returncode == 2 and "LeNet300 has no Conv2d layer" in bad.stderr
    assert not (tmp_path / "other.db").exists()
