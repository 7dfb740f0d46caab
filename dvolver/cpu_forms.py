"""Exact, cheaper CPU forms of the small convolutions that NAS proxies train.

At proxy sizes (8 to 32 channels over 2x2 to 8x8 pixels) a oneDNN convolution costs mostly its fixed
per-call overhead, not arithmetic (bench/train_step.py). Two forms compute the same function for less:

- A pointwise (1x1) convolution over a channels-last input is one matrix product over the pixels: the
  input, seen as (N, H, W, C), is already a contiguous (N*H*W, C) matrix. A stride is a slice first.
- A k x k depthwise (or any "same"-padded) convolution over an H x W input only ever reaches taps at
  most H-1 rows and W-1 columns from the centre: the rest multiply padding zeros, for every output
  pixel and at any stride. The kernel cropped to the reachable taps gives the same output and the same
  gradient for every tap it keeps; the cropped-off taps get the zero gradient they would have got.

A layer kernel_guards runs in NCHW gets an NCHW input and so keeps its convolution. Both forms are
swapped in by class, so parameters, buffers and state_dict keys stay those of nn.Conv2d, and
a trained model loads into the plain network unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Above this many input values oneDNN's convolution beats the matrix product (bench/train_step.py: the
# product wins at 16k-65k values, loses at 1M and more), so larger inputs keep the convolution.
MATMUL_MAX_INPUT = 1 << 18


class PointwiseAsMatmul(nn.Conv2d):
    """A 1x1, ungrouped, unpadded convolution as a matrix product over the channels-last pixels, for
    inputs small enough that the convolution's fixed cost dominates."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() > MATMUL_MAX_INPUT or not x.is_contiguous(memory_format=torch.channels_last):
            return self._conv_forward(x, self.weight, self.bias)
        sh, sw = self.stride
        if (sh, sw) != (1, 1):
            x = x[:, :, ::sh, ::sw]
        weight = self.weight.view(self.out_channels, self.in_channels)
        # (N, C, H, W) with channels-last strides permutes to a contiguous (N, H, W, C): no copy.
        return F.linear(x.permute(0, 2, 3, 1), weight, self.bias).permute(0, 3, 1, 2)


class CroppedSamePadding(nn.Conv2d):
    """An odd-kernel, "same"-padded convolution that drops the taps its input is too small to reach."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        half_h = min(kh // 2, (x.shape[2] - 1) // dh)
        half_w = min(kw // 2, (x.shape[3] - 1) // dw)
        if (2 * half_h + 1, 2 * half_w + 1) == (kh, kw):
            return self._conv_forward(x, self.weight, self.bias)
        top, left = kh // 2 - half_h, kw // 2 - half_w
        weight = self.weight[:, :, top : top + 2 * half_h + 1, left : left + 2 * half_w + 1]
        return F.conv2d(x, weight, self.bias, self.stride, (half_h * dh, half_w * dw), self.dilation, self.groups)


def _pointwise(conv: nn.Conv2d) -> bool:
    return conv.kernel_size == (1, 1) and conv.groups == 1 and conv.padding == (0, 0)


def _croppable(conv: nn.Conv2d) -> bool:
    (kh, kw), (dh, dw) = conv.kernel_size, conv.dilation
    return (kh % 2 == 1 and kw % 2 == 1 and (kh, kw) != (1, 1) and conv.padding_mode == "zeros"
            and conv.padding == (dh * (kh // 2), dw * (kw // 2)))


def use_cpu_forms(model: nn.Module, channels_last: bool) -> int:
    """Swaps every plain nn.Conv2d of ``model`` that has a cheaper exact form for it; returns how many.

    The matrix-product form needs channels-last inputs to be free of copies, so it is used only then.
    Subclasses of nn.Conv2d (reparametrised or otherwise specialised layers) are left alone."""
    swapped = 0
    for module in model.modules():
        if type(module) is not nn.Conv2d or module.padding_mode != "zeros":
            continue
        if channels_last and _pointwise(module):
            module.__class__ = PointwiseAsMatmul
        elif _croppable(module):
            module.__class__ = CroppedSamePadding
        else:
            continue
        swapped += 1
    return swapped


def restore_plain(model: nn.Module) -> list[tuple[nn.Module, type[nn.Conv2d]]]:
    """Turns the CPU forms of ``model`` back into nn.Conv2d; returns each module turned and its form,
    for a caller that swaps them back. What is counted, timed for latency or exported afterwards is
    then the network users deploy: fvcore would count a cropped kernel's MACs, not the layer's."""
    restored = []
    for module in model.modules():
        if type(module) in (PointwiseAsMatmul, CroppedSamePadding):
            restored.append((module, type(module)))
            module.__class__ = nn.Conv2d
    return restored
