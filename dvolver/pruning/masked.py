"""Masked Conv2d / Linear layers over frozen random weights, shared by the three mask-learning methods.

ASLP (`gumbel`), edge-popup (`edgepopup`) and Supermask (`supermask`) differ only in how a layer turns its
per-weight scores into a binary mask. That difference is a small *mask rule*; everything else lives here:

- `mask_layers(model, rule, ...)` wraps every `nn.Conv2d` and `nn.Linear` of a model (exact types, so
  subclasses with their own forward are left alone) in a `MaskedConv2d` / `MaskedLinear` and freezes every
  other parameter of the model (BatchNorm affine parameters included: in these methods only the masks, and
  ASLP's per-layer scale, are learned). BatchNorm running statistics still update in training mode.
- Weights are re-drawn by default with Kaiming-normal (fan_in, ReLU gain), the initialisation of the official
  ASLP and edge-popup code; `weight_init="keep"` keeps the model's own. Biases are kept exactly as the model
  has them, frozen and never masked (the official ASLP code leaves them out of every optimizer too).
- A layer computes `w_eff = s * rescale(m) * (w * m)`: `m` is the rule's sampled mask in training mode and its
  deterministic mask in eval mode, `rescale(m)` is 1 except for Supermask's dynamic weight rescaling, and `s`
  is ASLP's learned per-layer scalar when smart rescale is on (otherwise absent).
- `extract(model)` returns a plain copy whose Conv2d/Linear weights are `w_eff` under the deterministic mask
  (pruned weights exactly zero); `keep_stats` / `kept_fraction` report what that mask keeps.

Randomness. `mask_layers` draws weights and score initialisations from CPU `torch.Generator`s seeded from
`seed` (so the same seed gives the same random network on any device and for every method), and gives each
layer its own noise seed. Training-mode mask noise (Gumbel, Bernoulli) comes from a per-layer generator on the
scores' device, created lazily from that seed: a model prepared with the same seed and fed the same batches
samples the same masks, whatever else draws from torch's global generator. The generator's position is not
part of the state_dict; moving the model to another device restarts its stream.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

WeightInit = Literal["kaiming_normal", "keep"]

_WEIGHT_STREAM, _SCORE_STREAM, _NOISE_STREAM = 0, 1, 2


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for a named stream of `seed` (independent streams, no collisions between keys)."""
    state = np.random.SeedSequence([seed % 2**63, *keys]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def straight_through(hard: Tensor, surrogate: Tensor) -> Tensor:
    """`hard`'s values exactly, with the gradient of `surrogate` (the straight-through estimator).

    `surrogate - surrogate.detach()` is exactly zero in the forward pass, so the result is bit-identical to
    `hard` (a mask stays exactly 0/1), while the backward pass sends the incoming gradient to `surrogate`.
    """
    return hard.detach() + (surrogate - surrogate.detach())


def signed_constant_(weight: Tensor) -> Tensor:
    """In place: `w <- sign(w) * std(w)`, std over the whole layer (unbiased, as the official ASLP code)."""
    with torch.no_grad():
        std = weight.std()
        weight.copy_(torch.sign(weight) * std)
    return weight


class MaskRule:
    """How a layer turns its per-weight scores into a binary mask. Subclasses are frozen dataclasses.

    - `init_scores(scores, generator)`: fill a CPU float tensor in place (the scores' initial values).
    - `sample(scores, generator)`: the training-mode mask, values exactly 0/1, gradient reaching `scores`.
    - `deterministic(scores)`: the eval-mode / extraction mask, 0/1, no gradient.
    - `rescale(mask)`: a multiplier on the masked weight (1 unless the method rescales).
    """

    def init_scores(self, scores: Tensor, generator: torch.Generator) -> None:
        scores.zero_()

    def sample(self, scores: Tensor, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def deterministic(self, scores: Tensor) -> Tensor:
        raise NotImplementedError

    def rescale(self, mask: Tensor) -> Tensor | float:
        return 1.0


class LogitMask(MaskRule):
    """A rule whose scores are keep logits, `P(keep) = sigmoid(s)`: its deterministic mask keeps a weight iff
    that probability is at least 1/2, i.e. iff s >= 0. ASLP's Gumbel masks and Supermask's Bernoulli masks."""

    @staticmethod
    def keep_probability(scores: Tensor) -> Tensor:
        return torch.sigmoid(scores)

    def deterministic(self, scores: Tensor) -> Tensor:
        return (scores.detach() >= 0).to(scores.dtype)


class MaskedLayer(nn.Module):
    """A frozen Conv2d/Linear (`self.layer`) with learned mask scores and an optional learned scale.

    Parameters: `scores` (one per weight; for ASLP the logits m^) and, with smart rescale, `scale` (a scalar,
    init 1). The wrapped layer's weight and bias have `requires_grad=False`.
    """

    layer: nn.Conv2d | nn.Linear

    def __init__(
        self, layer: nn.Conv2d | nn.Linear, rule: MaskRule, *, smart_rescale: bool = False, noise_seed: int = 0
    ) -> None:
        super().__init__()
        for p in layer.parameters():
            p.requires_grad_(False)
        self.layer = layer
        self.rule = rule
        self.scores = nn.Parameter(torch.zeros_like(layer.weight))
        if smart_rescale:
            self.scale = nn.Parameter(torch.ones((), dtype=layer.weight.dtype, device=layer.weight.device))
        else:
            self.register_parameter("scale", None)
        self.noise_seed = noise_seed
        self._generator: torch.Generator | None = None

    def generator(self) -> torch.Generator:
        """This layer's noise generator on the scores' device (created from `noise_seed` on first use)."""
        device = self.scores.device
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.noise_seed)
        return self._generator

    def mask(self) -> Tensor:
        """A fresh sampled mask in training mode; the deterministic mask in eval mode."""
        if self.training:
            return self.rule.sample(self.scores, self.generator())
        return self.rule.deterministic(self.scores)

    def effective_weight(self, mask: Tensor | None = None) -> Tensor:
        """`s * rescale(m) * (w * m)` for `mask` (default: `self.mask()`)."""
        m = self.mask() if mask is None else mask
        w = self.layer.weight * m
        factor = self.rule.rescale(m)
        if isinstance(factor, Tensor) or factor != 1.0:
            w = factor * w
        if self.scale is not None:
            w = self.scale * w
        return w

    def extra_repr(self) -> str:
        return f"rule={self.rule}, smart_rescale={self.scale is not None}"


class MaskedConv2d(MaskedLayer):
    layer: nn.Conv2d

    def forward(self, x: Tensor) -> Tensor:
        return self.layer._conv_forward(x, self.effective_weight(), self.layer.bias)


class MaskedLinear(MaskedLayer):
    layer: nn.Linear

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight(), self.layer.bias)


