"""No training step runs the oneDNN kernel that writes out of bounds (uxlfoundation/oneDNN#6035).

oneDNN itself reports which kernel ran for every convolution (ONEDNN_VERBOSE); the tests read that
log, so they check what executed, not what Dvolver meant to execute.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

# "mb64_ic4oc4_ih8oh4kh1sh2dh0ph0_iw8ow4kw1sw2dw0pw0": the problem oneDNN ran.
PROBLEM = re.compile(r"(?:g(\d+))?mb\d+_ic(\d+)oc\d+_ih\d+oh\d+kh(\d+)sh(\d+)\S*?_iw\d+ow\d+kw(\d+)sw(\d+)")


def _unsafe_runs(log: str) -> list[str]:
    """Backward-weights runs of a strided 1x1 convolution over fewer than 16 channels with an NHWC source."""
    bad = []
    for line in log.splitlines():
        if ",exec," not in line or ",convolution," not in line or "backward_weights" not in line:
            continue
        match = PROBLEM.search(line)
        if not match:
            continue
        groups, ic, kh, sh, kw, sw = (int(v) if v else 1 for v in match.groups())
        if (kh, kw) == (1, 1) and (sh, sw) != (1, 1) and ic // groups < 16 and "src:f32::blocked:acdb" in line:
            bad.append(line)
    return bad


def _run(code: str) -> subprocess.CompletedProcess:
    env = os.environ | {"ONEDNN_VERBOSE": "1", "DNNL_VERBOSE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          errors="replace", timeout=300)  # a corrupted heap may write stray bytes


def test_the_reproducer_runs_the_bad_kernel_unguarded_and_not_guarded():
    code = """
        import sys, torch
        from torch import nn
        from dvolver.kernel_guards import run_unsafe_convs_in_nchw
        torch.set_num_threads(1)
        guard = sys.argv[-1] == "guard"
        conv = nn.Conv2d(4, 4, 1, stride=2, bias=False).to(memory_format=torch.channels_last)
        if {guard}:
            assert run_unsafe_convs_in_nchw(conv) == 1
        x = torch.randn(64, 4, 8, 8).to(memory_format=torch.channels_last).requires_grad_()
        for _ in range({steps}):
            y = conv(x)
            y.sum().backward()
        assert y.is_contiguous(memory_format=torch.channels_last)  # the network around it stays channels-last
        print("finished")
    """
    # One step only: unguarded it writes out of bounds. On some CPUs (an AMD EPYC here) even one step
    # kills the process ("double free or corruption"); oneDNN has printed the kernel's run by then.
    plain = _run(code.format(guard=False, steps=1))
    assert plain.returncode == 0 or "corruption" in plain.stderr or plain.returncode < 0, plain.stderr[-2000:]
    if not any(",exec," in line for line in plain.stdout.splitlines()):
        pytest.fail("ONEDNN_VERBOSE printed nothing: this torch build does not run convolutions through oneDNN")
    assert _unsafe_runs(plain.stdout), "the unguarded reproducer no longer reaches the kernel: revisit the guard"
    guarded = _run(code.format(guard=True, steps=100))
    assert guarded.returncode == 0 and "finished" in guarded.stdout, guarded.stderr[-2000:]
    assert _unsafe_runs(guarded.stdout) == []


@pytest.mark.parametrize("method", [None, "aslp", "magnitude"])
def test_a_filters_4_nasnet_trains_channels_last_without_the_bad_kernel(method):
    prune = "" if method is None else f', "pruning": {{"methods": ["{method}"], "budgets": [0.5]}}'
    code = f"""
        import numpy as np, torch
        from dvolver.evaluation import evaluate
        from dvolver.spec import SearchSpec
        spec = SearchSpec.from_dict({{"space_options": {{"filters": 4, "cells_per_stage": 1}},
                                     "training": {{"epochs": 2, "train_limit": 640, "channels_last": "on",
                                                  "keep_weights": False}}{prune}}})
        space = spec.search_space()
        rng = np.random.default_rng(0)
        genome = space.sample(rng)
        if {method!r} is not None:  # the pruning genome: this method, at the one budget
            genome = space.split(genome)[0] + (space.methods.index({method!r}), 0)
        metrics = evaluate(genome, spec, 0)
        assert 0 < metrics["acc"] <= 100 and np.isfinite(metrics["train_loss"])
        print("finished", metrics["acc"])
    """
    proc = _run(code)
    assert proc.returncode == 0 and "finished" in proc.stdout, proc.stderr[-3000:]
    assert "backward_weights" in proc.stdout
    assert _unsafe_runs(proc.stdout) == []


def test_a_guarded_layer_computes_what_the_plain_nchw_network_computes():
    import copy

    import torch

    from dvolver.kernel_guards import run_unsafe_convs_in_nchw
    from search_spaces.ops import FactorizedReduce

    torch.manual_seed(0)
    reference = FactorizedReduce(4, 8)
    guarded = copy.deepcopy(reference).to(memory_format=torch.channels_last)
    assert run_unsafe_convs_in_nchw(guarded) == 2  # both strided 1x1 convs over 4 channels
    x = torch.randn(16, 4, 8, 8)
    outs, grads = [], []
    for net, layout in ((reference, torch.contiguous_format), (guarded, torch.channels_last)):
        xi = x.clone().to(memory_format=layout).requires_grad_()
        out = net(xi)
        (out * torch.arange(out.numel()).reshape(out.shape).sin()).sum().backward()
        outs.append(out)
        grads.append([xi.grad] + [p.grad for p in net.parameters()])
    assert outs[1].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(outs[1], outs[0])
    for g_guarded, g_reference in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_guarded, g_reference, rtol=1e-5, atol=1e-4)  # sums in another order
