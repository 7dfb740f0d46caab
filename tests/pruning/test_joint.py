import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dvolver import costs
from dvolver.pruning import joint
from dvolver.pruning.joint import (
    JointConfig,
    ThresholdPolicy,
    gumbel_perturb,
    reinforce_step,
    sample_keep,
    search_and_train,
    write_back,
    writeback_indices,
)
from dvolver.pruning.shrink import coupled_convs, shrink
from search_spaces.backbones import build_backbone

SHAPE = (1, 8, 8)


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """4 classes, each a bright 4x4 quadrant on noise: separable, so a few steps learn it."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=gen)
    x = 0.5 * torch.randn(n, *SHAPE, generator=gen)
    for c in range(4):
        r, col = (c // 2) * 4, (c % 2) * 4
        x[y == c, 0, r:r + 4, col:col + 4] += 2.0
    return x, y


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("resnet20", SHAPE, 4)


# ------------------------------------------------------------------------------------------------ sample_keep


def _keep(p, ratio):
    return sample_keep(torch.tensor(p), ratio).tolist()


def test_sample_keep_smallest_set_reaching_ratio():
    p = [0.1, 0.4, 0.3, 0.2]
    assert _keep(p, 0.4) == [1]
    assert _keep(p, 0.6) == [1, 2]
    assert _keep(p, 0.7) == [1, 2]  # exact boundary: 0.4 + 0.3 reaches 0.7
    assert _keep(p, 0.71) == [1, 2, 3]
    assert _keep(p, 1.0) == [0, 1, 2, 3]
    assert _keep([0.7, 0.1, 0.2], 0.9) == [0, 2]  # 0.7 + 0.2 is 0.8999999999999999 in float64
    assert _keep([0.7, 0.1, 0.2], 0.8) == [0, 2]  # the smallest set is by mass, not the first to pass


def test_sample_keep_ties_and_ratio_one():
    assert _keep([0.25, 0.25, 0.25, 0.25], 0.5) == [0, 1]  # ties: lower index first
    assert _keep([0.2, 0.3, 0.3, 0.2], 0.5) == [1, 2]
    assert _keep([0.2, 0.3, 0.3, 0.2], 0.6) == [1, 2]
    assert _keep([0.2, 0.3, 0.3, 0.2], 0.61) == [0, 1, 2]  # of the tied 0.2s, index 0
    assert _keep([0.5, 0.0, 0.5], 1.0) == [0, 2]  # ratio 1 keeps every channel needed, not a massless one
    p = F.softmax(torch.randn(16, generator=torch.Generator().manual_seed(0)), 0)
    assert sample_keep(p, 1.0).tolist() == list(range(16))


def test_sample_keep_is_minimal_on_random_inputs():
    gen = torch.Generator().manual_seed(3)
    for _ in range(50):
        p = F.softmax(torch.randn(int(torch.randint(1, 40, (1,), generator=gen))) * 2, 0)
        ratio = float(torch.rand(1, generator=gen)) * 0.9 + 0.1
        kept = sample_keep(p, ratio)
        assert kept.tolist() == sorted(set(kept.tolist()))
        mass = float(p[kept].sum())
        assert mass >= ratio - 1e-6
        # every larger-p channel is kept, and dropping the smallest kept one falls short
        assert float(p[kept].min()) >= float(p[[i for i in range(len(p)) if i not in kept.tolist()]].max()
                                             if len(kept) < len(p) else 0)
        assert mass - float(p[kept].min()) < ratio - 1e-6 or len(kept) == 1


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.01, float("nan")])
def test_ratio_outside_unit_interval_raises(ratio):
    with pytest.raises(ValueError):
        sample_keep(torch.tensor([0.5, 0.5]), ratio)
    with pytest.raises(ValueError):
        JointConfig(ratios=[0.6, ratio])


# ------------------------------------------------------------------------------------------------ perturbation


def test_gumbel_perturbation_scale():
    alpha = torch.rand(200_000, generator=torch.Generator().manual_seed(0))
    noisy = gumbel_perturb(alpha, 0.05, torch.Generator().manual_seed(1))
    g = (noisy - alpha).double() / 0.05
    assert abs(g.mean().item() - 0.5772) < 0.01  # Euler-Mascheroni: the standard Gumbel mean
    assert abs(g.std().item() - math.pi / math.sqrt(6)) < 0.01
    twice = gumbel_perturb(alpha, 0.1, torch.Generator().manual_seed(1))
    assert torch.allclose(twice - alpha, 2 * (noisy - alpha), atol=1e-6)
    assert torch.equal(gumbel_perturb(alpha, 0.0, torch.Generator().manual_seed(1)), alpha)


# ------------------------------------------------------------------------------------------------ write-back


def _random_keep(model: nn.Module, x: torch.Tensor) -> dict[str, list[int]]:
    gen = torch.Generator().manual_seed(5)
    keep = {}
    for group in coupled_convs(model, x):
        n = model.get_submodule(group[0]).out_channels
        keep[group[0]] = torch.randperm(n, generator=gen)[: int(0.6 * n)].sort().values.tolist()
    return keep


def test_write_back_puts_trained_filters_in_place_and_leaves_the_rest():
    full = _resnet()
    x, y = _data(32, 0)
    keep = _random_keep(full, x[:1])
    sub = shrink(full, keep, x[:1])
    sub.train()
    opt = torch.optim.SGD(sub.parameters(), lr=0.5)
    for _ in range(2):  # changes weights and (train-mode BatchNorm) running statistics
        opt.zero_grad()
        F.cross_entropy(sub(x), y).backward()
        opt.step()
    before = copy.deepcopy(full.state_dict())
    indices = writeback_indices(full, keep, x[:1])
    write_back(full, sub, indices)

    # the kept filters equal the sub-network's: shrinking the written-back network gives it back exactly
    again = shrink(full, keep, x[:1]).state_dict()
    for name, t in sub.state_dict().items():
        if t.is_floating_point():  # num_batches_tracked, a counter, is not per channel and stays
            assert torch.equal(again[name], t), name
    # explicit indices on one conv, its BatchNorm and the classifier
    stem, mid, last = keep["stem.0"], keep["stages.1.0.conv1"], keep["stages.1.0.conv2"]
    w = full.get_submodule("stages.1.0.conv1").weight
    assert torch.equal(w[mid][:, stem], sub.get_submodule("stages.1.0.conv1").weight)
    bn = full.get_submodule("stages.1.0.bn1")
    assert torch.equal(bn.running_mean[mid], sub.get_submodule("stages.1.0.bn1").running_mean)
    assert torch.equal(full.get_submodule("stages.1.1.conv1").weight[:, last][keep["stages.1.1.conv1"]],
                       sub.get_submodule("stages.1.1.conv1").weight)
    # everything else is untouched
    changed = 0
    for name, t in full.state_dict().items():
        if not t.is_floating_point():
            continue
        untouched = torch.ones(t.numel(), dtype=torch.bool)
        if name in indices:
            untouched[indices[name]] = False
            changed += int((t.reshape(-1)[~untouched] != before[name].reshape(-1)[~untouched]).sum())
        assert torch.equal(t.reshape(-1)[untouched], before[name].reshape(-1)[untouched]), name
    assert changed > 1000  # training really moved the written-back values


# ------------------------------------------------------------------------------------------------ policy


def test_reinforce_step_moves_the_policy_towards_rewarded_choices():
    torch.manual_seed(0)
    policy = ThresholdPolicy(6)
    gen = torch.Generator().manual_seed(0)
    alphas = [torch.rand(16, generator=gen), torch.rand(32, generator=gen), torch.rand(64, generator=gen)]
    actions, log_prob = policy.sample(alphas, gen)
    assert actions.shape == (3,) and log_prob.requires_grad
    params = [p.detach().clone() for p in policy.parameters()]
    reinforce_step(torch.optim.SGD(policy.parameters(), lr=0.5), log_prob, advantage=1.0)
    assert any(not torch.equal(a, b) for a, b in zip(params, policy.parameters()))
    new_lp = F.log_softmax(policy(alphas), -1).gather(1, actions[:, None]).sum()
    assert new_lp.item() > log_prob.item()


def test_alpha_scaling_gives_every_group_a_gradient():
    model = _resnet()
    x, y = _data(16, 1)
    groups = coupled_convs(model, x[:1])
    alphas = {g[0]: torch.rand(model.get_submodule(g[0]).out_channels).requires_grad_(True) for g in groups}
    targets = joint._scaled_modules(model, groups, x[:1])
    assert all(isinstance(m, nn.BatchNorm2d) for mods in targets.values() for m in mods)
    running = model.get_submodule("stem.1").running_mean.clone()
    with joint._alpha_scaling(targets, alphas):
        F.cross_entropy(model(x), y).backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in alphas.values())
    assert torch.equal(model.get_submodule("stem.1").running_mean, running)  # held-out data leaves no stats
    assert torch.equal(model(x[:2]), model(x[:2]))  # hooks removed: plain forward again


# ------------------------------------------------------------------------------------------------ end to end


def test_search_and_train_end_to_end_on_resnet20():
    model = _resnet()
    dense = copy.deepcopy(model)
    train, val = _data(192, 10), _data(96, 11)
    cfg = JointConfig(iterations=2, epochs=[2, 1], lrs=[0.05, 0.02], batch_size=64, finetune_epochs=1, seed=0)
    result = search_and_train(model, train, val, train[0][:1], cfg)
    assert len(result.history) == 2 and [h["epochs"] for h in result.history] == [2, 1]
    assert set(result.ratios.values()) <= set(cfg.ratios)
    # the returned network has the sampled widths and costs less than the dense one
    for root, kept in result.keep.items():
        assert result.model.get_submodule(root).out_channels == len(kept)
        assert len(kept) < dense.get_submodule(root).out_channels
    assert costs.count(result.model, SHAPE).macs < costs.count(dense, SHAPE).macs
    with torch.no_grad():
        acc = (result.model.eval()(val[0]).argmax(1) == val[1]).float().mean().item()
    assert acc > 0.5  # chance is 0.25


def test_a_diverging_sub_network_fails_the_candidate_instead_of_scoring_nan():
    """Sub-networks get fit's divergence check: a loss that stops being a number raises, as it does for
    every other method, rather than feeding NaN rewards to the policy and finishing."""
    from dvolver.training import TrainingDiverged

    train, val = _data(128, 12), _data(64, 13)
    cfg = JointConfig(iterations=1, epochs=[1], lrs=[1e30], batch_size=64, finetune_epochs=0, seed=0)
    with pytest.raises(TrainingDiverged, match="loss became nan in epoch 1"):
        search_and_train(_resnet(), train, val, train[0][:1], cfg)


@contextmanager
def _first_conv_training_inputs() -> Iterator[list[torch.Tensor]]:
    """What every network's first conv is given in train mode with gradients on: the training batches, and
    the alpha step's held-out ones."""
    seen: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if isinstance(module, nn.Conv2d) and module.in_channels == SHAPE[0] and module.training \
                and torch.is_grad_enabled():
            seen.append(args[0].detach().cpu())

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.mark.parametrize("augment", [False, True])
def test_sub_networks_and_fine_tune_train_on_augmented_batches_when_asked(augment):
    train, val = _data(64, 12), _data(32, 13)
    # No pixel is exactly zero, so a zero in what the first conv sees is crop_flip's padding.
    assert bool((train[0] != 0).all() and (val[0] != 0).all())
    cfg = JointConfig(iterations=2, epochs=[1], lrs=[0.05], batch_size=32, finetune_epochs=1, augment=augment)
    with _first_conv_training_inputs() as seen:
        search_and_train(_resnet(), train, val, train[0][:1], cfg)
    padded = [bool((x == 0).any()) for x in seen]
    # 2 batches an epoch, 2 iterations of 1 epoch and 1 fine-tune epoch; the alpha step's batches never are.
    assert sum(padded) == (6 if augment else 0), padded
    assert len(padded) - sum(padded) >= 2


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
@pytest.mark.parametrize("channels_last", [False, True])
def test_sub_networks_train_on_the_configured_device_and_layout(device, channels_last):
    model = _resnet()
    before = copy.deepcopy(model.state_dict())
    train, val = _data(64, 14), _data(32, 15)
    cfg = JointConfig(iterations=1, epochs=[1], lrs=[0.05], batch_size=32, finetune_epochs=1, device=device,
                      channels_last=channels_last, grad_clip=1.0)
    result = search_and_train(model, train, val, train[0][:1], cfg)
    assert all(p.device.type == device for p in result.model.parameters())
    kernels = [m.weight for m in result.model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1
               and m.kernel_size != (1, 1)]  # a 1x1 kernel is contiguous in both layouts
    assert kernels and all(w.is_contiguous(memory_format=torch.channels_last) == channels_last for w in kernels)
    # the target network stays on the CPU in its own layout, and the trained filters were written back into it
    assert all(p.device.type == "cpu" and p.is_contiguous() for p in model.parameters())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_model_without_convolutions_raises_before_training():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    before = copy.deepcopy(model.state_dict())
    x, y = _data(8, 0)
    with pytest.raises(ValueError, match="Conv2d"):
        search_and_train(model, (x, y), (x, y), x[:1], JointConfig(iterations=1, epochs=[1], lrs=[0.1]))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_config_validation():
    with pytest.raises(ValueError):
        JointConfig(epochs=[2, 1], lrs=[0.1])
    with pytest.raises(ValueError):
        JointConfig(iterations=0)
    with pytest.raises(ValueError):
        JointConfig(ratios=[])
    with pytest.raises(ValueError, match="grad_clip"):
        JointConfig(grad_clip=0.0)
    assert JointConfig(device="cpu").device == torch.device("cpu")
