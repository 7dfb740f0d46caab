import pytest
import torch

from dvolver import costs
from search_spaces.backbones import BACKBONES, VGG, BasicBlock, CifarResNet, build_backbone

NAMES = ["lenet300", "conv2", "conv4", "conv6", "vgg11", "vgg16", "vgg19", "resnet20", "resnet56", "resnet18"]

# Published sizes on 3x32x32 with 10 classes. Conv2/4 and VGG-19: Frankle & Carbin 2019 table 1.
# Conv6: F&C print 1.7M, but 64-64-p-128-128-p-256-256-p + FC 256-256-10 on 32x32 is 2.26M (the
# flatten alone is 4096 x 256); 2.26M is the count later papers use. ResNets: He et al. 2016 / the
# common CIFAR ResNet-18.
# (figure, unit of its last printed digit): a count matches when it is within 1% or rounds to the figure
# (Conv4's 2,425,930 is 1.1% over "2.4M" but is what F&C rounded).
PUBLISHED = {"conv2": (4.3e6, 1e5), "conv4": (2.4e6, 1e5), "conv6": (2.26e6, 1e4), "vgg19": (20.0e6, 1e5),
             "resnet20": (0.27e6, 1e4), "resnet56": (0.85e6, 1e4), "resnet18": (11.17e6, 1e4)}
# Exact counts of this implementation (option B projection shortcuts), so a silent change shows.
EXACT = {"lenet300": 953_010, "conv2": 4_301_642, "conv4": 2_425_930, "conv6": 2_262_602, "vgg11": 9_228_362,
         "vgg16": 14_724_042, "vgg19": 20_035_018, "resnet20": 272_474, "resnet56": 855_770, "resnet18": 11_173_962}


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_names():
    assert sorted(BACKBONES) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8)])
def test_output_shape_backward_and_macs(name, shape):
    torch.manual_seed(0)
    model = build_backbone(name, shape, 10)
    x = torch.randn(2, *shape)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    c = costs.count(model, shape)
    assert c.macs > 0 and c.flops == 2 * c.macs and c.params == _params(model)


@pytest.mark.parametrize("name", NAMES)
def test_param_counts(name):
    n = _params(build_backbone(name, (3, 32, 32), 10))
    assert n == EXACT[name]
    if name in PUBLISHED:
        figure, unit = PUBLISHED[name]
        assert abs(n - figure) <= max(0.01 * figure, unit / 2)


def test_conv_nets_have_no_batchnorm_and_fc_width_follows_input():
    for name in ("conv2", "conv4", "conv6"):
        model = build_backbone(name, (3, 32, 32), 10)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert build_backbone("conv2", (3, 32, 32), 10).flat_features == 16384
    assert build_backbone("conv4", (3, 32, 32), 10).flat_features == 8192
    assert build_backbone("conv6", (3, 32, 32), 10).flat_features == 4096
    assert build_backbone("conv6", (1, 8, 8), 10).flat_features == 256  # 8 -> 4 -> 2 -> 1


@pytest.mark.parametrize("shape", [(3, 9, 13), (3, 8, 40)])
def test_other_sizes_and_class_counts(shape):
    for name in NAMES:
        model = build_backbone(name, shape, 7)
        # batch 2: BatchNorm in training mode needs more than one value per channel at 1x1
        assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_vgg_skips_pools_on_sides_already_one_pixel():
    # 8x40 through five pools: the height is 1 after three, so the last two pool the width only
    pools = [m for m in build_backbone("vgg11", (3, 8, 40), 10).features if isinstance(m, torch.nn.MaxPool2d)]
    assert [p.kernel_size for p in pools] == [(2, 2)] * 3 + [(1, 2)] * 2
    assert sum(isinstance(m, torch.nn.Identity) for m in build_backbone("vgg11", (3, 8, 8), 10).features) == 2


def test_lenet300_is_the_published_mnist_network():
    # LeCun et al. 1998 / Frankle & Carbin 2019: 266k weights on 28x28 MNIST
    assert _params(build_backbone("lenet300", (1, 28, 28), 10)) == 266_610


def test_deterministic_given_seed():
    for name in ("conv4", "vgg11", "resnet20"):
        torch.manual_seed(3)
        a = build_backbone(name, (3, 32, 32), 10).state_dict()
        torch.manual_seed(3)
        b = build_backbone(name, (3, 32, 32), 10).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_projection_shortcut_only_where_shape_changes():
    model = CifarResNet((3, 32, 32), 10, depth=20)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 9
    projected = [b for b in blocks if not isinstance(b.shortcut, torch.nn.Identity)]
    assert len(projected) == 2


def test_unknown_name_and_bad_depths():
    with pytest.raises(ValueError, match="resnet20"):
        build_backbone("resnet50", (3, 32, 32), 10)
    with pytest.raises(ValueError):
        CifarResNet((3, 32, 32), 10, depth=21)
    with pytest.raises(ValueError):
        VGG((3, 32, 32), 10, depth=13)
