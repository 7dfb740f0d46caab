"""The cheaper CPU forms of small convolutions compute the same function as the convolutions they
replace: outputs and every gradient, checked against float64 convolutions in NCHW."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dvolver import cpu_forms
from dvolver.cpu_forms import CroppedSamePadding, PointwiseAsMatmul, restore_plain, use_cpu_forms
from dvolver.data import load
from dvolver.spec import SearchSpec
from dvolver.training import place


def _reference(conv: nn.Conv2d, x: torch.Tensor, weight_grad_of: torch.Tensor):
    """Output and gradients (input, weight, bias) of the plain convolution, in float64 and NCHW."""
    xd = x.detach().double().contiguous().requires_grad_()
    wd = conv.weight.detach().double().contiguous().requires_grad_()
    bd = None if conv.bias is None else conv.bias.detach().double().requires_grad_()
    y = F.conv2d(xd, wd, bd, conv.stride, conv.padding, conv.dilation, conv.groups)
    (y * weight_grad_of.double()).sum().backward()
    return y.detach(), xd.grad, wd.grad, None if bd is None else bd.grad


def _check(conv: nn.Conv2d, form: type[nn.Conv2d], x: torch.Tensor, channels_last: bool) -> None:
    assert use_cpu_forms(conv, channels_last) == 1 and type(conv) is form
    if channels_last:
        conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.detach().requires_grad_()
    y = conv(x)
    probe = torch.linspace(-1, 1, y.numel()).view(y.shape)  # every output weighted differently
    (y * probe).sum().backward()
    ref = _reference(conv, x, probe)
    got = (y.detach(), x.grad, conv.weight.grad, None if conv.bias is None else conv.bias.grad)
    for name, a, b in zip(("output", "input grad", "weight grad", "bias grad"), got, ref):
        if b is None:
            continue
        assert a.shape == b.shape, name
        scale = float(b.abs().max()) + 1e-12
        assert float((a.double() - b).abs().max()) <= 1e-5 * scale, name


@pytest.mark.parametrize("cin,cout,size,stride,bias", [
    (4, 8, 8, 1, False), (8, 8, 8, 2, False), (16, 16, 4, 1, True), (32, 16, 2, 2, False), (3, 5, 7, 2, True),
    (8, 4, 1, 1, False), (32, 8, 60, 2, False)])  # the last has too many pixels: it keeps the convolution
def test_a_pointwise_convolution_as_a_matrix_product_is_the_same_function(cin, cout, size, stride, bias):
    torch.manual_seed(cin * 100 + size)
    conv = nn.Conv2d(cin, cout, 1, stride=stride, bias=bias)
    _check(conv, PointwiseAsMatmul, torch.randn(6, cin, size, size), channels_last=True)


@pytest.fixture(params=[True, False], ids=["oneDNN-AVX512", "oneDNN-AVX2"])
def onednn_avx512(request, monkeypatch):
    """Both of the forms' choices, whichever code oneDNN runs on this CPU."""
    monkeypatch.setattr(cpu_forms, "ONEDNN_AVX512", request.param)
    return request.param


@pytest.mark.parametrize("channels,kernel,size,stride,dilation,depthwise", [
    (8, 7, 2, 1, 1, True), (32, 5, 2, 1, 1, True), (16, 7, 4, 1, 1, True), (8, 3, 1, 1, 1, True),
    (8, 7, 3, 2, 1, True), (8, 5, 4, 2, 1, True), (8, 3, 2, 1, 2, True), (8, 5, 4, 1, 2, True),
    (4, 3, 1, 1, 1, False), (4, 5, 2, 2, 1, False), (8, 7, 8, 1, 1, True), (8, 7, 8, 2, 1, True),
    (16, 5, 4, 1, 1, True), (3, 7, 5, 2, 1, True)])
