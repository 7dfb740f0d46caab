"""Fixed networks that the pruning methods prune: LeNet-300-100, Conv2/4/6, CIFAR VGG-11/16/19, CIFAR ResNet-20/56/18.

Every builder takes ``(input_shape, num_classes)`` with ``input_shape = (C, H, W)``, so the same
network family runs on the bundled 8x8 digits and on 32x32 CIFAR-10. The layers are plain
``nn.Conv2d`` / ``nn.Linear`` / ``nn.BatchNorm2d`` modules held in ``nn.Sequential`` containers:
pruning code finds them with ``model.modules()`` and swaps or masks them without knowing which
backbone it holds.

Initialisation draws only from torch's global generator, so ``torch.manual_seed(s)`` before building
gives the same weights every time.

Reference parameter counts (3x32x32 input, 10 classes, biases and BatchNorm affine included):

======== ============ =====================================================================
name     params       note
======== ============ =====================================================================
lenet300 266,610      on 28x28x1 (MNIST): LeCun et al. 1998; 3x32x32 gives 953,010
conv2    4,301,642    Frankle & Carbin 2019 table 1: 4.3M
conv4    2,425,930    F&C: 2.4M
conv6    2,262,602    F&C's table prints 1.7M, which these layers cannot give; they give 2.26M
vgg11    9,228,362
vgg16    14,724,042
vgg19    20,035,018   F&C: 20.0M
resnet20 272,474      0.27M; option B shortcuts add 2,752 over option A's 269,722
resnet56 855,770      0.85M; option B adds 2,752 over option A's 853,018
resnet18 11,173,962   the common CIFAR ResNet-18 (kuangliu/pytorch-cifar)
======== ============ =====================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TypeVar

from torch import Tensor, nn

__all__ = ["BACKBONES", "VGG_CONFIGS", "BasicBlock", "CifarResNet", "Conv2", "Conv4", "Conv6", "ConvNet", "LeNet300",
           "ResNet18", "VGG", "build_backbone"]

InputShape = tuple[int, int, int]
_Layers = TypeVar("_Layers")

# "M" is a 2x2 max pool; numbers are 3x3 conv widths. The common CIFAR VGG configurations
# (Simonyan & Zisserman's A, D and E columns without the 224x224 classifier).
VGG_CONFIGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

# Conv2/4/6: (width of the two convs, ...) per block; each block is conv-ReLU-conv-ReLU-pool.
_CONV_WIDTHS: dict[int, tuple[int, ...]] = {2: (64,), 4: (64, 128), 6: (64, 128, 256)}


def _check_shape(input_shape: InputShape, num_classes: int) -> tuple[int, int, int]:
    if len(input_shape) != 3 or any(int(d) < 1 for d in input_shape):
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    c, h, w = (int(d) for d in input_shape)
    return c, h, w


def _config(configs: dict[int, _Layers], depth: int, family: str) -> _Layers:
    """The layers of `family` at `depth`; a ValueError that lists the depths there are, for any other."""
    if depth not in configs:
        raise ValueError(f"{family} depth must be one of {sorted(configs)}, got {depth}")
    return configs[depth]


def _pool(h: int, w: int) -> tuple[nn.Module, int, int]:
    """A 2x2 max pool, or what is left of it on a side already down to one pixel.

    With H, W >= 8 every pool of Conv6 (3 pools: 8 -> 4 -> 2 -> 1) is a real 2x2 pool, so the
    networks are exactly the published ones on CIFAR and on 8x8 digits. VGG has five pools, and a
    smaller input runs out of pixels before it runs out of pools: a 2x2 pool on a 1-pixel side would
    give an empty tensor. There the pool is skipped on that side (kernel 1) or dropped entirely
    (Identity) rather than padded or replaced by an adaptive pool: skipping keeps every conv and
    every weight of the published network (so parameter budgets and masks mean the same thing at
    every input size) and only stops downsampling what cannot be downsampled further.
    """
    kh, kw = (2 if h >= 2 else 1), (2 if w >= 2 else 1)
    if kh == kw == 1:
        return nn.Identity(), h, w
    return nn.MaxPool2d((kh, kw), stride=(kh, kw)), h // kh, w // kw


class ConvNet(nn.Module):
    """Conv2 / Conv4 / Conv6 of Frankle & Carbin (2019), as used by edge-popup, Supermask and ASLP.

    3x3 convs (padding 1, with bias) 64-64-pool[-128-128-pool[-256-256-pool]], ReLU after every conv,
    then FC 256-256-num_classes with ReLU between. No BatchNorm: these networks are pruned at
    random initialisation (ASLP, edge-popup), where BatchNorm statistics would hide what a mask does.
    The first FC layer's width derives from the input shape (16384 / 8192 / 4096 on 32x32x3).
    """

    def __init__(self, input_shape: InputShape, num_classes: int, depth: int) -> None:
        super().__init__()
        widths = _config(_CONV_WIDTHS, depth, "ConvNet")
        c, h, w = _check_shape(input_shape, num_classes)
        layers: list[nn.Module] = []
        # ReLU is not in place: masking/reparametrisation wrappers and hooks may keep a conv's
        # output for their backward pass, and an in-place ReLU would overwrite it.
        for width in widths:
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
            pool, h, w = _pool(h, w)
            layers.append(pool)
            c = width
        self.features = nn.Sequential(*layers)
        self.flat_features = c * h * w
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.flat_features, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, num_classes),
        )
        # Kaiming normal (fan_in, ReLU) weights as in the ASLP and edge-popup code: the signed-
        # constant option of those methods derives its per-layer constant from this std. Biases
        # keep PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), also as in ASLP.
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class Conv2(ConvNet):
    def __init__(self, input_shape: InputShape, num_classes: int) -> None:
        super().__init__(input_shape, num_classes, depth=2)


class Conv4(ConvNet):
    def __init__(self, input_shape: InputShape, num_classes: int) -> None:
        super().__init__(input_shape, num_classes, depth=4)


class Conv6(ConvNet):
    def __init__(self, input_shape: InputShape, num_classes: int) -> None:
        super().__init__(input_shape, num_classes, depth=6)


def _init_conv_bn(module: nn.Module) -> None:
    """He et al.'s init for ReLU networks with BatchNorm: kaiming normal (fan_out) convs, BN at
    identity. Linear layers keep PyTorch's default init."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _PooledHead(nn.Module):
    """A network whose conv layers end in global average pooling and a single Linear (VGG, the ResNets)."""

    def _add_head(self, in_features: int, num_classes: int) -> None:
        """After the conv layers: the pool and the classifier, then He et al.'s init of every conv and BN."""
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))
        _init_conv_bn(self)


