"""Small building blocks shared by the cell search spaces (DARTS / NASNet / NAS-Bench-201 style)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class SepConv(nn.Sequential):
    """NASNet's separable convolution: (ReLU, depthwise k x k, pointwise 1x1, BN) applied twice."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        pad = kernel // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=pad, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride=1, padding=pad, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )


class FactorizedReduce(nn.Module):
    """Halves the spatial size without losing half the pixels: two offset 1x1 stride-2 convs.

    The offset path is padded so odd sizes give ceil(H/2), the size every stride-2 op here yields.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_a = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_b = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_a(x), self.conv_b(shifted)], dim=1))


class Zero(nn.Module):
    """A cell whose output node is unreachable: emits zeros of the right shape."""

    def __init__(self, c_out: int) -> None:
        super().__init__()
        self.c_out = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] * 0.0).expand(-1, self.c_out, -1, -1)


def avg_pool(stride: int) -> nn.Module:
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


def max_pool(stride: int) -> nn.Module:
    return nn.MaxPool2d(3, stride=stride, padding=1)


def stride2_stem_count(input_size: int, target: int = 32) -> int:
    """How many stride-2 stem convs bring an image down to about `target` pixels a side.

    32x32 and smaller inputs get none; 224x224 gets three (to 28x28), as NASNet-mobile's stem does.
    """
    count = 0
    while input_size > target * 1.5:
        input_size = (input_size + 1) // 2
        count += 1
    return count


def half_size(size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) after any stride-2 op here (3x3 convs and pools with padding 1, 1x1 stride-2 convs,
    FactorizedReduce, 2x2 ceil-mode pools): ceil(n / 2) on each side."""
    return (size[0] + 1) // 2, (size[1] + 1) // 2


def stem_output_size(height: int, width: int) -> tuple[int, int]:
    """(H, W) of `make_stem(c_in, c_out, max(height, width))`'s output."""
    size = (height, width)
    for _ in range(stride2_stem_count(max(height, width))):
        size = half_size(size)
    return size


def make_stem(c_in: int, c_out: int, input_size: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = c_in
    for _ in range(stride2_stem_count(input_size)):
        layers += [
            nn.Conv2d(channels, c_out, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=False),
        ]
        channels = c_out
    layers += [nn.Conv2d(channels, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers)
