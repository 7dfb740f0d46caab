"""Mask learning over frozen random weights: ASLP (Gumbel-softmax), edge-popup and Supermask."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dvolver.pruning import edgepopup, gumbel, supermask
from dvolver.pruning.masked import MaskedConv2d, MaskedLayer, MaskedLinear, masked_layers

METHODS = [gumbel, edgepopup, supermask]


@pytest.fixture(autouse=True)
def _one_thread():
    # These nets are tiny: one thread is faster than two fighting over a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_net(batchnorm: bool = False) -> nn.Module:
    """Two convs and a linear layer on 1x8x8 inputs (optionally with a BatchNorm)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8) if batchnorm else nn.Identity(),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 2),
    )


def toy_data(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable 2-class problem: is the top half of the image brighter than the bottom half?"""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long()
    return x, y


def steps(model: nn.Module, opt: torch.optim.Optimizer, n: int, batch: int = 64, seed: int = 0) -> float:
    x, y = toy_data()
    g = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(n):
        idx = torch.randint(0, len(y), (batch,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def accuracy(model: nn.Module) -> float:
    x, y = toy_data(seed=1)
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def frozen_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything that must never change: the wrapped weights and biases, BatchNorm's affine parameters."""
    learned = {id(p) for m in masked_layers(model).values() for p in (m.scores, m.scale) if p is not None}
    return {name: p.detach().clone() for name, p in model.named_parameters() if id(p) not in learned}


# --- shared wrapper -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_prepare_wraps_every_conv_and_linear_and_freezes_the_rest(method):
    model = method.prepare(small_net(batchnorm=True), seed=0)
    layers = masked_layers(model)
    assert [type(m) for m in layers.values()] == [MaskedConv2d, MaskedConv2d, MaskedLinear]
    assert list(layers) == ["0", "3", "7"]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    expected = {f"{name}.scores" for name in layers}
    if method is gumbel:
        expected |= {f"{name}.scale" for name in layers}
    assert trainable == expected
    assert model(toy_data(8)[0]).shape == (8, 2)
    with pytest.raises(ValueError, match="already has masked layers"):
        method.prepare(model)


def test_a_bare_linear_layer_is_wrapped_too():
    layer = gumbel.prepare(nn.Linear(5, 3), seed=0)
    assert isinstance(layer, MaskedLinear)
    assert isinstance(gumbel.extract(layer), nn.Linear)


def test_the_same_seed_gives_the_same_random_network_for_every_method():
    weights = [[m.layer.weight for m in masked_layers(meth.prepare(small_net(), seed=3)).values()] for meth in METHODS]
    for other in weights[1:]:
        assert all(torch.equal(a, b) for a, b in zip(weights[0], other))
    different = [m.layer.weight for m in masked_layers(gumbel.prepare(small_net(), seed=4)).values()]
    assert not torch.equal(weights[0][0], different[0])


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_weights_stay_frozen_while_the_masks_learn(method):
    model = method.prepare(small_net(batchnorm=True), signed_constant=True, seed=0)
    before = frozen_state(model)
    scores_before = [m.scores.detach().clone() for m in masked_layers(model).values()]
    # Even an optimizer handed every parameter, with weight decay, leaves frozen ones alone (they get no grad).
    opt = torch.optim.SGD(
        [*method.parameter_groups(model), {"params": [p for p in model.parameters() if not p.requires_grad]}],
        lr=0.1,
        weight_decay=0.1,
    )
    steps(model, opt, 5)
    after = frozen_state(model)
    assert before.keys() == after.keys() and len(before) == 3 * 2 + 2  # 3 weights + 3 biases + BN weight/bias
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not torch.equal(s0, m.scores) for s0, m in zip(scores_before, masked_layers(model).values()))


def test_training_is_reproducible_under_the_seed():
    def run(seed: int) -> list[torch.Tensor]:
        model = gumbel.prepare(small_net(), seed=seed)
        torch.manual_seed(123 + seed)  # the global generator must not matter
        steps(model, torch.optim.SGD(gumbel.parameter_groups(model)), 5)
        return [m.scores.detach().clone() for m in masked_layers(model).values()]

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_signed_constant_init_gives_sign_times_the_layer_std():
    plain = masked_layers(gumbel.prepare(small_net(), seed=7))
    signed = masked_layers(gumbel.prepare(small_net(), signed_constant=True, seed=7))
    for name, layer in plain.items():
        w, w_sc = layer.layer.weight, signed[name].layer.weight
        assert torch.allclose(w_sc.abs(), torch.full_like(w, w.std().item()))
        assert torch.equal(torch.sign(w_sc), torch.sign(w))


def test_masked_models_pickle_and_keep_their_noise_stream():
    model = gumbel.prepare(small_net(), seed=0)
    layer = masked_layers(model)["3"]
    layer.mask()  # start the stream
    clone = pickle.loads(pickle.dumps(model))
    assert torch.equal(layer.mask(), masked_layers(clone)["3"].mask())


