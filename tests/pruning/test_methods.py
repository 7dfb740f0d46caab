"""The one entry point every pruning method runs through (dvolver.pruning.methods), on real digits."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from dvolver import costs, data
from dvolver.pruning import methods
from dvolver.pruning.magnitude import keep_count, prunable_layers
from dvolver.spec import TrainingSpec
from search_spaces.backbones import build_backbone

CPU = torch.device("cpu")
# Enough steps for the methods to move, small enough for a unit test.
SHORT = TrainingSpec(epochs=2, batch_size=32, train_limit=300, lr=0.05)


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def backbone(name: str, ds, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_backbone(name, ds.input_shape, ds.num_classes)


def zeros_per_layer(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {name: (int(torch.count_nonzero(m.weight)), m.weight.numel()) for name, m in prunable_layers(model)}


# Reparam reaches its budget through training: at SHORT's 20 steps it still holds 24 % of the weights
# when cut to 10 %, and the cut network is at chance; 6 epochs (57 steps) bring it to 17 % and 60 % accuracy.
LONGER = TrainingSpec(epochs=6, batch_size=32, train_limit=300, lr=0.05)


@pytest.mark.parametrize("method,training", [("reparam", LONGER), ("magnitude", SHORT)])
def test_global_budget_methods_keep_exactly_the_budget(digits, method, training):
    budget = 0.1
    out = methods.prune(backbone("conv2", digits), digits, method, budget, None, training, 0, CPU)
    layers = zeros_per_layer(out.model)
    total = sum(n for _, n in layers.values())
    assert sum(k for k, _ in layers.values()) == keep_count(budget, total)
    assert out.kept_fraction == pytest.approx(keep_count(budget, total) / total)
    assert not out.structured and out.method == method
    assert out.result.epochs == training.epochs
    assert out.result.val_acc > 20, out.result  # ten digits: chance is 10 % (magnitude, cut untuned: ~32 %)


def test_reparam_cut_before_it_reached_its_budget_says_so(digits, caplog):
    # On the method's own logger: other tests of the session may leave the root's handlers changed.
    logger = logging.getLogger("dvolver.pruning.methods")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger=logger.name):
            out = methods.prune(backbone("conv2", digits), digits, "reparam", 0.1, None, SHORT, 0, CPU)
    finally:
        logger.removeHandler(caplog.handler)
    assert out.details["kept_before_cut"] > 0.15
    assert "train longer" in caplog.text and "when cut to 10.0 %" in caplog.text


def test_edgepopup_keeps_the_budget_in_every_layer(digits):
    out = methods.prune(backbone("conv2", digits), digits, "edgepopup", 0.3, None, SHORT, 0, CPU)
    for name, (kept, total) in zeros_per_layer(out.model).items():
        assert kept == max(1, round(0.3 * total)), name
        assert out.layers[name] == pytest.approx(kept / total)


@pytest.mark.parametrize("method", ["aslp", "supermask"])
def test_learned_sparsity_is_reported_as_the_extracted_network_has_it(digits, method):
    out = methods.prune(backbone("conv2", digits), digits, method, None, None, SHORT, 0, CPU)
    layers = zeros_per_layer(out.model)
    kept = sum(k for k, _ in layers.values()) / sum(n for _, n in layers.values())
    assert out.kept_fraction == pytest.approx(kept)
    assert 0.0 < kept < 1.0
    counted = costs.count(out.model, digits.input_shape)
    assert counted.sparse_macs is not None and counted.sparse_macs < counted.macs


def test_the_same_seed_gives_the_same_subnetwork(digits):
    a = methods.prune(backbone("conv2", digits), digits, "aslp", None, None, SHORT, 3, CPU).model.state_dict()
    b = methods.prune(backbone("conv2", digits), digits, "aslp", None, None, SHORT, 3, CPU).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_magnitude_fine_tuning_keeps_pruned_weights_at_zero(digits):
    opts = methods.MagnitudeOptions(finetune_epochs=1)
    out = methods.prune(backbone("conv2", digits), digits, "magnitude", 0.2, opts, SHORT, 0, CPU)
    total = sum(n for _, n in zeros_per_layer(out.model).values())
    assert sum(k for k, _ in zeros_per_layer(out.model).values()) == keep_count(0.2, total)
    assert out.result.epochs == SHORT.epochs + 1 and out.details["finetune_epochs"] == 1


def test_joint_returns_a_narrower_dense_network_with_its_real_costs(digits):
    model = backbone("conv2", digits)
    dense = costs.count(model, digits.input_shape)
    out = methods.prune(model, digits, "joint", 0.5, None, TrainingSpec(epochs=4, batch_size=64, train_limit=300),
                        0, CPU)
    assert out.structured and out.keep
    narrow = costs.count(out.model, digits.input_shape)
    assert narrow.sparse_macs is None  # filters are gone, not zeroed
    assert narrow.macs < dense.macs and narrow.params < dense.params
    widths = [m.out_channels for m in out.model.modules() if isinstance(m, nn.Conv2d)]
    assert all(w < 64 for w in widths)
    for root, kept in out.keep.items():
        assert out.layers[root] == pytest.approx(len(kept) / 64)
        # The ratio is a probability mass over softmax(alpha): never more channels than it, fewer where alpha
        # has grown apart.
        assert 0 < out.layers[root] <= max(methods.joint_ratios(0.5)) + 1 / 64


@pytest.mark.parametrize("augment", ["none", "crop_flip"])
def test_joint_trains_with_the_specs_augmentation_layout_and_device(digits, augment):
    assert bool((digits.x_train != 0).all())  # so an exact zero in a batch is crop_flip's padding
    seen: list[torch.Tensor] = []

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if isinstance(module, nn.Conv2d) and module.in_channels == 1 and module.training and torch.is_grad_enabled():
            seen.append(args[0])

    spec = TrainingSpec(epochs=2, batch_size=64, train_limit=128, augment=augment, channels_last="on")
    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        out = methods.prune(backbone("conv2", digits), digits, "joint", 0.5, None, spec, 0, CPU)
    finally:
        handle.remove()
    assert any(bool((x == 0).any()) for x in seen) == (augment == "crop_flip")
    assert all(x.device == CPU for x in seen)
    assert all(p.device == CPU for p in out.model.parameters())
    kernels = [m.weight for m in out.model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1]
    assert kernels and all(w.is_contiguous(memory_format=torch.channels_last) for w in kernels)


def test_joint_ratios_and_schedule_follow_the_paper_scaled_to_the_epochs():
    assert methods.joint_ratios(0.725) == (0.6, 0.65, 0.7, 0.75, 0.8, 0.85)
    assert max(methods.joint_ratios(0.95)) == 1.0 and min(methods.joint_ratios(0.05)) == 0.05
    for epochs in (4, 10, 30, 200):
        iterations, stages, finetune = methods.joint_schedule(epochs, methods.JointOptions())
        per_stage = iterations / len(stages)
        total = per_stage * sum(stages) + finetune
        assert abs(total - epochs) <= max(2, 0.15 * epochs), (epochs, iterations, stages, finetune)
        assert list(stages) == sorted(stages, reverse=True)  # coarse to fine


def test_a_method_that_cannot_prune_the_network_says_so_before_training(digits):
    with pytest.raises(methods.PruningError, match="LeNet300 has no Conv2d layer"):
        methods.check("joint", backbone("lenet300", digits))
    depthwise = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(methods.PruningError, match="depthwise"):
        methods.check("joint", depthwise)
    with pytest.raises(methods.PruningError, match="unknown pruning method 'obd'"):
        methods.check("obd", backbone("conv2", digits))
    for budget in (0.0, -0.1, 1.5, math.nan):
        with pytest.raises(methods.PruningError, match=r"outside \(0, 1\]"):
            methods.prune(backbone("conv2", digits), digits, "reparam", budget, None, SHORT, 0, CPU)
    with pytest.raises(methods.PruningError, match="reparam needs a budget"):
        methods.prune(backbone("conv2", digits), digits, "reparam", None, None, SHORT, 0, CPU)