class VGG(_PooledHead):
    """The common CIFAR VGG: 3x3 conv (no bias: BatchNorm's shift replaces it) + BN + ReLU, 2x2 max
    pools, then global average pooling and a single Linear(512, num_classes).

    The single-Linear classifier is the form CIFAR pruning papers use (network slimming, the
    budget-aware reparametrisation paper's VGG19): on 32x32 the five pools leave 1x1x512, so the
    global pool is an identity there, and on any other input size it keeps the classifier at 512
    inputs instead of letting it grow with the image.
    """

    def __init__(self, input_shape: InputShape, num_classes: int, depth: int = 16) -> None:
        super().__init__()
        config = _config(VGG_CONFIGS, depth, "VGG")
        c, h, w = _check_shape(input_shape, num_classes)
        layers: list[nn.Module] = []
        for item in config:
            if item == "M":
                pool, h, w = _pool(h, w)
                layers.append(pool)
            else:
                width = int(item)
                layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                c = width
        self.features = nn.Sequential(*layers)
        self._add_head(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)))


class BasicBlock(nn.Module):
    """He et al.'s basic block: conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU.

    When the block changes the shape (stride 2 or more channels) the shortcut is option B, a 1x1
    conv (stride s, no bias) + BN projection, not option A's zero-padded identity. Option B is made
    of ordinary modules, so structured pruning can narrow it like any conv, fvcore counts it, and
    export needs no slicing/padding op; it costs 2,752 extra params on ResNet-20/56.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class _ResNet(_PooledHead):
    """Stem conv3x3-BN-ReLU, stages of basic blocks, global average pool, Linear.

    Downsampling is by stride-2 3x3 convs (padding 1), which map a side of n pixels to
    ceil(n / 2) >= 1: small inputs (8x8 digits) simply reach 1x1 earlier, nothing needs skipping.
    """

    def __init__(self, input_shape: InputShape, num_classes: int, widths: tuple[int, ...],
                 blocks: tuple[int, ...]) -> None:
        super().__init__()
        c, _, _ = _check_shape(input_shape, num_classes)
        self.stem = nn.Sequential(nn.Conv2d(c, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU())
        stages = []
        in_channels = widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            stages.append(_stage(in_channels, width, n, stride=1 if i == 0 else 2))
            in_channels = width
        self.stages = nn.Sequential(*stages)
        self._add_head(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.stages(self.stem(x))))


class CifarResNet(_ResNet):
    """He et al. (2016) section 4.2: depth 6n+2, three stages of n basic blocks at 16/32/64 channels."""

    def __init__(self, input_shape: InputShape, num_classes: int, depth: int = 20) -> None:
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        super().__init__(input_shape, num_classes, widths=(16, 32, 64), blocks=(n, n, n))


class ResNet18(_ResNet):
    """ResNet-18 in its CIFAR form: a 3x3 stride-1 stem conv of 64 and no max pool (the ImageNet
    7x7/2 stem and pool would throw away 4x of a 32x32 image), then stages 64/128/256/512 of two
    basic blocks each."""

    def __init__(self, input_shape: InputShape, num_classes: int) -> None:
        super().__init__(input_shape, num_classes, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2))


class LeNet300(nn.Module):
    """LeNet-300-100 (LeCun et al. 1998; Frankle & Carbin's MNIST network): fully connected 300-100-classes
    on the flattened image, ReLU between. The backbone without convolutions: filter pruning cannot act on it."""

    def __init__(self, input_shape: InputShape, num_classes: int) -> None:
        super().__init__()
        c, h, w = _check_shape(input_shape, num_classes)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 300), nn.ReLU(), nn.Linear(300, 100),
                                        nn.ReLU(), nn.Linear(100, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(x)


BACKBONES: dict[str, Callable[[InputShape, int], nn.Module]] = {
    "lenet300": LeNet300,
    "conv2": Conv2,
    "conv4": Conv4,
    "conv6": Conv6,
    "vgg11": partial(VGG, depth=11),
    "vgg16": partial(VGG, depth=16),
    "vgg19": partial(VGG, depth=19),
    "resnet20": partial(CifarResNet, depth=20),
    "resnet56": partial(CifarResNet, depth=56),
    "resnet18": ResNet18,
}


def build_backbone(name: str, input_shape: InputShape, num_classes: int) -> nn.Module:
    """The named backbone for ``input_shape = (C, H, W)`` and ``num_classes`` outputs."""
    try:
        builder = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}") from None
    return builder(tuple(input_shape), num_classes)
