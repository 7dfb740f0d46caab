"""Budget-aware pruning by weight reparametrization (Dupont, Sahbi, Michel, ICIP 2021; METHODS.md section 3).

Every ``Conv2d`` and ``Linear`` weight is used through a soft "pit" that zeroes small weights::

    w_eff = w * h_t(w),    h_t(x) = (exp(-1 / ((t x)^n + 1)) - e^-1) / (1 - e^-1),    n = 4

with one learned ``t`` per layer (initialised at 100) and no extra per-weight parameters. Biases are
left untouched: the method prunes weights, and biases are a negligible share of the parameters.
The sum ``C`` of ``h_t(w)`` over all weights is a differentiable count of the kept weights, and
:func:`budget_loss` pulls it to the budget: ``lam * ((C - C_target) / C_initial)^2``, to be added to
the task loss by the caller's training loop (training from scratch, the budget in the loop).
:func:`hard_prune` then keeps exactly the budget, the weights ``h`` rates highest, and freezes the
model back into plain modules. No fine-tuning.

Choices the paper leaves open (see METHODS.md, "keep it configurable"):

* the pit is a ``torch.nn.utils.parametrize`` parametrization, so the model's code and
  ``state_dict`` names of its other parameters are unchanged and removing it leaves plain modules;
* ``t`` is learned as ``log t``: it stays positive, and an optimizer step changes it by a relative
  amount, so the same learning rate works whether ``t`` is 100 or 5 (:func:`t_parameters` gives the
  parameters to put in their own group);
* ``C_initial`` is ``C`` when :func:`prepare` is called, stored as a buffer so a checkpoint keeps it;
* before the cut, a weight counts as kept when ``h_t(w) > 0.5`` (:func:`kept_counts`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from dvolver.pruning.magnitude import MASK_BUFFER, keep_count, kept_count, prunable_layers, topk_masks

N_POWER = 4
T_INIT = 100.0
# h_t is 1 to float32 precision long before |t x| = 1e3 (1 - h ~ 1e-12 there). Clamping t x keeps
# (t x)^4 <= 1e12 and its square (in the gradient of 1 / (u + 1)) far from overflow, so no inf * 0
# can turn a gradient into NaN however large t or w grow.
_Z_MAX = 1e3
# Below |t x| = 1e-5, (t x)^4 < 1e-20 and h_t is 0 to float precision, but the powers of t x and
# their gradients there become subnormal floats, which make CPU arithmetic ~100x slower. Such t x are
# set to exactly 0 instead (the true gradient there, ~4 h / w, is as negligible).
_Z_MIN = 1e-5
_E_MINUS_1 = math.e - 1.0


def pit(x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """``h_t(x)``: 0 at ``x = 0`` exactly, rising monotonically in ``|x|`` to 1; 0.5 near ``|t x| = 1.13``.

    Computed as ``expm1(1 - 1 / (u + 1)) / (e - 1)`` with ``u = (t x)^4``: the same function (multiply
    ``exp(-1 / (u + 1)) - e^-1`` by ``e``), but 0 exactly at ``u = 0`` without relying on ``exp(-1)``
    rounding like the constant ``e^-1``. Each step is a monotone operation, so the computed ``h`` never
    decreases as ``|x|`` grows (checked over every float32 ``x`` in [0, 10] at ``t = 100``);
    ``u / (u + 1)``, though more precise for tiny ``u``, is not monotone in float32 and would reorder
    weights by an ulp. The price: ``h`` below ~1e-7 is rounded to multiples of ~1e-7 (its gradient is
    exact), so weights with ``|t x| < 0.016`` have ``h = 0``; they tie, and ``hard_prune`` breaks that.
    Half-precision inputs are computed in float32 because ``(t x)^4`` overflows float16 at ``|t x| > 16``.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    t = torch.as_tensor(t, dtype=dtype, device=x.device)
    z = (t * x.to(dtype)).clamp(-_Z_MAX, _Z_MAX)
    z = torch.where(z.abs() < _Z_MIN, torch.zeros_like(z), z)
    u = z.pow(N_POWER)
    h = torch.expm1(1.0 - 1.0 / (u + 1.0)) / _E_MINUS_1
    # expm1(1) / (e - 1) can round one ulp above 1; h is a keep probability-like score, keep it <= 1.
    return h.clamp(max=1.0).to(x.dtype)


class WeightPit(nn.Module):
    """The parametrization ``w -> w * h_t(w)`` of one layer's weight, holding that layer's ``t``."""

    def __init__(self, t_init: float = T_INIT) -> None:
        super().__init__()
        if t_init <= 0:
            raise ValueError(f"t must start positive, got {t_init}")
        self.log_t = nn.Parameter(torch.tensor(math.log(t_init)))
        self.register_buffer("c_initial", torch.tensor(0.0))

    @property
    def t(self) -> torch.Tensor:
        return self.log_t.exp()

    def gate(self, weight: torch.Tensor) -> torch.Tensor:
        """``h_t(w)`` for the raw weight."""
        return pit(weight, self.t)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.gate(weight)


def prepare(model: nn.Module, t_init: float = T_INIT) -> nn.Module:
    """Put every ``Conv2d`` and ``Linear`` weight of ``model`` through the pit, in place; returns it."""
    found = False
    for name, module in prunable_layers(model):
        if parametrize.is_parametrized(module, "weight"):
            raise ValueError(f"layer {name!r} already has a weight parametrization; prepare a fresh model")
        reparam = WeightPit(t_init).to(module.weight.device)
        parametrize.register_parametrization(module, "weight", reparam)
        with torch.no_grad():
            reparam.c_initial.fill_(float(reparam.gate(_raw_weight(module)).sum()))
        found = True
    if not found:
        raise ValueError("the model has no Conv2d or Linear layer to reparametrize")
    return model


