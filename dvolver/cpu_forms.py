"""Exact, cheaper CPU forms of the small convolutions that NAS proxies train.

At proxy sizes (8 to 32 channels over 2x2 to 8x8 pixels) a oneDNN convolution costs mostly its fixed
per-call overhead, not arithmetic (bench/train_step.py). These forms compute the same function for less:

- A pointwise (1x1) convolution over a channels-last input is one matrix product over the pixels: the
  input, seen as (N, H, W, C), is already a contiguous (N*H*W, C) matrix. A stride is a slice first.
- A k x k depthwise (or any "same"-padded) convolution over an H x W input only ever reaches taps at
  most H-1 rows and W-1 columns from the centre: the rest multiply padding zeros, for every output
  pixel and at any stride. The kernel cropped to the reachable taps gives the same output and the same
  gradient for every tap it keeps; the cropped-off taps get the zero gradient they would have got.
- A depthwise convolution is, per channel, a linear map from the Q = H*W input pixels to the P output
  pixels: a (P, Q) matrix each of whose entries is one kernel tap or zero. It is built from the kernel
  by a fixed 0/1 matrix (a matrix product, so its gradient is one too) and applied to the pixels by a
  broadcast product or a matrix product batched over the channels. Where the input is small and the
  kernel large this is fewer multiplies than the convolution's, in a few calls without its set-up.
- A kernel larger than its input sends oneDNN's AVX2 weight gradient to a generic im2col + GEMM path,
  10-50x slower than its depthwise kernel (`ONEDNN_VERBOSE=1`: `x64:gemm:jit` against `jit_dw`, for
  every input smaller than the kernel's extent). The weight gradient is the same when the input is
  first laid on a zero canvas as large as the kernel, with the output gradient zero at the outputs the
  canvas adds: those zeros stand where padding zeros stood, and the added outputs contribute nothing.
  So under oneDNN's AVX2 code that gradient is taken on the canvas, the input gradient as before. With
  AVX-512 oneDNN runs a jit kernel there, which the canvas would only slow down.

A layer kernel_guards runs in NCHW gets an NCHW input and so keeps its convolution. The forms are
swapped in by class, so parameters, buffers and state_dict keys stay those of nn.Conv2d, and
a trained model loads into the plain network unchanged.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

# Above this many output pixels (rows of the product: batch x height x width) oneDNN's convolution beats
# the matrix product. bench/train_step.py on an AMD EPYC, AVX-512 and AVX2: the product wins at batch 128
# over 4x4 and 2x2 pixels (2048 and 512 rows), whatever the channels, and loses over 8x8 (8192 rows).
MATMUL_MAX_ROWS = 4096

# bench/train_step.py, on one AMD EPYC under both its AVX-512 and its AVX2 dispatch. The depthwise
# matrix form wins where each channel's matrix is small: as a broadcast product up to 64 entries (a 2x2
# input, a 4x4 one at stride 2) when the input has no more pixels than the kernel has taps; as a batched
# matrix product up to 1024 entries (a 4x4 input at stride 1, an 8x8 one at stride 2) from 25 taps up.
# It loses to the convolution on an 8x8 input at stride 1, and on a 3x3 kernel over 4x4 or more.
BROADCAST_MAX_ENTRIES = 64
MATRIX_MAX_ENTRIES = 1024
MATRIX_MIN_TAPS = 25

Layout = tuple[tuple[int, int], tuple[int, int], tuple[int, int], int]  # stride, padding, dilation, groups


def _onednn_avx512() -> bool:
    """Whether oneDNN runs its AVX-512 kernels: the CPU has them (ATen reads the same flags) and
    ONEDNN_MAX_CPU_ISA (or its old name DNNL_MAX_CPU_ISA) does not hold them back."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    return torch.backends.cpu.get_cpu_capability() == "AVX512" and (
        cap == "ALL" or any(isa in cap for isa in ("AVX512", "AVX10", "AMX")))


# Read once: oneDNN reads its ISA cap once too, when it first dispatches.
ONEDNN_AVX512 = _onednn_avx512()