# --- ASLP -----------------------------------------------------------------------------------------------


def test_gumbel_mask_is_exactly_binary_and_the_logits_get_gradient():
    model = gumbel.prepare(small_net(), seed=0)
    model.train()
    x, y = toy_data(32)
    for layer in masked_layers(model).values():
        with torch.no_grad():
            layer.scores.normal_(0, 2)
        mask = layer.mask()
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert 0 < mask.sum() < mask.numel()
        assert mask.requires_grad  # straight-through: the soft sample's gradient reaches the logits
    # The forward pass really uses the hard sample: replay the layer's noise and compare with a manual conv.
    conv = masked_layers(model)["0"]
    state = conv.generator().get_state()
    mask = conv.mask().detach()
    conv.generator().set_state(state)
    expected = F.conv2d(x, conv.scale * (conv.layer.weight * mask), conv.layer.bias, padding=1)
    assert torch.equal(conv(x), expected)
    # A fresh mask per forward pass.
    assert not torch.equal(conv.mask(), conv.mask())
    F.cross_entropy(model(x), y).backward()
    for layer in masked_layers(model).values():
        assert layer.scores.grad is not None and layer.scores.grad.abs().sum() > 0
        assert layer.scale.grad is not None and layer.scale.grad.abs() > 0  # smart rescale learns too


def test_gumbel_keep_rate_matches_sigmoid_of_the_logit():
    logits = torch.tensor([-3.0, -1.0, -0.25, 0.0, 0.5, 1.5, 4.0])
    scores = logits.repeat_interleave(20_000).view(len(logits), -1)
    rule = gumbel.GumbelMask()
    masks = rule.sample(scores, torch.Generator().manual_seed(0))
    rate = masks.mean(dim=1)
    assert torch.allclose(rate, torch.sigmoid(logits), atol=0.012), (rate, torch.sigmoid(logits))
    assert torch.allclose(rule.keep_probability(logits), torch.sigmoid(logits))
    # The temperature changes the gradient, not the distribution of the hard sample.
    hot = gumbel.GumbelMask(tau=5.0).sample(scores, torch.Generator().manual_seed(0))
    assert torch.equal(hot, masks)


def test_gumbel_logit_gradient_is_the_soft_sample_gradient():
    rule = gumbel.GumbelMask(tau=0.5)
    scores = torch.tensor([0.3, -0.7], requires_grad=True)
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    rule.sample(scores, g).sum().backward()
    g.set_state(state)
    u = torch.rand((2, 2), generator=g)
    gumbels = -torch.log(-torch.log(u))
    soft = torch.sigmoid((scores.detach() + gumbels[0] - gumbels[1]) / 0.5)
    assert torch.allclose(scores.grad, soft * (1 - soft) / 0.5)


def test_aslp_extraction_keeps_exactly_the_nonnegative_logits_and_matches_eval_outputs():
    model = gumbel.prepare(small_net(batchnorm=True), signed_constant=True, seed=0)
    steps(model, torch.optim.SGD(gumbel.parameter_groups(model)), 3)  # BN statistics move, logits spread
    gen = torch.Generator().manual_seed(1)
    layers = masked_layers(model)
    with torch.no_grad():
        for i, layer in enumerate(layers.values()):
            layer.scores.copy_(torch.randn(layer.scores.shape, generator=gen))
            layer.scale.fill_(0.5 + i)
    model.eval()
    subnet = gumbel.extract(model)
    stats = gumbel.keep_stats(model)
    for name, layer in layers.items():
        plain = subnet.get_submodule(name)
        assert type(plain) is (nn.Conv2d if isinstance(layer, MaskedConv2d) else nn.Linear)
        keep = layer.scores >= 0
        assert torch.equal(plain.weight != 0, keep)
        assert torch.equal(plain.weight[keep], (layer.scale * layer.layer.weight)[keep])
        assert torch.equal(plain.bias, layer.layer.bias)
        assert stats[name].kept == int(keep.sum()) and stats[name].total == keep.numel()
    total = sum(s.total for s in stats.values())
    assert gumbel.kept_fraction(model) == sum(s.kept for s in stats.values()) / total
    x = toy_data(64)[0]
    with torch.no_grad():
        assert torch.equal(subnet(x), model(x))
        assert torch.equal(model(x), model(x))  # eval mode is deterministic
    assert not any(isinstance(m, MaskedLayer) for m in subnet.modules())
    assert all(p.requires_grad for p in subnet.parameters())
    assert isinstance(masked_layers(model)["0"], MaskedLayer)  # the masked model is left as it was


def test_aslp_learns_a_separable_problem_through_the_masks_alone():
    model = gumbel.prepare(small_net(), signed_constant=True, seed=0)
    before = frozen_state(model)
    assert accuracy(model.eval()) < 0.7
    steps(model, torch.optim.SGD(gumbel.parameter_groups(model)), 300, batch=128)
    model.eval()
    acc = accuracy(model)  # held-out data; chance is 0.5
    assert acc > 0.75, acc
    assert accuracy(gumbel.extract(model)) == acc
    assert 0.05 < gumbel.kept_fraction(model) < 0.95  # the sparsity was learned
    assert all(torch.equal(before[k], v) for k, v in frozen_state(model).items())


