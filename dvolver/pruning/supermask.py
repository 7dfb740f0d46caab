"""Supermask: Bernoulli masks learned over a frozen random network (Zhou et al., NeurIPS 2019).

A baseline for ASLP (../shared/METHODS.md section 2). Every weight has a learned score s (init 0, so
p = sigmoid(s) = 0.5). Training-mode forward: a fresh mask `m ~ Bernoulli(sigmoid(s))` per forward pass from the
layer's seeded generator; straight-through: the forward uses the exact 0/1 sample, the backward the gradient of
sigmoid(s). Dynamic weight rescaling (on by default): the masked weight is multiplied by n / (number kept) for
the layer's current mask, i.e. by the inverse of its kept fraction; as in both reference implementations the
gradient also flows through that factor (clamped to at most n if a mask keeps nothing).

Eval mode and extraction (our choice; the method samples at test time too): the deterministic mask keeps a
weight iff sigmoid(s) >= 0.5 (s >= 0), which is also what the official ASLP code does when it prunes a
Supermask network, and the dynamic rescale uses that mask's kept fraction, so the eval network is the one the
training distribution is centred on. Zhou et al. and the ASLP harness instead report the mean test accuracy of
10 sampled masks; to reproduce that, evaluate in training mode (`model.train()`) under `torch.no_grad()`, with
BatchNorm-free networks such as Conv2/4/6.

Usage:
    model = prepare(model, signed_constant=True, seed=0)
    opt = torch.optim.SGD(parameter_groups(model))
    subnet = extract(model)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dvolver.pruning import masked
from dvolver.pruning.masked import LayerKeep, extract, keep_stats, kept_fraction  # the API of every mask method

__all__ = ["BernoulliMask", "LayerKeep", "extract", "keep_stats", "kept_fraction", "parameter_groups", "prepare"]


@dataclass(frozen=True)
class BernoulliMask(masked.LogitMask):
    """Bernoulli(sigmoid(s)) masks in training, s >= 0 in eval; optional dynamic weight rescaling."""

    dynamic_rescale: bool = True
    init_score: float = 0.0

    def init_scores(self, scores: Tensor, generator: torch.Generator) -> None:
        scores.fill_(self.init_score)

    def sample(self, scores: Tensor, generator: torch.Generator) -> Tensor:
        p = self.keep_probability(scores)
        hard = torch.bernoulli(p.detach(), generator=generator)
        return masked.straight_through(hard, p)

    def rescale(self, mask: Tensor) -> Tensor | float:
        if not self.dynamic_rescale:
            return 1.0
        return mask.numel() / mask.sum().clamp_min(1.0)


def prepare(
    model: nn.Module,
    *,
    dynamic_rescale: bool = True,
    signed_constant: bool = False,
    init_score: float = 0.0,
    weight_init: masked.WeightInit = "kaiming_normal",
    seed: int = 0,
) -> nn.Module:
    """Turn `model` (in place) into a Supermask learner: every Conv2d/Linear masked, weights frozen."""
    rule = BernoulliMask(dynamic_rescale=dynamic_rescale, init_score=init_score)
    return masked.mask_layers(model, rule, signed_constant=signed_constant, weight_init=weight_init, seed=seed)


def parameter_groups(model: nn.Module, lr: float = 50.0, momentum: float = 0.9) -> list[dict[str, Any]]:
    """SGD parameter group for the scores: momentum 0.9, no weight decay, lr 50 by default (the official ASLP
    comparison runs every method through one `--lr`, default 50; the logits need a large step because the
    sigmoid's gradient is small). Pass to `torch.optim.SGD(groups)`."""
    return [{"params": masked.score_parameters(model), "lr": lr, "momentum": momentum, "weight_decay": 0.0}]