@pytest.mark.parametrize("channels_last", [True, False], ids=["channels-last", "NCHW"])
def test_a_same_padded_kernel_cropped_to_the_reachable_taps_is_the_same_function(
        channels, kernel, size, stride, dilation, depthwise, channels_last, onednn_avx512):
    torch.manual_seed(channels * 10 + kernel + size)
    conv = nn.Conv2d(channels, channels, kernel, stride=stride, padding=dilation * (kernel // 2),
                     dilation=dilation, groups=channels if depthwise else 1, bias=False)
    _check(conv, CroppedSamePadding, torch.randn(5, channels, size, size), channels_last)


@pytest.mark.parametrize("channels,kernel,size,stride,depthwise,avx512,expected", [
    (32, 7, 2, 1, True, True, "broadcast"), (16, 5, 4, 2, True, False, "broadcast"),
    (16, 7, 4, 1, True, True, "batched"), (8, 7, 8, 2, True, False, "batched"),
    (8, 7, 8, 1, True, False, "conv"), (16, 3, 4, 1, True, False, "conv"),
    (8, 3, 2, 1, False, False, "canvas"), (8, 3, 2, 1, False, True, "conv"),
    (8, 7, 4, 1, True, False, "batched")])  # a depthwise kernel larger than its input needs no canvas
def test_each_shape_takes_the_form_the_benchmark_found_fastest(
        channels, kernel, size, stride, depthwise, avx512, expected, monkeypatch):
    """The choices the cropped-kernel test above checks for equality, as bench/train_step.py made them."""
    monkeypatch.setattr(cpu_forms, "ONEDNN_AVX512", avx512)
    conv = nn.Conv2d(channels, channels, kernel, stride=stride, padding=kernel // 2,
                     groups=channels if depthwise else 1, bias=False)
    assert use_cpu_forms(conv, channels_last=True) == 1
    x = torch.randn(4, channels, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert conv.path(x)[0] == expected
    if expected in ("broadcast", "batched"):  # and it leaves what follows in channels-last, both ways
        y = conv(x)
        y.sum().backward()
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert x.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("size", [2, 4], ids=["broadcast", "batched"])
def test_a_matrix_form_first_run_under_inference_mode_still_trains(size):
    """Validation runs under inference_mode; the tap matrices it builds are cached for training too."""
    conv = nn.Conv2d(16, 16, 7, padding=3, groups=16, bias=False)
    use_cpu_forms(conv, channels_last=True)
    x = torch.randn(4, 16, size, size).contiguous(memory_format=torch.channels_last)
    assert conv.path(x)[0] in ("broadcast", "batched")
    cpu_forms._tap_matrix.cache_clear()  # as in a fresh worker, whatever ran before
    with torch.inference_mode():
        conv(x)
    conv(x.requires_grad_()).sum().backward()
    assert conv.weight.grad is not None and x.grad is not None


def test_oneDNN_held_below_AVX512_counts_as_AVX2(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert cpu_forms._onednn_avx512() is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
    assert cpu_forms._onednn_avx512() is (torch.backends.cpu.get_cpu_capability() == "AVX512")


def test_a_pointwise_convolution_takes_the_product_only_over_few_pixels():
    cl = torch.channels_last
    conv, strided = nn.Conv2d(16, 16, 1, bias=False), nn.Conv2d(16, 16, 1, stride=2, bias=False)
    assert use_cpu_forms(nn.ModuleList([conv, strided]), channels_last=True) == 2
    assert conv.takes_product(torch.empty(128, 16, 4, 4).contiguous(memory_format=cl))
    assert not conv.takes_product(torch.empty(128, 16, 8, 8).contiguous(memory_format=cl))  # 8192 rows
    assert strided.takes_product(torch.empty(128, 16, 8, 8).contiguous(memory_format=cl))  # 2048 after the stride
    assert not conv.takes_product(torch.empty(128, 16, 4, 4))  # NCHW: the product would need a copy


def test_layers_without_an_exact_cheaper_form_are_left_as_they_are():
    layers = nn.Sequential(nn.Conv2d(4, 4, 3, padding=0), nn.Conv2d(4, 4, 2, padding=1),
                           nn.Conv2d(4, 4, 1, padding=1), nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
                           nn.Conv2d(4, 4, 1, groups=2))
    assert use_cpu_forms(layers, channels_last=True) == 0
    assert all(type(m) is nn.Conv2d for m in layers)
    assert use_cpu_forms(nn.Conv2d(4, 4, 1), channels_last=False) == 0  # a matmul over NCHW would copy


def test_the_default_network_trains_the_same_with_and_without_the_cpu_forms():
    """One SGD step of the default search's network from the same initial weights: the same loss, the
    same gradients and the same updated weights, and the trained weights load into the plain network."""
    spec = SearchSpec()
    data = load(spec.dataset)
    space = spec.search_space()
    genome = space.sample(np.random.default_rng(0))
    x, y = data.x_train[:64].contiguous(memory_format=torch.channels_last), data.y_train[:64]
    results = []
    for forms in (False, True):
        torch.manual_seed(0)
        model = place(space.build(genome, data.input_shape, data.num_classes), torch.device("cpu"), True, forms)
        swapped = sum(type(m) in (PointwiseAsMatmul, CroppedSamePadding) for m in model.modules())
        assert (swapped > 20) if forms else swapped == 0
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        results.append((loss.item(), grads, model.state_dict()))
    (loss_plain, grads_plain, state_plain), (loss_fast, grads_fast, state_fast) = results
    assert loss_fast == pytest.approx(loss_plain, rel=1e-5)
    assert grads_fast.keys() == grads_plain.keys() and state_fast.keys() == state_plain.keys()
    for name, g in grads_plain.items():
        assert float((grads_fast[name] - g).abs().max()) <= 1e-4 * (float(g.abs().max()) + 1e-8), name
    plain = space.build(genome, data.input_shape, data.num_classes)
    plain.load_state_dict(state_fast)
    assert all(type(m) is not PointwiseAsMatmul for m in plain.modules())


def test_costs_are_counted_on_the_plain_network():
    """A cropped kernel runs fewer multiply-adds than the layer it stands for: fvcore counting the forms
    would report a cheaper network than the one deployed, so costs are counted on the plain layers and
    the model keeps its forms; evaluation restores the plain layers for good before latency and export."""
    from dvolver import costs

    model = nn.Sequential(nn.Conv2d(8, 8, 7, padding=3, groups=8, bias=False), nn.Conv2d(8, 16, 1, bias=False))
    plain = costs.count(model, (8, 2, 2))
    assert plain.macs == 8 * 49 * 4 + 8 * 16 * 4
    assert use_cpu_forms(model, channels_last=True) == 2
    assert costs.count(model, (8, 2, 2)) == plain
    assert [type(m) for m in model] == [CroppedSamePadding, PointwiseAsMatmul]  # still training's forms
    assert len(restore_plain(model)) == 2 and all(type(m) is nn.Conv2d for m in model)