class PointwiseAsMatmul(nn.Conv2d):
    """A 1x1, ungrouped, unpadded convolution as a matrix product over the channels-last pixels, for
    inputs small enough that the convolution's fixed cost dominates."""

    def takes_product(self, x: torch.Tensor) -> bool:
        (sh, sw), (n, _, h, w) = self.stride, x.shape
        rows = n * -(-h // sh) * -(-w // sw)
        return rows <= MATMUL_MAX_ROWS and x.is_contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.takes_product(x):
            return self._conv_forward(x, self.weight, self.bias)
        sh, sw = self.stride
        if (sh, sw) != (1, 1):
            x = x[:, :, ::sh, ::sw]
        weight = self.weight.view(self.out_channels, self.in_channels)
        # (N, C, H, W) with channels-last strides permutes to a contiguous (N, H, W, C): no copy.
        return F.linear(x.permute(0, 2, 3, 1), weight, self.bias).permute(0, 3, 1, 2)


class CroppedSamePadding(nn.Conv2d):
    """An odd-kernel, "same"-padded convolution that drops the taps its input is too small to reach;
    depthwise with a large kernel over a small input, it runs as a matrix product; otherwise, under
    oneDNN's AVX2 code, it takes its weight gradient on a canvas where the input is still smaller
    than the kernel."""

    def path(self, x: torch.Tensor) -> tuple[str, torch.Tensor, Layout]:
        """How ``x`` is convolved ("broadcast" or "batched" matrices, "canvas" or "conv"), with the
        cropped kernel and its layout."""
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        half_h = min(kh // 2, (x.shape[2] - 1) // dh)
        half_w = min(kw // 2, (x.shape[3] - 1) // dw)
        top, left = kh // 2 - half_h, kw // 2 - half_w
        weight = self.weight
        if top or left:
            weight = weight[:, :, top : top + 2 * half_h + 1, left : left + 2 * half_w + 1]
        layout = (tuple(self.stride), (half_h * dh, half_w * dw), tuple(self.dilation), self.groups)
        matrix = _matrix_form(x, weight, layout) if self.bias is None else None
        if matrix:
            return matrix, weight, layout
        training = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        if training and not ONEDNN_AVX512 and _smaller_than_kernel(x, weight, layout):
            return "canvas", weight, layout
        return "conv", weight, layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        how, weight, layout = self.path(x)
        if how == "broadcast":
            return _depthwise_broadcast(x, weight, layout)
        if how == "batched":
            return _depthwise_batched(x, weight, layout)
        if how == "canvas":
            return _WeightGradOnCanvas.apply(x, weight, self.bias, layout)
        return F.conv2d(x, weight, self.bias, *layout)


def _extent(weight: torch.Tensor, dilation: tuple[int, int]) -> tuple[int, int]:
    return dilation[0] * (weight.shape[2] - 1) + 1, dilation[1] * (weight.shape[3] - 1) + 1


def _smaller_than_kernel(x: torch.Tensor, weight: torch.Tensor, layout: Layout) -> bool:
    eh, ew = _extent(weight, layout[2])
    return x.shape[2] < eh or x.shape[3] < ew


class _WeightGradOnCanvas(torch.autograd.Function):
    """conv2d whose weight gradient is taken with the input on a zero canvas as large as the kernel."""

    @staticmethod
    def forward(ctx, x, weight, bias, layout: Layout):
        ctx.save_for_backward(x, weight)
        ctx.layout = layout
        return F.conv2d(x, weight, bias, *layout)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.layout
        want_x, want_w, want_b, _ = ctx.needs_input_grad
        grad_x = grad_w = grad_b = None
        if want_x:
            grad_x = torch.ops.aten.convolution_backward(grad, x, weight, None, stride, padding, dilation, False,
                                                         [0, 0], groups, [True, False, False])[0]
        if want_w:
            eh, ew = _extent(weight, dilation)
            canvas_x = _on_canvas(x, max(x.shape[2], eh), max(x.shape[3], ew))
            oh = (canvas_x.shape[2] + 2 * padding[0] - eh) // stride[0] + 1
            ow = (canvas_x.shape[3] + 2 * padding[1] - ew) // stride[1] + 1
            grad_w = torch.ops.aten.convolution_backward(_on_canvas(grad, oh, ow), canvas_x, weight, None, stride,
                                                         padding, dilation, False, [0, 0], groups,
                                                         [False, True, False])[1]
        if want_b:  # false for a missing bias
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def _out_shape(h: int, w: int, kh: int, kw: int, layout: Layout) -> tuple[int, int]:
    stride, padding, dilation, _ = layout
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip((h, w), (kh, kw), stride, padding, dilation))


def _matrix_form(x: torch.Tensor, weight: torch.Tensor, layout: Layout) -> str | None:
    """"broadcast" or "batched" where a depthwise convolution of ``x`` is cheaper as matrices, else None."""
    (h, w), (kh, kw), groups = x.shape[2:], weight.shape[2:], layout[3]
    if groups != x.shape[1] or weight.shape[0] != groups or not x.is_contiguous(memory_format=torch.channels_last):
        return None
    oh, ow = _out_shape(h, w, kh, kw, layout)
    entries, taps = oh * ow * h * w, kh * kw
    if entries <= BROADCAST_MAX_ENTRIES and h * w <= taps:
        return "broadcast"
    if entries <= MATRIX_MAX_ENTRIES and taps >= MATRIX_MIN_TAPS:
        return "batched"
    return None


@functools.lru_cache(maxsize=256)
def _tap_matrix(kernel: tuple[int, int], size: tuple[int, int], layout: Layout) -> torch.Tensor:
    """(taps, P*Q) 0/1 matrix: row t marks the (output pixel p, input pixel q) pairs that tap t joins."""
    with torch.inference_mode(False):  # cached: a matrix first built under inference_mode could never train
        return _build_tap_matrix(kernel, size, layout)


def _build_tap_matrix(kernel: tuple[int, int], size: tuple[int, int], layout: Layout) -> torch.Tensor:
    (kh, kw), (h, w) = kernel, size
    stride, padding, dilation, _ = layout
    oh, ow = _out_shape(h, w, kh, kw, layout)
    a, b, i, j = torch.meshgrid(torch.arange(kh), torch.arange(kw), torch.arange(oh), torch.arange(ow), indexing="ij")
    u = i * stride[0] - padding[0] + a * dilation[0]
    v = j * stride[1] - padding[1] + b * dilation[1]
    inside = (u >= 0) & (u < h) & (v >= 0) & (v < w)
    taps = torch.zeros(kh * kw, oh * ow, h * w)
    taps[(a * kw + b)[inside], (i * ow + j)[inside], (u * w + v)[inside]] = 1.0
    return taps.view(kh * kw, -1)


def _taps(weight: torch.Tensor, size: tuple[int, int], layout: Layout) -> torch.Tensor:
    return _tap_matrix(tuple(weight.shape[2:]), size, layout).to(weight.dtype)


def _depthwise_broadcast(x: torch.Tensor, weight: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Each channel's (P, Q) matrix times its pixels, as one broadcast product over the channels-last
    memory (N, Q, C): no copies, and both the output and the input's gradient stay channels-last."""
    (n, c, h, w), (kh, kw) = x.shape, weight.shape[2:]
    (oh, ow), taps = _out_shape(h, w, kh, kw, layout), _taps(weight, (h, w), layout)
    per_pixel = (taps.t() @ weight.reshape(c, kh * kw).t()).view(oh * ow, h * w, c)  # (P, Q, C)
    pixels = x.permute(0, 2, 3, 1).reshape(n, 1, h * w, c)  # a view
    return (pixels * per_pixel).sum(2).view(n, oh, ow, c).permute(0, 3, 1, 2)


def _depthwise_batched(x: torch.Tensor, weight: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Each channel's (P, Q) matrix times its pixels, as a matrix product batched over the channels:
    for matrices too large to broadcast, at the price of moving the channels first and back."""
    (n, c, h, w), (kh, kw) = x.shape, weight.shape[2:]
    (oh, ow), taps = _out_shape(h, w, kh, kw, layout), _taps(weight, (h, w), layout)
    per_channel = (weight.reshape(c, kh * kw) @ taps).view(c, oh * ow, h * w)  # (C, P, Q)
    columns = _ChannelsLastGrad.apply(x).permute(1, 0, 2, 3).reshape(c, n, h * w)  # (C, N, Q)
    y = torch.bmm(columns, per_channel.transpose(1, 2))  # (C, N, P)
    return y.view(c, n, oh, ow).permute(1, 0, 2, 3).contiguous(memory_format=torch.channels_last)


class _ChannelsLastGrad(torch.autograd.Function):
    """Identity whose gradient leaves channels-last. Through the permuted copy above it would leave in
    (C, N, H, W) order, and the ReLU before it would run its backward on that mixed layout 15-30x
    slower (measured at 128 x 16 x 4 x 4: 75 us against 4 us)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last)


def _on_canvas(t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``t`` in the top-left corner of a zero (N, C, height, width) tensor in its memory format."""
    cl = t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    canvas = t.new_zeros((*t.shape[:2], height, width))
    if cl:
        canvas = canvas.contiguous(memory_format=torch.channels_last)
    canvas[:, :, : t.shape[2], : t.shape[3]] = t
    return canvas


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
