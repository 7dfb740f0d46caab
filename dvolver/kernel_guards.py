"""Layouts that known CPU kernel bugs make unsafe, and how training steers around them.

oneDNN's 1x1 convolution backward-weights kernels (jit_avx2_1x1 for fewer than 8 input channels,
jit_avx512 1x1 for fewer than 16) write past their scratch buffer when the convolution is strided
and its input is channels-last (NHWC): uxlfoundation/oneDNN#6035. With torch 2.13.0+cpu on a 2-core
AMD EPYC this corrupted the heap within a few dozen steps ("double free or corruption", bus errors,
segfaults); on other CPUs it may write out of bounds silently. NASNet's FactorizedReduce runs exactly
such convolutions when `filters` is small. The same convolutions in NCHW take another code path and
are fine, so each affected layer is run in NCHW inside an otherwise channels-last network: its
weights stay NCHW, its input is made NCHW and its output is handed on channels-last. Both layouts
compute the same function; only the kernel differs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# The widest channel block of the affected kernels (AVX-512: 16; AVX2: 8).
UNSAFE_BELOW_CHANNELS = 16


def _conv_of(module: nn.Module) -> nn.Conv2d | None:
    """The convolution a module runs: itself, or the layer a mask wrapper runs with its own weight."""
    if isinstance(module, nn.Conv2d):
        return module
    inner = getattr(module, "layer", None)  # dvolver.pruning.masked.MaskedConv2d calls layer._conv_forward
    return inner if isinstance(inner, nn.Conv2d) and hasattr(module, "scores") else None


def unsafe_in_channels_last(module: nn.Module) -> bool:
    conv = _conv_of(module)
    if conv is None:
        return False
    return (tuple(conv.kernel_size) == (1, 1) and tuple(conv.stride) != (1, 1)
            and conv.in_channels // conv.groups < UNSAFE_BELOW_CHANNELS)


def _nchw(t: torch.Tensor) -> torch.Tensor:
    """``t`` with NCHW strides. ``contiguous()`` is not enough: a tensor with 1x1 spatial dims counts as
    contiguous in both layouts and keeps its channels-last strides, which the convolution reads."""
    expected, step = [], 1
    for size in reversed(t.shape):
        expected.append(step)
        step *= size
    if t.stride() == tuple(reversed(expected)):
        return t
    return t.clone(memory_format=torch.contiguous_format)


def _to_nchw(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (_nchw(args[0]), *args[1:])


class _ChannelsLastOut(torch.autograd.Function):
    """Channels-last forward, NCHW gradient backward: a convolution picks its backward kernel from the
    layout of the gradient it receives as well as from its input's."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return _nchw(grad)


def _to_channels_last(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    return _ChannelsLastOut.apply(output)


def run_unsafe_convs_in_nchw(model: nn.Module) -> int:
    """Makes every affected convolution of a channels-last ``model`` run in NCHW; returns how many.

    Idempotent: a layer already guarded is left as it is."""
    guarded = 0
    for module in model.modules():
        if not unsafe_in_channels_last(module):
            continue
        # Weights, and the masks some methods multiply them by, must be NCHW too: a convolution runs
        # channels-last when either its input or its weight is.
        for t in (*module.parameters(), *module.buffers()):
            if t.dim() == 4:
                t.data = _nchw(t.data)
        if not getattr(module, "_dvolver_nchw", False):
            module.register_forward_pre_hook(_to_nchw)
            module.register_forward_hook(_to_channels_last)
            module._dvolver_nchw = True
        guarded += 1
    return guarded
