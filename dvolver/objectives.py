"""The objective registry: what can be optimised, in which direction, in which unit.

An objective is data. `cheap` ones are known from the genome before any training (the engine
checks constraints on them before a candidate reaches a worker); the others are measured by the
worker that trains the candidate, on that worker's hardware.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str  # "max" or "min"
    unit: str
    cheap: bool
    description: str
    # A cheap objective computed from the counted metrics (MACs, FLOPs, params, ...) before training;
    # None for those the counting or the training produces themselves.
    derive: Callable[[Mapping[str, Any]], float] | None = None

    def minimised(self, value: float) -> float:
        """pymoo and the Pareto code minimise; maximised objectives are negated."""
        return -value if self.direction == "max" else value


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("acc", "max", "%", False, "validation accuracy after the proxy training"),
        Objective("flops", "min", "FLOPs", True, "floating-point operations at batch 1, = 2 x MACs"),
        Objective("macs", "min", "MACs", True, "multiply-accumulates at batch 1 counted by fvcore"),
        Objective("params", "min", "params", True, "trainable parameters"),
        Objective("latency", "min", "ms", False, "median CPU latency at batch 1 on the worker"),
    )
}

# constraint name -> (objective, bound kind)
CONSTRAINTS: dict[str, tuple[str, str]] = {
    "max_flops": ("flops", "max"),
    "max_macs": ("macs", "max"),
    "max_params": ("params", "max"),
    "max_latency_ms": ("latency", "max"),
    "min_acc": ("acc", "min"),
}


def violation(constraints: dict[str, float], values: dict[str, float], cheap_only: bool = False) -> float:
    """Sum of relative violations of the constraints whose objective has a value; 0 when all hold."""
    total = 0.0
    for name, bound in constraints.items():
        objective, kind = CONSTRAINTS[name]
        if cheap_only and not OBJECTIVES[objective].cheap:
            continue
        value = values.get(objective)
        if value is None:
            continue
        excess = value - bound if kind == "max" else bound - value
        if excess > 0:
            total += excess / max(abs(bound), 1e-12)
    return total
