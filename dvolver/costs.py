"""What a network costs: MACs and FLOPs by fvcore, params, CPU latency.

fvcore counts one multiply-accumulate as one "flop"; we call that number MACs and report
FLOPs = 2 x MACs beside it. Ops fvcore has no formula for (pooling, for one) are recorded with the
candidate instead of being silently counted as free.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Costs:
    macs: int
    flops: int
    params: int
    uncounted_ops: dict[str, int] = field(default_factory=dict)

    def as_metrics(self) -> dict[str, object]:
        return {"macs": self.macs, "flops": self.flops, "params": self.params, "uncounted_ops": self.uncounted_ops}


def count(model: nn.Module, input_shape: tuple[int, ...]) -> Costs:
    """MACs at batch 1 in eval mode (BatchNorm folded the way inference runs it)."""
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        analysis = FlopCountAnalysis(model, torch.zeros(1, *input_shape, device=device))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        with torch.no_grad():
            macs = int(analysis.total())
        uncounted = dict(analysis.unsupported_ops())
    finally:
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Costs(macs=macs, flops=2 * macs, params=params, uncounted_ops=uncounted)


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
