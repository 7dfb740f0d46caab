"""Magnitude pruning: the baseline of budget-aware reparametrization (METHODS.md section 3).

Masks are boolean tensors shaped like a layer's weight, keyed by the layer's qualified module name
(``dict(model.named_modules())`` keys). Only ``Conv2d`` and ``Linear`` weights are pruned; biases
and normalisation parameters are left whole, as in the papers the methods come from.

Counts are exact: a keep fraction ``f`` over ``n`` weights keeps ``round(f * n)`` of them (Python's
``round``), whatever ties there are among the scores. Ties go to the weight that comes first in
``named_modules`` order, then in the flattened weight, so the same weights always give the same mask.

Fine-tuning is optional and the caller's: :func:`apply_masks` zeroes the pruned weights, masks their
gradients and, when given the optimizer, re-zeroes them after every step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle

# The layer types whose weights the unstructured pruning methods act on.
PRUNABLE: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)

# Name of the (non-persistent) buffer that records a pruned layer's mask on the module itself, so the
# record travels with the model (and with ``.to(device)``) without changing its ``state_dict`` keys.
MASK_BUFFER = "weight_mask"


def prunable_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs whose weights are pruned, in ``named_modules`` order."""
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE):
            yield name, module


def keep_count(keep_fraction: float, total: int) -> int:
    """How many of ``total`` weights a keep fraction keeps: ``round(keep_fraction * total)``."""
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep fraction must lie in [0, 1], got {keep_fraction}")
    return int(round(keep_fraction * total))


def topk_masks(scores: Mapping[str, torch.Tensor], keep: int,
               tiebreak: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Keep exactly the ``keep`` highest scores across all tensors of ``scores`` together.

    Ties on the score are broken by ``tiebreak`` (higher kept first) when given, then by position:
    the mapping's order, then the flattened index. Two stable sorts give that lexicographic order
    without building composite keys that could lose precision.
    """
    names = list(scores)
    flat = torch.cat([scores[n].detach().reshape(-1) for n in names]) if names else torch.zeros(0)
    if not 0 <= keep <= flat.numel():
        raise ValueError(f"cannot keep {keep} of {flat.numel()} weights")
    order = torch.arange(flat.numel(), device=flat.device)
    if tiebreak is not None:
        second = torch.cat([tiebreak[n].detach().reshape(-1).to(flat.device) for n in names])
        order = torch.sort(second, descending=True, stable=True).indices
    order = order[torch.sort(flat[order], descending=True, stable=True).indices]
    kept = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    kept[order[:keep]] = True
    masks: dict[str, torch.Tensor] = {}
    start = 0
    for n in names:
        size = scores[n].numel()
        masks[n] = kept[start:start + size].reshape(scores[n].shape).clone()  # not views of one buffer
        start += size
    return masks


def global_magnitude_masks(model: nn.Module, keep_fraction: float) -> dict[str, torch.Tensor]:
    """One ranking of ``|w|`` over all prunable layers; exactly ``round(keep_fraction * total)`` kept."""
    scores = {name: module.weight.detach().abs() for name, module in prunable_layers(model)}
    total = sum(s.numel() for s in scores.values())
    return topk_masks(scores, keep_count(keep_fraction, total))


def layerwise_magnitude_masks(model: nn.Module,
                              keep_fraction: float | Mapping[str, float]) -> dict[str, torch.Tensor]:
    """Each layer keeps its own ``round(f_l * n_l)`` largest ``|w|``.

    ``keep_fraction`` is one fraction for every layer or a fraction per layer name (every prunable
    layer must be named). The total kept is the sum of the per-layer counts, which can differ by a
    few weights from ``round(f * total)``: use :func:`global_magnitude_masks` for an exact total.
    """
    masks: dict[str, torch.Tensor] = {}
    for name, module in prunable_layers(model):
        if isinstance(keep_fraction, Mapping):
            if name not in keep_fraction:
                raise ValueError(f"no keep fraction given for layer {name!r}")
            fraction = keep_fraction[name]
        else:
            fraction = keep_fraction
        score = module.weight.detach().abs()
        masks.update(topk_masks({name: score}, keep_count(fraction, score.numel())))
    return masks


@dataclass
class MaskHandle:
    """What :func:`apply_masks` installed; ``remove()`` takes the hooks off (the zeros stay)."""

    handles: list[RemovableHandle] = field(default_factory=list)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor],
                optimizer: torch.optim.Optimizer | None = None) -> MaskHandle:
    """Zero the pruned weights now and keep them zero while the model is fine-tuned.

    Two mechanisms, because each alone has a gap:

    * a gradient hook multiplies each weight's gradient by its mask, so pruned weights get no gradient
      and the optimizer's per-weight state (momentum, Adam moments) stays zero for them. That alone
      keeps them at exactly zero with SGD, momentum, weight decay, Adam and AdamW started after the cut;
    * with ``optimizer`` given, a step post-hook also re-zeroes them after every ``optimizer.step()``,
      which covers an optimizer whose state was built before the cut (momentum from dense training
      would otherwise move the pruned weights).

    The mask is recorded on each module as the non-persistent buffer ``weight_mask``, which the hooks
    read, so the model can still be moved with ``.to(device)``. For plain modules only (a
    reparametrized model is frozen by ``reparam.hard_prune`` first). Without fine-tuning none of this
    is needed beyond the zeroing; call ``remove()`` on the handle when done.
    """
    modules = dict(model.named_modules())
    handle = MaskHandle()
    masked: list[nn.Module] = []
    with torch.no_grad():
        for name, mask in masks.items():
            module = modules[name]
            if parametrize.is_parametrized(module, "weight"):
                raise ValueError(f"layer {name!r} has a weight parametrization; freeze the model before masking it")
            weight = module.weight
            if mask.shape != weight.shape:
                raise ValueError(f"mask for {name!r} has shape {tuple(mask.shape)}, weight {tuple(weight.shape)}")
            module.register_buffer(MASK_BUFFER, mask.to(device=weight.device, dtype=torch.bool), persistent=False)
            weight.mul_(getattr(module, MASK_BUFFER))
            handle.handles.append(weight.register_hook(_grad_masker(module)))
            masked.append(module)
    if optimizer is not None:
        def rezero(_optimizer: torch.optim.Optimizer, _args: object, _kwargs: object) -> None:
            with torch.no_grad():
                for module in masked:
                    module.weight.mul_(getattr(module, MASK_BUFFER))

        handle.handles.append(optimizer.register_step_post_hook(rezero))
    return handle


def _grad_masker(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad * getattr(module, MASK_BUFFER)

    return hook


def kept_count(module: nn.Module) -> int:
    """A plain layer's kept weights: its recorded mask's count if it has one, else its non-zero weights."""
    mask = getattr(module, MASK_BUFFER, None)
    source = mask if isinstance(mask, torch.Tensor) else module.weight.detach()
    return int(torch.count_nonzero(source))


def kept_counts(model: nn.Module) -> dict[str, int]:
    """:func:`kept_count` of every prunable layer."""
    return {name: kept_count(module) for name, module in prunable_layers(model)}
