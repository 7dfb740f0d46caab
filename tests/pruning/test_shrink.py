import pytest
import torch
from torch import nn

from dvolver import costs
from dvolver.pruning.shrink import channel_mask_model, coupled_convs, resolve_keep, shrink
from search_spaces.backbones import build_backbone


def _model(name: str, shape: tuple[int, int, int]) -> nn.Module:
    """A backbone whose BatchNorms hold non-trivial scales, shifts and running statistics, so a masked
    channel only comes out zero if the BatchNorm after the conv is masked too."""
    torch.manual_seed(0)
    model = build_backbone(name, shape, 10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _random_keep(model: nn.Module, x: torch.Tensor, fraction: float = 0.6) -> dict[str, torch.Tensor]:
    """A seeded random subset of each coupled group's filters, given on the group's first conv."""
    gen = torch.Generator().manual_seed(1)
    keep = {}
    for group in coupled_convs(model, x):
        n = model.get_submodule(group[0]).out_channels
        keep[group[0]] = torch.randperm(n, generator=gen)[: max(1, int(fraction * n))].sort().values
    return keep


def _first_fraction_keep(model: nn.Module, fraction: float = 0.6) -> dict[str, list[int]]:
    return {name: list(range(max(1, int(fraction * m.out_channels))))
            for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


CASES = [("conv4", (1, 8, 8), "first"), ("vgg11", (3, 16, 16), "random"), ("vgg11", (1, 8, 8), "first"),
         ("resnet20", (3, 16, 16), "random"), ("resnet20", (1, 8, 8), "first")]


@pytest.mark.parametrize("name,shape,how", CASES)
def test_shrunk_matches_masked_and_costs_less(name, shape, how):
    model = _model(name, shape)
    x = torch.randn(4, *shape)
    keep = _first_fraction_keep(model) if how == "first" else _random_keep(model, x[:1])
    shrunk = shrink(model, keep, x[:1])
    masked = channel_mask_model(model, keep, x[:1])
    with torch.no_grad():
        out, out_masked, out_dense = shrunk(x), masked(x), model(x)
    assert out.shape == (4, 10)
    assert (out - out_masked).abs().max().item() < 1e-4
    assert (out_dense - out_masked).abs().max().item() > 1e-2  # the keep sets really changed the network

    # every conv is as wide as asked, following the coupled layer it was not named for
    resolved = resolve_keep(model, keep, x[:1])
    for conv, kept in resolved.items():
        assert shrunk.get_submodule(conv).out_channels == len(kept)
    assert set(keep) <= set(resolved)

    dense_cost, shrunk_cost = costs.count(model, shape), costs.count(shrunk, shape)
    assert shrunk_cost.macs < dense_cost.macs
    assert shrunk_cost.params < dense_cost.params == _params(model)
    assert shrunk_cost.sparse_macs is None  # dense: nothing left as zeros for the sparse count
    assert costs.count(masked, shape).macs == dense_cost.macs  # masking alone saves nothing


def test_vgg_weights_are_the_kept_slices_and_train_mode_agrees():
    model = _model("vgg11", (3, 16, 16))
    x = torch.randn(8, 3, 16, 16)
    keep = _random_keep(model, x[:1], fraction=0.5)
    shrunk = shrink(model, keep, x[:1])
    first, second = keep["features.0"], keep["features.4"]
    assert torch.equal(shrunk.features[4].weight, model.features[4].weight[second][:, first])
    assert torch.equal(shrunk.features[5].running_mean, model.features[5].running_mean[second])
    assert torch.equal(shrunk.classifier[1].weight, model.classifier[1].weight[:, keep["features.25"]])
    # in train mode BatchNorm normalises by batch statistics, per channel: removal and masking still agree
    masked = channel_mask_model(model, keep, x[:1])
    shrunk.train()
    masked.train()
    assert (shrunk(x) - masked(x)).abs().max().item() < 1e-4


def test_conv2_macs_and_params_by_hand():
    # Conv2 on 1x8x8: conv 1->64 and 64->64 (3x3, pad 1) at 8x8, 2x2 pool to 4x4, FC 64*16->256->256->10.
    model = build_backbone("conv2", (1, 8, 8), 10)
    assert costs.count(model, (1, 8, 8)).macs == 64 * (1 * 9 * 64 + 64 * 9 * 64) + 1024 * 256 + 256 * 256 + 256 * 10
    shrunk = shrink(model, {"features.0": list(range(32)), "features.2": list(range(16))}, torch.zeros(1, 1, 8, 8))
    cost = costs.count(shrunk, (1, 8, 8))
    # conv 1->32 and 32->16 at 8x8, then 16 channels x 4x4 = 256 features into the first FC layer
    assert cost.macs == 64 * (1 * 9 * 32 + 32 * 9 * 16) + 16 * 16 * 256 + 256 * 256 + 256 * 10 == 446_976
    assert cost.params == (9 * 32 + 32) + (32 * 9 * 16 + 16) + (256 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10)
    assert shrunk.classifier[1].in_features == 256


def test_resnet20_coupled_groups():
    model = _model("resnet20", (3, 16, 16))
    groups = coupled_convs(model, torch.zeros(1, 3, 16, 16))
    residual = [g for g in groups if len(g) > 1]
    assert residual == [
        ("stem.0", "stages.0.0.conv2", "stages.0.1.conv2", "stages.0.2.conv2"),
        ("stages.1.0.conv2", "stages.1.0.shortcut.0", "stages.1.1.conv2", "stages.1.2.conv2"),
        ("stages.2.0.conv2", "stages.2.0.shortcut.0", "stages.2.1.conv2", "stages.2.2.conv2"),
    ]
    singles = sorted(g[0] for g in groups if len(g) == 1)
    assert singles == sorted(f"stages.{s}.{b}.conv1" for s in range(3) for b in range(3))


def test_resnet20_coupling_follows_one_member_accepts_equal_sets_and_rejects_different_ones():
    model = _model("resnet20", (3, 16, 16))
    x = torch.randn(2, 3, 16, 16)
    kept = [0, 3, 5, 8, 9, 10, 20, 31]
    # naming one member prunes the whole group: the projection shortcut, its BN and every block's conv2
    shrunk = shrink(model, {"stages.1.1.conv2": kept}, x[:1])
    for conv in ("stages.1.0.conv2", "stages.1.0.shortcut.0", "stages.1.1.conv2", "stages.1.2.conv2"):
        assert shrunk.get_submodule(conv).out_channels == len(kept)
    assert shrunk.stages[1][0].shortcut[1].num_features == len(kept)
    assert shrunk.stages[2][0].conv1.in_channels == len(kept) == shrunk.stages[2][0].shortcut[0].in_channels
    assert shrunk.stages[1][0].conv1.out_channels == 32  # not coupled: untouched
    masked = channel_mask_model(model, {"stages.1.1.conv2": kept}, x[:1])
    with torch.no_grad():
        assert (shrunk(x) - masked(x)).abs().max().item() < 1e-4

    same = shrink(model, {"stages.1.0.shortcut.0": kept, "stages.1.2.conv2": torch.tensor(kept)}, x[:1])
    assert same.stages[1][2].conv2.out_channels == len(kept)
    with pytest.raises(ValueError, match="residual addition"):
        shrink(model, {"stages.1.0.shortcut.0": kept, "stages.1.2.conv2": kept[1:]}, x[:1])


def test_boolean_mask_equals_index_list_and_model_is_left_alone():
    model = _model("conv4", (1, 8, 8))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 1, 8, 8)
    mask = torch.zeros(64, dtype=torch.bool)
    mask[[1, 4, 9]] = True
    a = shrink(model, {"features.2": mask}, x[:1])
    b = shrink(model, {"features.2": [1, 4, 9]}, x[:1])
    assert a.features[2].out_channels == 3 and a.training
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.features[2].out_channels == 64 and model.training


def test_frozen_weights_stay_frozen():
    model = _model("vgg11", (1, 8, 8))
    for p in model.parameters():
        p.requires_grad_(False)
    shrunk = shrink(model, {"features.0": [0, 1, 2]}, torch.zeros(1, 1, 8, 8))
    assert not any(p.requires_grad for p in shrunk.parameters())


def test_no_convolution_is_a_clear_error():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    with pytest.raises(ValueError, match="has no Conv2d layer to prune"):
        shrink(mlp, {}, torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="has no Conv2d layer to prune"):
        channel_mask_model(mlp, {}, torch.zeros(1, 1, 8, 8))


@pytest.mark.parametrize("keep,message", [
    ({"features.0": []}, "removes all 64"),
    ({"features.0": torch.zeros(64, dtype=torch.bool)}, "removes all 64"),
    ({"features.0": [0, 64]}, r"must lie in \[0, 64\)"),
    ({"features.0": [3, 3]}, "repeat"),
    ({"features.0": torch.ones(10, dtype=torch.bool)}, "has 10 entries"),
    ({"features.1": [0]}, "not a prunable Conv2d"),  # a ReLU
    ({"features.99": [0]}, "not a prunable Conv2d"),  # no such module
])
def test_bad_keep_sets_are_rejected(keep, message):
    model = build_backbone("conv4", (1, 8, 8), 10)
    with pytest.raises(ValueError, match=message):
        shrink(model, keep, torch.zeros(1, 1, 8, 8))


def test_empty_keep_gives_an_equal_copy():
    model = _model("resnet20", (3, 8, 8))
    x = torch.randn(2, 3, 8, 8)
    copy = shrink(model, {}, x[:1])
    assert copy is not model and costs.count(copy, (3, 8, 8)).macs == costs.count(model, (3, 8, 8)).macs
    with torch.no_grad():
        assert torch.equal(copy(x), model(x))