# --- edge-popup -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.1, 0.3, 0.5, 0.9])
def test_edgepopup_keeps_exactly_k_per_layer_by_score_magnitude(keep):
    model = edgepopup.prepare(small_net(), keep=keep, seed=0)
    steps(model, torch.optim.SGD(edgepopup.parameter_groups(model)), 3)
    x, y = toy_data(32)
    model.train()
    F.cross_entropy(model(x), y).backward()
    for name, layer in masked_layers(model).items():
        n = layer.scores.numel()
        k = round(keep * n)
        train_mask, eval_mask = layer.mask(), layer.rule.deterministic(layer.scores)
        for mask in (train_mask, eval_mask):
            assert set(mask.unique().tolist()) == {0.0, 1.0} and int(mask.sum()) == k
        magnitude = layer.scores.detach().abs().flatten()
        assert torch.equal(
            eval_mask.flatten().bool().nonzero().flatten().sort().values, torch.topk(magnitude, k).indices.sort().values
        )
        assert layer.scores.grad is not None and layer.scores.grad.abs().sum() > 0  # straight-through
        assert edgepopup.keep_stats(model)[name].kept == k
    subnet = edgepopup.extract(model)
    model.eval()
    with torch.no_grad():
        assert torch.equal(subnet(x), model(x))


def test_edgepopup_scores_start_kaiming_uniform():
    layer = masked_layers(edgepopup.prepare(small_net(), seed=0))["3"]
    bound = 1 / (8 * 3 * 3) ** 0.5  # kaiming_uniform with a = sqrt(5): 1 / sqrt(fan_in)
    assert layer.scores.abs().max() <= bound and layer.scores.std() > bound / 3
    with pytest.raises(ValueError, match="keep fraction"):
        edgepopup.TopKMask(keep=0.0)


# --- Supermask ------------------------------------------------------------------------------------------


def test_supermask_samples_binary_masks_with_gradient_and_rescales_by_the_kept_fraction():
    model = supermask.prepare(small_net(), seed=0)
    model.train()
    x, y = toy_data(32)
    conv = masked_layers(model)["3"]
    with torch.no_grad():
        conv.scores.normal_(0, 1)
    state = conv.generator().get_state()
    mask = conv.mask()
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    conv.generator().set_state(state)
    m = mask.detach()
    expected = conv.layer.weight * m * (m.numel() / m.sum())
    assert torch.allclose(conv.effective_weight(), expected, rtol=0, atol=1e-7)
    # Keep rate ~ sigmoid(score).
    rule = supermask.BernoulliMask()
    logits = torch.tensor([-2.0, 0.0, 1.0]).repeat_interleave(20_000).view(3, -1)
    rate = rule.sample(logits, torch.Generator().manual_seed(0)).mean(1)
    assert torch.allclose(rate, torch.sigmoid(torch.tensor([-2.0, 0.0, 1.0])), atol=0.012)
    F.cross_entropy(model(x), y).backward()
    for layer in masked_layers(model).values():
        assert layer.scores.grad is not None and layer.scores.grad.abs().sum() > 0
        assert layer.scale is None
    # Eval: the deterministic mask sigmoid(s) >= 0.5, rescaled by its own kept fraction; extraction agrees.
    model.eval()
    keep = (conv.scores >= 0).float()
    assert torch.equal(conv.mask(), keep)
    subnet = supermask.extract(model)
    assert torch.allclose(subnet.get_submodule("3").weight, conv.layer.weight * keep * (keep.numel() / keep.sum()))
    with torch.no_grad():
        assert torch.equal(subnet(x), model(x))
    # Without dynamic rescaling the masked weight is just w * m.
    plain = supermask.prepare(small_net(), dynamic_rescale=False, seed=0).eval()
    layer = masked_layers(plain)["3"]
    assert torch.equal(layer.effective_weight(), layer.layer.weight * layer.mask())


def test_supermask_learns_a_separable_problem():
    model = supermask.prepare(small_net(), signed_constant=True, seed=0)
    # lr 10: on this 3-layer toy, lr 50 with dynamic rescaling learns to prune the 72-weight first conv
    # (a larger rescale) instead of separating the classes.
    steps(model, torch.optim.SGD(supermask.parameter_groups(model, lr=10.0)), 300, batch=128)
    assert accuracy(model.eval()) > 0.65


def test_edgepopup_learns_a_separable_problem():
    model = edgepopup.prepare(small_net(), keep=0.5, signed_constant=True, seed=0)
    steps(model, torch.optim.SGD(edgepopup.parameter_groups(model)), 300, batch=128)
    assert accuracy(model.eval()) > 0.75
    assert edgepopup.kept_fraction(model) == pytest.approx(0.5, abs=0.01)