def reparam_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module, WeightPit]]:
    """``(name, module, pit)`` for each layer :func:`prepare` reparametrized and not yet frozen."""
    for name, module in prunable_layers(model):
        if parametrize.is_parametrized(module, "weight"):
            for reparam in module.parametrizations.weight:
                if isinstance(reparam, WeightPit):
                    yield name, module, reparam


def _raw_weight(module: nn.Module) -> torch.Tensor:
    return module.parametrizations.weight.original


def _stored_weight(module: nn.Module) -> torch.Tensor:
    """The weight tensor a layer stores (the raw one when parametrized), without computing ``w_eff``."""
    return _raw_weight(module) if parametrize.is_parametrized(module, "weight") else module.weight


def _require_layers(model: nn.Module) -> list[tuple[str, nn.Module, WeightPit]]:
    layers = list(reparam_layers(model))
    if not layers:
        raise ValueError("the model has no reparametrized layer; call reparam.prepare(model) first")
    return layers


def t_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The per-layer ``log t`` parameters, for an optimizer group of their own.

    Keep them out of weight decay: decay would pull ``log t`` to 0, i.e. ``t`` to 1, a pit as wide as
    the weights themselves.
    """
    return [reparam.log_t for _, _, reparam in reparam_layers(model)]


def temperatures(model: nn.Module) -> dict[str, float]:
    """Each reparametrized layer's current ``t``."""
    return {name: float(reparam.t.detach()) for name, _, reparam in reparam_layers(model)}


def total_weights(model: nn.Module) -> int:
    """Number of reparametrized weights (the ``total`` that keep fractions refer to)."""
    return sum(_raw_weight(module).numel() for _, module, _ in _require_layers(model))


def soft_count(model: nn.Module) -> torch.Tensor:
    """``C``: the sum of ``h_t(w)`` over all reparametrized weights, differentiable in ``w`` and ``t``."""
    layers = _require_layers(model)
    return torch.stack([reparam.gate(_raw_weight(module)).sum() for _, module, reparam in layers]).sum()


def budget_loss(model: nn.Module, target_keep_fraction: float, lam: float = 1.0) -> torch.Tensor:
    """``lam * ((C - C_target) / C_initial)^2`` with ``C_target = target_keep_fraction * total``.

    Add it to the task loss at every step. ``C_initial`` (``C`` at :func:`prepare`) normalises the
    penalty so one ``lam`` fits networks of any size.
    """
    if not 0.0 <= target_keep_fraction <= 1.0:
        raise ValueError(f"target keep fraction must lie in [0, 1], got {target_keep_fraction}")
    layers = _require_layers(model)
    c_initial = sum(float(reparam.c_initial) for _, _, reparam in layers)
    c_target = target_keep_fraction * total_weights(model)
    return lam * ((soft_count(model) - c_target) / max(c_initial, 1.0)) ** 2


def kept_counts(model: nn.Module, threshold: float = 0.5) -> dict[str, int]:
    """Kept weights per ``Conv2d`` / ``Linear`` layer: ``h_t(w) > threshold`` while reparametrized,
    the recorded mask's count (else the non-zero weights) once :func:`hard_prune` froze it."""
    pits = {name: (module, reparam) for name, module, reparam in reparam_layers(model)}
    counts: dict[str, int] = {}
    with torch.no_grad():
        for name, module in prunable_layers(model):
            if name in pits:
                counts[name] = int((pits[name][1].gate(_raw_weight(module)) > threshold).sum())
            else:
                counts[name] = kept_count(module)
    return counts


def kept_fraction(model: nn.Module, threshold: float = 0.5) -> float:
    """Kept weights over all ``Conv2d`` and ``Linear`` weights (see :func:`kept_counts`)."""
    total = sum(_stored_weight(module).numel() for _, module in prunable_layers(model))
    return sum(kept_counts(model, threshold).values()) / total


def hard_prune(model: nn.Module, keep_fraction: float) -> dict[str, torch.Tensor]:
    """Keep exactly ``round(keep_fraction * total)`` weights, those ``h_t`` rates highest, and freeze.

    One global ranking over all layers on ``h_t(w)``. Ties on ``h`` (it saturates to exactly 1 and
    underflows to exactly 0 in floating point) go to the larger ``|t w|``, which orders weights as
    ``h`` does in exact arithmetic, then to the earlier layer and position. Each layer is then frozen
    into a plain weight ``mask * w * h_t(w)``: the effective weight the model trained with, pruned
    weights zeroed. The mask is recorded on the module as the non-persistent buffer ``weight_mask``
    and returned, keyed by layer name. The model is modified in place.
    """
    layers = _require_layers(model)
    with torch.no_grad():
        scores = {name: reparam.gate(_raw_weight(module)) for name, module, reparam in layers}
        ties = {name: (reparam.t * _raw_weight(module)).abs() for name, module, reparam in layers}
        total = sum(s.numel() for s in scores.values())
        masks = topk_masks(scores, keep_count(keep_fraction, total), tiebreak=ties)
        for name, module, _ in layers:
            _own_class(module)
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            module.weight.mul_(masks[name])
            module.register_buffer(MASK_BUFFER, masks[name], persistent=False)
    return masks


def _own_class(module: nn.Module) -> None:
    """Give a parametrized module a class of its own before its parametrization is removed.

    ``copy.deepcopy`` of a parametrized module reuses the class ``parametrize`` injected for it, and
    ``remove_parametrizations`` deletes the ``weight`` property from that class: pruning one copy
    would break the original and every other copy. A same-named, same-based copy of the class
    takes the deletion instead.
    """
    cls = type(module)
    namespace = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, namespace)
