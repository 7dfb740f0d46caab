"""A candidate trained in rungs, each resumed from the checkpoint the one before returned, is the same
run as one trained straight through: the same weights, bit for bit, and the same accuracies."""

import pytest

from dvolver.data import load
from dvolver.evaluation import CHECKPOINT, WEIGHTS, evaluate
from dvolver.spec import SearchSpec
from search_spaces.nasnet import NASNET_A


@pytest.mark.parametrize("schedule", ["one_cycle", "cosine"])
def test_rungs_resumed_from_checkpoints_are_one_continuous_run(schedule):
    data = load("digits")
    training = {"epochs": 5, "train_limit": 400, "schedule": schedule, "latency_repeats": 1}
    plain = SearchSpec.from_dict({"space_options": {"filters": 4}, "training": training})
    rungs = SearchSpec.from_dict({"space_options": {"filters": 4}, "training": training,
                                  "early_stopping": {"method": "sha", "min_epochs": 1, "eta": 3}})
    straight = evaluate(NASNET_A, plain, 7, data)
    first = evaluate(NASNET_A, rungs, 7, data, rung=1)
    second = evaluate(NASNET_A, rungs, 7, data, rung=3, checkpoint=first[CHECKPOINT])
    last = evaluate(NASNET_A, rungs, 7, data, rung=5, checkpoint=second[CHECKPOINT])
    assert (first["epochs"], second["epochs"], last["epochs"]) == (1, 3, 5)
    assert CHECKPOINT not in last and "latency" not in first
    assert last[WEIGHTS] == straight[WEIGHTS]
    assert (last["acc"], last["test_acc"], last["train_loss"]) == (
        straight["acc"], straight["test_acc"], straight["train_loss"])
    # A rung's accuracy is a real, partial one: well above chance, and the run goes on improving.
    assert first["acc"] > 10 and first["train_loss"] > last["train_loss"]
