"""ASLP: subnetworks extracted from an untrained network with hard Gumbel-softmax masks.

Dupont, Alaoui, Sahbi, Lebois, ICIP 2022 ("Extracting Effective Subnetworks with Gumbel-Softmax"); see
../shared/METHODS.md section 2. The weights stay at their random initialisation; each weight has a learned
logit m^ (init 0) and each layer a learned scale s (smart rescale, init 1).

Training-mode forward: a fresh mask per forward pass, `m = hard Gumbel-softmax([m^, 0], tau)` taken as the
keep entry, so `P(keep) = sigmoid(m^)` (the "arbitrarily shifted log parametrization": logits [m^, 0] in place
of [log p, log(1 - p)]); straight-through: the forward uses the exact 0/1 sample, the backward the gradient of
the soft sample `sigmoid((m^ + g_keep - g_drop) / tau)`. The two Gumbel draws come from the layer's seeded
generator (see `masked`), which is why this does not call `F.gumbel_softmax` (it cannot take a generator); the
distribution and the straight-through estimator are the same. `w_eff = s * (w * m)`.

Eval mode and extraction: the deterministic mask keeps a weight iff m^ >= 0, and the extracted layer holds
`s * (w * m)`. The sparsity is learned, not set.

Usage:
    model = prepare(model, signed_constant=True, seed=0)
    opt = torch.optim.SGD(parameter_groups(model))          # lr 50 on the logits, 1e-3 on the scales
    ... train on cross-entropy, early-stop on validation accuracy (model.eval() uses the m^ >= 0 mask) ...
    subnet = extract(model); kept_fraction(model)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dvolver.pruning import masked
from dvolver.pruning.masked import LayerKeep, extract, keep_stats, kept_fraction  # the API of every mask method

__all__ = [
    "GumbelMask",
    "LayerKeep",
    "extract",
    "keep_stats",
    "kept_fraction",
    "parameter_groups",
    "prepare",
]


@dataclass(frozen=True)
class GumbelMask(masked.LogitMask):
    """Hard Gumbel-softmax over the logits [m^, 0] at temperature `tau`; eval mask m^ >= 0."""

    tau: float = 1.0
    init_logit: float = 0.0

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"the Gumbel-softmax temperature must be > 0, not {self.tau}")

    def init_scores(self, scores: Tensor, generator: torch.Generator) -> None:
        scores.fill_(self.init_logit)

    def sample(self, scores: Tensor, generator: torch.Generator) -> Tensor:
        finfo = torch.finfo(scores.dtype)
        u = torch.rand((2, *scores.shape), generator=generator, device=scores.device, dtype=scores.dtype)
        gumbel = -torch.log(-torch.log(u.clamp_(finfo.tiny, 1.0 - finfo.eps)))
        keep_logit = scores + gumbel[0]
        drop_logit = gumbel[1]  # the second logit is the constant 0
        hard = (keep_logit >= drop_logit).to(scores.dtype)
        soft = torch.sigmoid((keep_logit - drop_logit) / self.tau)  # keep entry of the 2-way softmax
        return masked.straight_through(hard, soft)


def prepare(
    model: nn.Module,
    *,
    signed_constant: bool = False,
    smart_rescale: bool = True,
    tau: float = 1.0,
    init_logit: float = 0.0,
    weight_init: masked.WeightInit = "kaiming_normal",
    seed: int = 0,
) -> nn.Module:
    """Turn `model` (in place) into an ASLP mask learner: every Conv2d/Linear masked, weights frozen.

    `signed_constant`: `w <- sign(w) * std(w)` per layer after the init. `smart_rescale`: one learned scalar
    per layer (init 1). `weight_init`: "kaiming_normal" (re-draw, fan_in, ReLU gain; the official code's init)
    or "keep". Biases are kept as the model has them and frozen. Returns the model."""
    rule = GumbelMask(tau=tau, init_logit=init_logit)
    return masked.mask_layers(
        model, rule, signed_constant=signed_constant, smart_rescale=smart_rescale, weight_init=weight_init, seed=seed
    )


def parameter_groups(
    model: nn.Module, mask_lr: float = 50.0, scale_lr: float = 1e-3, momentum: float = 0.9
) -> list[dict[str, Any]]:
    """SGD parameter groups per the paper: logits at lr 50, scales at lr 1e-3, momentum 0.9, no weight decay
    (the official code uses the same momentum for both). Pass to `torch.optim.SGD(groups)`."""
    groups: list[dict[str, Any]] = [
        {"params": masked.score_parameters(model), "lr": mask_lr, "momentum": momentum, "weight_decay": 0.0}
    ]
    scales = masked.scale_parameters(model)
    if scales:
        groups.append({"params": scales, "lr": scale_lr, "momentum": momentum, "weight_decay": 0.0})
    return groups
