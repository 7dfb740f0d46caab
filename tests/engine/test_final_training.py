"""Final training (issue 19): the recipe's validation, drop-path and the auxiliary head, and a resumable run."""

import dataclasses
import io

import pytest
import torch

from dvolver.costs import count
from dvolver.data import load
from dvolver.errors import SpecError
from dvolver.final_spec import FinalTraining
from dvolver.final_training import train_final
from search_spaces import make_space
from search_spaces.nasnet import NASNET_A, drop_path

SMALL = {"nasnet": {"cells": 1, "filters": 4}}
# Every regulariser on (crop and flip too, though they ruin 8x8 digits: this recipe is for the resume check).
EVERYTHING = dict(scale=SMALL, epochs=3, train_limit=120, batch_size=32, drop_path=0.3, aux_weight=0.4,
                  cutout=3, crop_flip=True, ema_decay=0.9, label_smoothing=0.1, warmup_epochs=1)


@pytest.fixture(scope="module")
def digits():
    return load("digits")


@pytest.mark.parametrize(("values", "field"), [
    ({"epochs": 0}, "epochs"),
    ({"epochs": True}, "epochs"),
    ({"drop_path": 1.5}, "drop_path"),
    ({"scale": {"nasnet": {"filters": 1}}}, "scale.nasnet.filters"),
    ({"scale": {"nb201": {"depth": 3}}}, "scale.nb201.depth"),
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"schedule": "step"}, "schedule"),
    ({"schedule": "one_cycle", "warmup_epochs": 2}, "warmup_epochs"),
    ({"epochs": 3, "warmup_epochs": 3}, "warmup_epochs"),
    ({"momentum": 0, "nesterov": True}, "nesterov"),
    ({"dataset": "/no/such/data.npz"}, "dataset"),
    ({"lr": float("nan")}, "lr"),
    ({"optimizer": "adam"}, "optimizer"),
])
def test_a_bad_recipe_is_refused_naming_its_field(values, field):
    with pytest.raises(SpecError, match=rf"^invalid final training: .*{field}"):
        FinalTraining.from_dict(values)


def test_every_field_is_described():
    recipe = FinalTraining()
    for model in (recipe, recipe.scale, recipe.scale.nasnet, recipe.scale.nb201):
        missing = [name for name, f in type(model).model_fields.items() if not f.description]
        assert not missing, (type(model).__name__, missing)


def test_regularisers_left_to_the_space_are_on_for_nasnet_and_refused_where_absent():
    nasnet = FinalTraining().for_space("nasnet")
    assert (nasnet.drop_path, nasnet.aux_weight) == (0.2, 0.4)
    nb201 = FinalTraining().for_space("nb201")
    assert (nb201.drop_path, nb201.aux_weight) == (0.0, 0.0)
    for field in ("drop_path", "aux_weight"):
        with pytest.raises(SpecError, match=f"{field}: the nb201 space"):
            FinalTraining(**{field: 0.3}).for_space("nb201")
    with pytest.raises(SpecError, match="scale.width"):
        FinalTraining(scale={"width": 2}).for_space("resnet20")
    options = FinalTraining(scale={"nasnet": {"cells": 6, "filters": 32}}).space_options("nasnet", {"blocks": 5})
    assert options == {"blocks": 5, "cells_per_stage": 6, "filters": 32}


def test_drop_path_only_acts_in_training_mode_and_above_rate_zero():
    torch.manual_seed(0)
    model = make_space("nasnet", {"filters": 4}).build(NASNET_A, (1, 8, 8), 10)
    x = torch.randn(8, 1, 8, 8)
    model.train()
    before = model(x)
    rng = torch.get_rng_state()
    model.drop_path_rate = 0.0
    assert torch.equal(model(x), before) and torch.equal(torch.get_rng_state(), rng)  # nothing drawn at rate 0
    model.eval()
    plain = model(x)
    model.drop_path_rate = 0.5
    assert torch.equal(model(x), plain)
    model.train()
    assert not torch.equal(model(x), before)
    y = torch.ones(64, 3, 2, 2)
    dropped = drop_path(y, 0.5)
    per_sample = dropped.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}  # kept samples scaled by 1 / keep
    assert all(len(row.unique()) == 1 for row in per_sample)  # a whole sample is dropped or kept


