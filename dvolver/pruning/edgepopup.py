"""edge-popup: per-layer top-k subnetworks of a frozen random network (Ramanujan et al., CVPR 2020).

A baseline for ASLP (../shared/METHODS.md section 2). Every weight has a learned score (Kaiming-uniform init,
a = sqrt(5), as in the paper's code); each layer keeps the k = `keep` fraction of its weights with the largest
|score| (exactly `round(keep * n)` of n, at least 1), in training and in eval alike. Straight-through: the
gradient of the masked weight reaches the score as if the mask were |score| itself (the hard top-k mask in the
forward pass). The sparsity is set, not learned. The weights stay frozen at their init (Kaiming-normal by
default, optionally signed constant `sign(w) * std(w)` per layer); biases are kept and frozen.

Usage:
    model = prepare(model, keep=0.5, signed_constant=True, seed=0)
    opt = torch.optim.SGD(parameter_groups(model))   # lr 0.1, momentum 0.9, wd 1e-4 (+ cosine schedule)
    subnet = extract(model)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dvolver.pruning import masked
from dvolver.pruning.masked import LayerKeep, extract, keep_stats, kept_fraction  # the API of every mask method

__all__ = ["LayerKeep", "TopKMask", "extract", "keep_stats", "kept_fraction", "parameter_groups", "prepare"]


@dataclass(frozen=True)
class TopKMask(masked.MaskRule):
    """Keep the `keep` fraction of a layer's weights with the largest |score|."""

    keep: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.keep <= 1.0:
            raise ValueError(f"edge-popup's keep fraction must be in (0, 1], not {self.keep}")

    def count(self, n: int) -> int:
        """How many of a layer's n weights are kept."""
        return min(n, max(1, round(self.keep * n)))

    def init_scores(self, scores: Tensor, generator: torch.Generator) -> None:
        nn.init.kaiming_uniform_(scores, a=math.sqrt(5), generator=generator)

    def _top_k(self, magnitude: Tensor) -> Tensor:
        flat = magnitude.detach().flatten()
        mask = torch.zeros_like(flat)
        mask[torch.topk(flat, self.count(flat.numel()), sorted=False).indices] = 1.0
        return mask.view_as(magnitude)

    def sample(self, scores: Tensor, generator: torch.Generator) -> Tensor:
        magnitude = scores.abs()
        return masked.straight_through(self._top_k(magnitude), magnitude)

    def deterministic(self, scores: Tensor) -> Tensor:
        return self._top_k(scores.abs())


def prepare(
    model: nn.Module,
    *,
    keep: float = 0.5,
    signed_constant: bool = False,
    weight_init: masked.WeightInit = "kaiming_normal",
    seed: int = 0,
) -> nn.Module:
    """Turn `model` (in place) into an edge-popup mask learner keeping `keep` of every Conv2d/Linear layer."""
    rule = TopKMask(keep=keep)
    return masked.mask_layers(model, rule, signed_constant=signed_constant, weight_init=weight_init, seed=seed)


def parameter_groups(
    model: nn.Module, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-4
) -> list[dict[str, Any]]:
    """SGD parameter group for the scores, with the paper's Conv2/4/6 settings (lr 0.1 with a cosine schedule,
    momentum 0.9, weight decay 1e-4). Pass to `torch.optim.SGD(groups)`."""
    return [{"params": masked.score_parameters(model), "lr": lr, "momentum": momentum, "weight_decay": weight_decay}]
