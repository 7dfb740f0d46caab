"""What a network costs: MACs and FLOPs by fvcore, params, CPU latency.

MACs are the multiply-accumulates of convolutions, linear layers and matrix products as fvcore
counts them (it calls one multiply-accumulate one "flop"); FLOPs = 2 x MACs. fvcore also estimates
ops that are not multiply-accumulates (BatchNorm, which inference folds into the convolution before
it; adaptive pooling, which only adds): those stay out of MACs and are recorded under
`non_mac_ops`. Ops fvcore has no formula for (max and average pooling, for one) are recorded under
`uncounted_ops` instead of being silently taken as free.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from .cpu_forms import restore_plain

# fvcore's names (by_operator) of the ops that are multiply-accumulates
MAC_OPS = frozenset({"conv", "linear", "addmm", "bmm", "einsum", "matmul", "mm"})


@dataclass(frozen=True)
class Costs:
    macs: int
    flops: int
    params: int
    uncounted_ops: dict[str, int] = field(default_factory=dict)  # op -> calls fvcore could not count
    non_mac_ops: dict[str, int] = field(default_factory=dict)  # op -> fvcore's estimate, not in MACs
    # With weights pruned to exact zeros (an unstructured mask): each conv and linear layer's MACs
    # times the fraction of its weights kept, and the params left. None for a dense network.
    sparse_macs: int | None = None
    nonzero_params: int | None = None

    def as_metrics(self) -> dict[str, object]:
        metrics: dict[str, object] = {"macs": self.macs, "flops": self.flops, "params": self.params,
                                      "uncounted_ops": self.uncounted_ops, "non_mac_ops": self.non_mac_ops}
        if self.sparse_macs is not None:
            metrics |= {"sparse_macs": self.sparse_macs, "sparse_flops": 2 * self.sparse_macs,
                        "nonzero_params": self.nonzero_params}
        return metrics


@dataclass(frozen=True)
class OpCounts:
    """fvcore's raw figures for one module: its count by operator, the calls of ops it has no formula
    for, and its trainable params. Those of the parts of a network add up to the network's."""

    by_op: dict[str, int]
    uncounted: dict[str, int]
    params: int


def count(model: nn.Module, input_shape: tuple[int, ...]) -> Costs:
    """Costs of one inference at batch 1, in eval mode."""
    counts, by_module = _analyse(model, (input_shape,))
    costs = to_costs(counts)
    sparse_macs, nonzero = _sparse(model, by_module, costs.macs)
    return replace(costs, sparse_macs=sparse_macs, nonzero_params=nonzero)


def count_ops(model: nn.Module, input_shapes: tuple[tuple[int, ...], ...]) -> OpCounts:
    """fvcore's figures for one forward pass of `model` at batch 1, in eval mode, on zeros of the
    given shapes (one per forward argument)."""
    return _analyse(model, input_shapes)[0]


def to_costs(counts: OpCounts) -> Costs:
    """MACs are the multiply-accumulate ops' share of fvcore's count; the rest is non_mac_ops."""
    macs = int(sum(v for op, v in counts.by_op.items() if op in MAC_OPS))
    others = {op: int(v) for op, v in counts.by_op.items() if op not in MAC_OPS}
    return Costs(macs=macs, flops=2 * macs, params=counts.params, uncounted_ops=dict(counts.uncounted),
                 non_mac_ops=others)


def _analyse(model: nn.Module, input_shapes: tuple[tuple[int, ...], ...]) -> tuple[OpCounts, dict[str, dict[str, int]]]:
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    try:
        forms = restore_plain(model)  # a trained model's CPU forms are counted as the layers they stand for
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
        inputs = tuple(torch.zeros(1, *shape, device=device) for shape in input_shapes)
        analysis = FlopCountAnalysis(model, inputs[0] if len(inputs) == 1 else inputs)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        with torch.no_grad():
            by_module = analysis.by_module_and_operator()
        uncounted = dict(analysis.unsupported_ops())
    finally:
        model.train(was_training)
        for module, form in forms:
            module.__class__ = form
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return OpCounts(by_op=dict(by_module[""]), uncounted=uncounted, params=params), by_module


def _sparse(model: nn.Module, by_module: dict[str, dict[str, int]], macs: int) -> tuple[int | None, int | None]:
    """Sparse MACs and nonzero params when some conv or linear weight holds exact zeros."""
    saved = 0.0
    pruned = False
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            weight = module.weight.detach()
            kept = int(torch.count_nonzero(weight))
            if kept < weight.numel():
                pruned = True
                layer_macs = sum(v for op, v in by_module.get(name, {}).items() if op in MAC_OPS)
                saved += layer_macs * (1 - kept / weight.numel())
    if not pruned:
        return None, None
    nonzero = sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())
    return int(round(macs - saved)), nonzero


def latency_ms(model: nn.Module, input_shape: tuple[int, ...], repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of one batch-1 forward pass, in milliseconds."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.randn(1, *input_shape, device=device)
    times = []
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000.0)
    finally:
        model.train(was_training)
    return statistics.median(times)