def test_the_auxiliary_head_leaves_the_network_and_its_eval_graph_alone():
    space = make_space("nasnet", {"filters": 4})
    torch.manual_seed(0)
    plain = space.build(NASNET_A, (1, 8, 8), 10)
    torch.manual_seed(0)
    aux = space.build(NASNET_A, (1, 8, 8), 10, aux_head=True)
    own = {k: v for k, v in aux.state_dict().items() if not k.startswith("aux_head.")}
    assert own.keys() == plain.state_dict().keys() and len(own) < len(aux.state_dict())
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in own.items())  # the same initial weights
    x = torch.randn(4, 1, 8, 8)
    logits, aux_logits = aux.train()(x)
    assert logits.shape == aux_logits.shape == (4, 10)
    assert torch.equal(logits, plain.train()(x))
    assert torch.equal(aux.eval()(x), plain.eval()(x))

    def ops(model):
        program = torch.export.export(model.eval(), (x,))
        return [str(n.target) for n in program.graph.nodes if n.op == "call_function"]

    assert ops(aux) == ops(plain)
    assert count(aux, (1, 8, 8)).macs == count(plain, (1, 8, 8)).macs


def _weights(blob: bytes) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(blob), weights_only=True)


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _timeless(history):
    return [dataclasses.replace(m, seconds=0.0) for m in history]


def test_a_run_stopped_after_any_epoch_and_resumed_from_bytes_ends_bit_identical(digits):
    final = FinalTraining(**EVERYTHING)
    straight_last, resumed_last = {}, {}
    straight = train_final(NASNET_A, "nasnet", final, digits,
                           on_epoch=lambda m, checkpoint: straight_last.update(s=checkpoint()))
    assert straight.finished and straight.checkpoint is None and straight.test_acc is not None
    assert [m.drop_path for m in straight.history] == pytest.approx([0.0, 0.1, 0.2])  # 0.3 x epoch / epochs
    assert straight.history[0].lr == pytest.approx(0.025) and straight.history[-1].lr == pytest.approx(0, abs=1e-12)
    for k in (1, 2):
        stopped = train_final(NASNET_A, "nasnet", final, digits, until_epoch=k)
        assert not stopped.finished and stopped.weights is None and stopped.test_acc is None
        assert _timeless(stopped.history) == _timeless(straight.history[:k])
        resumed = train_final(NASNET_A, "nasnet", final, digits, resume_state=stopped.checkpoint,
                              on_epoch=lambda m, checkpoint: resumed_last.update(s=checkpoint()))
        _assert_same_tensors(_weights(resumed.weights), _weights(straight.weights))
        assert (resumed.val_acc, resumed.test_acc) == (straight.val_acc, straight.test_acc)
        assert _timeless(resumed.history) == _timeless(straight.history)
        ours, theirs = _weights(resumed_last.pop("s")), _weights(straight_last["s"])
        _assert_same_tensors(ours["model"], theirs["model"])  # the training weights, not only the averaged ones
        _assert_same_tensors(ours["ema"], theirs["ema"])
        for stream in ("generator", "torch_rng"):
            assert torch.equal(ours[stream], theirs[stream]), stream
    done = train_final(NASNET_A, "nasnet", final, digits, resume_state=straight_last["s"])  # after the last epoch
    _assert_same_tensors(_weights(done.weights), _weights(straight.weights))
    assert done.test_acc == straight.test_acc
    with pytest.raises(SpecError, match="another training"):
        train_final(NASNET_A, "nasnet", final.model_copy(update={"seed": 1}), digits, resume_state=stopped.checkpoint)


def test_a_small_final_training_learns_digits_and_its_weights_are_the_network_deployed(digits):
    final = FinalTraining(scale=SMALL, epochs=4, train_limit=400, batch_size=32)  # nasnet: drop-path and aux head on
    result = train_final(NASNET_A, "nasnet", final, digits)
    assert result.val_acc > 80, result.history  # ten classes: chance is 10 %; measured 93 %
    assert result.history[-1].val_acc == result.val_acc
    net = make_space("nasnet", result.space_options).build(NASNET_A, result.input_shape, result.num_classes)
    net.load_state_dict(_weights(result.weights))  # strict: no auxiliary head in what is deployed
    net.eval()
    with torch.no_grad():
        correct = (net(digits.x_test).argmax(1) == digits.y_test).sum().item()
    assert 100 * correct / len(digits.y_test) == pytest.approx(result.test_acc)


def test_test_accuracy_is_measured_on_the_test_split_alone_and_chooses_nothing(digits):
    final = FinalTraining(scale=SMALL, epochs=2, train_limit=200, batch_size=32, aux_weight=0, drop_path=0)
    wrong = dataclasses.replace(digits, y_test=(digits.y_test + 1) % digits.num_classes)
    right, shifted = train_final(NASNET_A, "nasnet", final, digits), train_final(NASNET_A, "nasnet", final, wrong)
    _assert_same_tensors(_weights(right.weights), _weights(shifted.weights))
    assert _timeless(right.history) == _timeless(shifted.history)
    # Every label moved by one: the network, unchanged, can only score among the images it got wrong.
    assert shifted.test_acc <= 100 - right.test_acc and shifted.test_acc != right.test_acc
