"""What a finished final training gives (issue 19): its exports, each loaded back the way a user would load
it, reach the test accuracy the training recorded; a training that has not finished exports nothing; a
reference architecture trains beside the candidates and is listed as one; and `dvolver training compare`
reports how the proxy ranking survived.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dvolver import data, run_search
from dvolver.cli import app
from dvolver.store import Store
from dvolver.trainings import create_trainings
from search_spaces import make_space
from search_spaces.nasnet import NASNET_A
from tests.helpers import TINY

TINY_FINAL = ["--filters", "4", "--cells", "1", "--epochs", "1", "--train-limit", "200", "--batch-size", "32",
              "--device", "cpu"]
FINAL_SPACE = {"cells_per_stage": 1, "filters": 4}


def _cli(*args: str) -> object:
    return CliRunner().invoke(app, [*args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> str:
    """A tiny search whose knee and NASNet-A are trained at one tiny final recipe, one thread each."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the tests share two cores, and torch's default takes both
    try:
        db = str(tmp_path_factory.mktemp("trained") / "store.db")
        run_search(TINY | {"evaluations": 6, "population": 3}, db=db, executor="inline")
        for choice in (["--knee"], ["--genome", "nasnet-a"]):
            done = _cli("train", "1", *choice, *TINY_FINAL, "--db", db)
            assert done.exit_code == 0, done.output
    finally:
        torch.set_num_threads(before)
    return db


def _accuracy(logits: np.ndarray, labels: torch.Tensor) -> float:
    return 100.0 * int((torch.from_numpy(np.asarray(logits)).argmax(1) == labels).sum()) / len(labels)


def _reloaded_logits(fmt: str, path, genome: tuple[int, ...], x: torch.Tensor) -> np.ndarray:
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"input": x.numpy()})[0]
    if fmt == "torch_export":
        model = torch.export.load(str(path)).module()
    else:
        model = make_space("nasnet", FINAL_SPACE).build(genome, (1, 8, 8), 10)
        model.load_state_dict(torch.load(io.BytesIO(path.read_bytes()), weights_only=True))
        model.eval()
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.parametrize("fmt", ["state_dict", "torch_export", "onnx"])
def test_each_export_of_a_training_reloads_to_its_recorded_test_accuracy(trained, tmp_path, fmt):
    training = Store(trained).get_training(1)
    path = tmp_path / f"model.{fmt}"
    out = _cli("training", "export", "1", "--format", fmt, "--out", str(path), "--db", trained)
    assert out.exit_code == 0, out.output
    assert "its outputs match those recorded when its training finished" in out.stderr
    digits = data.load("digits")
    logits = _reloaded_logits(fmt, path, training.genome, digits.x_test)
    assert _accuracy(logits, digits.y_test) == training.test_acc


def test_a_training_that_has_not_finished_exports_nothing(trained, tmp_path):
    [queued] = create_trainings(Store(trained), 1, "knee", {"epochs": 1, "scale": {"nasnet": {"cells": 1,
                                                                                              "filters": 4}}})
    path = tmp_path / "model.pt"
    out = _cli("training", "export", str(queued), "--format", "state_dict", "--out", str(path), "--db", trained)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.exit_code == 2
    assert len(lines) == 1 and f"training {queued} is queued, not finished" in lines[0]
    assert not path.exists()


def test_a_reference_architecture_trains_beside_the_candidates_and_is_listed_as_one(trained):
    reference = Store(trained).get_training(2)
    assert (reference.candidate_id, reference.genome, reference.status) == (None, NASNET_A, "finished")
    listed = json.loads(_cli("training", "list", "--search", "1", "--format", "json", "--db", trained).stdout)
    assert [(t["id"], t["reference"]) for t in listed[:2]] == [(1, False), (2, True)]
    table = _cli("training", "list", "--search", "1", "--db", trained).stdout
    assert "reference" in table


@pytest.mark.parametrize(("genome", "message"), [
    ("resnet", "genome: give a reference's name (nasnet-a) or a JSON list of integers"),
    ("[1, 2, 3]", "genome does not belong to the nasnet space"),
])
def test_a_bad_reference_genome_exits_2_naming_the_field_and_creates_nothing(trained, genome, message):
    before = len(Store(trained).list_trainings())
    out = _cli("train", "1", "--genome", genome, *TINY_FINAL, "--db", trained)
    assert out.exit_code == 2 and message in out.stderr, out.output
    assert len(Store(trained).list_trainings()) == before


def test_compare_reports_the_rank_correlations_and_the_fronts(trained):
    out = _cli("training", "compare", "1", "--format", "json", "--db", trained)
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    store = Store(trained)
    knee = store.get_training(1)
    assert report["pairs"] == [{"training": 1, "candidate": knee.candidate_id,
                                "proxy_acc": store.candidate(1, knee.candidate_id).objectives["acc"],
                                "val_acc": knee.val_acc, "test_acc": knee.test_acc}]
    assert report["kendall_tau_val"] is None  # one pair ranks nothing
    assert report["references"] == [2] and set(report["final_front"]) <= {1, 2}
    assert knee.candidate_id in report["proxy_front"]
    assert set(report["fell_off"]) == ({knee.candidate_id} if 1 not in report["final_front"] else set())
    assert len(report["not_retrained"]) == len(report["proxy_front"]) - 1
    assert "Kendall tau" in _cli("training", "compare", "1", "--db", trained).stdout