def _replace(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    if name == "":
        return new
    model.set_submodule(name, new)
    return model


def mask_layers(
    model: nn.Module,
    rule: MaskRule,
    *,
    signed_constant: bool = False,
    smart_rescale: bool = False,
    weight_init: WeightInit = "kaiming_normal",
    seed: int = 0,
) -> nn.Module:
    """Wrap every Conv2d/Linear of `model` in place with `rule`; returns the model (or the wrapper, if the
    model itself is a Conv2d/Linear). All other parameters are frozen. See the module docstring."""
    if weight_init not in ("kaiming_normal", "keep"):
        raise ValueError(f"weight_init must be 'kaiming_normal' or 'keep', not {weight_init!r}")
    if any(isinstance(m, MaskedLayer) for m in model.modules()):
        raise ValueError("this model already has masked layers; prepare a fresh model")
    targets = [(name, m) for name, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    if not targets:
        raise ValueError("the model has no nn.Conv2d or nn.Linear layer to mask")
    for p in model.parameters():
        p.requires_grad_(False)
    weight_gen = torch.Generator().manual_seed(derive_seed(seed, _WEIGHT_STREAM))
    score_gen = torch.Generator().manual_seed(derive_seed(seed, _SCORE_STREAM))
    for index, (name, layer) in enumerate(targets):
        with torch.no_grad():
            if weight_init == "kaiming_normal":
                w = torch.empty(layer.weight.shape, dtype=torch.float32)
                nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu", generator=weight_gen)
                layer.weight.copy_(w)
            if signed_constant:
                signed_constant_(layer.weight)
        cls = MaskedConv2d if isinstance(layer, nn.Conv2d) else MaskedLinear
        wrapper = cls(layer, rule, smart_rescale=smart_rescale, noise_seed=derive_seed(seed, _NOISE_STREAM, index))
        with torch.no_grad():
            s = torch.empty(layer.weight.shape, dtype=torch.float32)
            rule.init_scores(s, score_gen)
            wrapper.scores.copy_(s)
        model = _replace(model, name, wrapper)
    return model


def masked_layers(model: nn.Module) -> dict[str, MaskedLayer]:
    """The masked layers of `model` by module name (the same names the extracted model uses)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, MaskedLayer)}


def score_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [m.scores for m in masked_layers(model).values()]


def scale_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [m.scale for m in masked_layers(model).values() if m.scale is not None]


@dataclass(frozen=True)
class LayerKeep:
    """What one layer's deterministic mask keeps."""

    kept: int
    total: int

    @property
    def fraction(self) -> float:
        return self.kept / self.total


def keep_stats(model: nn.Module) -> dict[str, LayerKeep]:
    """Per masked layer (by module name): weights kept by the deterministic (eval / extraction) mask."""
    stats = {}
    with torch.no_grad():
        for name, m in masked_layers(model).items():
            mask = m.rule.deterministic(m.scores)
            stats[name] = LayerKeep(kept=int(mask.sum().item()), total=mask.numel())
    return stats


def kept_fraction(model: nn.Module) -> float:
    """Fraction of all masked weights kept by the deterministic mask (over every masked layer)."""
    stats = keep_stats(model).values()
    if not stats:
        raise ValueError("the model has no masked layers")
    return sum(s.kept for s in stats) / sum(s.total for s in stats)


def extract(model: nn.Module) -> nn.Module:
    """A plain copy of `model` (in eval mode): every masked layer becomes its Conv2d/Linear again with weight
    `s * rescale(m) * (w * m)` under the deterministic mask (pruned weights exactly zero) and the same bias.
    Its outputs equal the masked model's eval-mode outputs. Parameters of the copy require grad again."""
    out = copy.deepcopy(model)
    for name, m in masked_layers(out).items():
        with torch.no_grad():
            weight = m.effective_weight(m.rule.deterministic(m.scores)).detach().clone()
        plain = m.layer
        plain.weight = nn.Parameter(weight)
        out = _replace(out, name, plain)
    for p in out.parameters():
        p.requires_grad_(True)
    return out.eval()
