"""Whether a pruning method can prune a given network: what it needs of the network's layers.

Apart from dvolver.pruning.methods so that a spec can ask it of a backbone without importing the
training stack or torch_pruning."""

from __future__ import annotations

from torch import nn

from .registry import PruningError, check_budget, method


def check(name: str, model: nn.Module, budget: float | None = None) -> None:
    """Raises PruningError when method ``name`` cannot prune ``model`` (or take ``budget``), before any training."""
    info = method(name)
    if budget is not None:
        check_budget(budget)
    network = type(model).__name__
    if info.structured:
        if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
            raise PruningError(f"{name} removes conv filters and {network} has no Conv2d layer; "
                               "prune it with an unstructured method (aslp, edgepopup, supermask, reparam, magnitude)")
        grouped = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
        if grouped:
            raise PruningError(f"{name} cannot remove filters of grouped or depthwise convolutions, which {network} "
                               "has; prune it with an unstructured method")
    elif not any(type(m) in (nn.Conv2d, nn.Linear) for m in model.modules()):
        raise PruningError(f"{network} has no Conv2d or Linear layer for {name} to prune")
