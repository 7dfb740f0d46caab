"""Run one pruning method on a network: the entry point shared by the search, `dvolver prune` and the benchmark.

``prune(model, dataset, method, budget, options, training, seed, device)`` prepares the network for the
method, trains it (the masks, the reparametrized weights, or the sub-networks) for ``training.epochs``
epochs with the spec's batch size and precision, and the spec's schedule except joint pruning, whose
stages run at the paper's constant learning rates; it returns the final network as plain modules: pruned
weights exactly zero for the unstructured methods, a physically narrower network for joint pruning.

``budget`` is the fraction kept, in (0, 1]: of the weights for edge-popup (per layer), reparam and magnitude
(global); for joint pruning, the centre of the keep ratios its policy chooses from (0.725 gives the paper's
0.60 ... 0.85), each the share of a layer's softmax(alpha) mass its kept filters must reach: near the share of
its filters while alpha is near uniform, fewer filters once alpha has spread. ASLP and Supermask learn their
sparsity and take no budget.

Every method's own hyperparameters have the defaults of its paper (METHODS.md) and can be changed through its
options model; ``check`` rejects what a method cannot do before anything is trained.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from ..data import Dataset
from ..training import (
    TrainResult,
    autocast_dtype,
    fit,
    measure,
    recalibrate_batchnorm,
    training_split,
    use_augmentation,
    use_channels_last,
)
from ..training_spec import TrainingSpec
from . import edgepopup, gumbel, joint, magnitude, reparam, supermask
from .applicable import check
from .masked import extract
from .registry import (
    METHODS,
    ASLPOptions,
    EdgePopupOptions,
    JointOptions,
    MagnitudeOptions,
    Method,
    PruningError,
    ReparamOptions,
    SupermaskOptions,
    check_budget,
    method,
    parse_options,
)

# 0.725 +- these offsets is the paper's ratio set 0.60, 0.65, ..., 0.85.
_JOINT_OFFSETS = (-0.125, -0.075, -0.025, 0.025, 0.075, 0.125)


log = logging.getLogger(__name__)

@dataclass
class Pruned:
    """A pruned network and what was measured on it."""

    model: nn.Module  # plain modules, eval mode, on the CPU
    result: TrainResult
    method: str
    structured: bool
    kept_fraction: float  # of the prunable weights (unstructured) or of all parameters (structured)
    layers: dict[str, float]  # per pruned layer: fraction of its weights (or filters) kept
    keep: dict[str, list[int]] | None = None  # structured: group root conv -> kept output channels
    details: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "structured": self.structured,
                               "kept_fraction": self.kept_fraction, "layers": self.layers} | self.details
        if self.keep is not None:
            out["keep"] = self.keep
        return out


def joint_ratios(budget: float) -> tuple[float, ...]:
    """The keep ratios joint pruning's policy chooses from, centred on ``budget``."""
    return tuple(sorted({min(1.0, max(0.05, round(budget + d, 4))) for d in _JOINT_OFFSETS}))


def joint_schedule(epochs: int, options: JointOptions) -> tuple[int, tuple[int, ...], int]:
    """(iterations, epochs per iteration for each coarse-to-fine stage, fine-tune epochs) within ``epochs``.

    The paper's stages train 40, 30 then 10 epochs per iteration; here the stages keep roughly its 4 : 3 : 1
    proportions, scaled so that the iterations and the fine-tune together take about ``epochs`` epochs: a
    pruned network and a dense one trained ``epochs`` epochs then cost the same training time.
    """
    finetune = round(epochs * options.finetune_fraction)
    search = max(1, epochs - finetune)
    iterations = min(options.iterations, search)
    weights = (4, 3, 1)[: min(3, iterations)]
    per_stage = iterations / len(weights)
    scale = search / (per_stage * sum(weights))
    return iterations, tuple(max(1, round(w * scale)) for w in weights), finetune


def prune(model: nn.Module, dataset: Dataset, name: str, budget: float | None, options: BaseModel | dict | None,
          training: TrainingSpec, seed: int, device: torch.device) -> Pruned:
    """Prune ``model`` (modified in place, built and seeded by the caller) on ``dataset``; see the module doc."""
    info = method(name)
    opts = options if isinstance(options, BaseModel) else parse_options(name, options)
    if info.takes_budget and budget is None:
        raise PruningError(f"{name} needs a budget: the fraction of weights to keep, in (0, 1]")
    check(name, model, budget if info.takes_budget else None)
    start = time.perf_counter()
    run = globals()[info.runner] if isinstance(info.runner, str) else info.runner
    return run(model, dataset, budget, opts, training, seed, device, start)


# ---------------------------------------------------------------------------------------------- methods


def run_aslp(model, dataset, budget, opts: ASLPOptions, training, seed, device, start) -> Pruned:
    net = gumbel.prepare(model, signed_constant=opts.signed_constant, smart_rescale=opts.smart_rescale, seed=seed)
    groups = gumbel.parameter_groups(net, mask_lr=opts.mask_lr, scale_lr=opts.scale_lr)
    return _learn_masks("aslp", net, groups, dataset, training, seed, device, start)


def run_edgepopup(model, dataset, budget, opts: EdgePopupOptions, training, seed, device, start) -> Pruned:
    net = edgepopup.prepare(model, keep=budget, signed_constant=opts.signed_constant, seed=seed)
    groups = edgepopup.parameter_groups(net, lr=opts.lr, weight_decay=opts.weight_decay)
    return _learn_masks("edgepopup", net, groups, dataset, training, seed, device, start)


def run_supermask(model, dataset, budget, opts: SupermaskOptions, training, seed, device, start) -> Pruned:
    net = supermask.prepare(model, dynamic_rescale=opts.dynamic_rescale, signed_constant=opts.signed_constant,
                            seed=seed)
    return _learn_masks("supermask", net, supermask.parameter_groups(net, lr=opts.lr), dataset, training, seed,
                        device, start)


def _learn_masks(name: str, net: nn.Module, groups, dataset, training, seed, device, start) -> Pruned:
    """ASLP, edge-popup and Supermask: masks learned over the same frozen random weights for one seed."""
    fitted = fit(net, dataset, training, seed, device, param_groups=groups, keep_best=True)
    final = extract(net)
    details = {"best_epoch": fitted.best_epoch, "steps": fitted.steps, "stopped_early": fitted.stopped_early}
    return finish_unstructured(final, name, dataset, training, device, fitted.train_loss, start, details,
                                epochs=fitted.epochs)


def run_reparam(model, dataset, budget, opts: ReparamOptions, training, seed, device, start) -> Pruned:
    net = reparam.prepare(model)
    t_params = reparam.t_parameters(net)
    t_ids = {id(p) for p in t_params}
    groups = [{"params": [p for p in net.parameters() if id(p) not in t_ids]},
              {"params": t_params, "lr": opts.t_lr, "weight_decay": 0.0}]
    net.to(device)
    loss = fit(net, dataset, training, seed, device, param_groups=groups,
               penalty=lambda: reparam.budget_loss(net, budget, lam=opts.lam)).train_loss
    kept = reparam.kept_fraction(net)
    details = {"kept_before_cut": kept, "temperatures": reparam.temperatures(net)}
    if kept > 1.5 * budget:
        # The budget loss had not brought the network near the budget, so the cut removes weights it
        # still uses: with too few steps the cut network can fall to chance accuracy.
        log.warning("reparam kept %.1f %% of the weights when cut to %.1f %%: train longer (more epochs or data) "
                    "or raise its lam for a network that reaches its budget before the cut", 100 * kept,
                    100 * budget)
    reparam.hard_prune(net, budget)
    return finish_unstructured(net, "reparam", dataset, training, device, loss, start, details)


def run_magnitude(model, dataset, budget, opts: MagnitudeOptions, training, seed, device, start) -> Pruned:
    fitted = fit(model, dataset, training, seed, device)
    dense = measure(model, dataset, training, device, fitted.train_loss, fitted.epochs, start)
    return magnitude_prune_trained(model, dataset, budget, opts, training, seed, device, dense, start)


def magnitude_prune_trained(model: nn.Module, dataset: Dataset, budget: float, opts: MagnitudeOptions,
                            training: TrainingSpec, seed: int, device: torch.device, dense: TrainResult,
                            start: float | None = None) -> Pruned:
    """Magnitude pruning of a network already trained (``dense`` measured on it): cut, then fine-tune if the
    options say so. ``model`` is modified in place; pass a copy to prune one trained network several ways."""
    check_budget(budget)
    start = time.perf_counter() if start is None else start
    if opts.scope == "global":
        masks = magnitude.global_magnitude_masks(model, budget)
    else:
        masks = magnitude.layerwise_magnitude_masks(model, budget)
    handle = magnitude.apply_masks(model, masks)
    loss, epochs = dense.train_loss, dense.epochs
    if opts.finetune_epochs:
        loss = fit(model, dataset, training, seed + 1, device, epochs=opts.finetune_epochs,
                   lr_scale=opts.finetune_lr_scale).train_loss
        epochs += opts.finetune_epochs
    handle.remove()
    return finish_unstructured(model, "magnitude", dataset, training, device, loss, start,
                                {"dense_val_acc": dense.val_acc, "dense_test_acc": dense.test_acc,
                                 "scope": opts.scope, "finetune_epochs": opts.finetune_epochs}, epochs=epochs)


def run_joint(model, dataset, budget, opts: JointOptions, training, seed, device, start) -> Pruned:
    # joint.search_and_train has its own training loop (and keeps the target network on the CPU); its
    # sub-networks train on ``device``, augmented, laid out, clipped and in the precision the spec says,
    # with fit's divergence check, but at the paper's constant learning rate per coarse-to-fine stage
    # (training.lr x 1, 0.2, 0.1; fine-tuning at x 0.1), not the spec's schedule.
    iterations, stage_epochs, finetune = joint_schedule(training.epochs, opts)
    channels_last = use_channels_last(training, device)
    cfg = joint.JointConfig(
        ratios=joint_ratios(budget), gumbel_scale=opts.gumbel_scale, iterations=iterations, epochs=stage_epochs,
        lrs=tuple(training.lr * f for f in (1.0, 0.2, 0.1)[: len(stage_epochs)]), momentum=training.momentum,
        weight_decay=training.weight_decay, batch_size=training.batch_size, size_penalty=opts.size_penalty,
        finetune_epochs=finetune, finetune_lr=training.lr * 0.1, seed=seed, device=device,
        augment=use_augmentation(training, dataset.input_shape), channels_last=channels_last,
        grad_clip=training.grad_clip, amp=autocast_dtype(training, device))
    x_train, y_train = training_split(dataset, training)
    dense_params = sum(p.numel() for p in model.parameters())
    result = joint.search_and_train(model.cpu(), (x_train, y_train), (dataset.x_val, dataset.y_val),
                                    dataset.x_train[:1], cfg)
    final = result.model
    recalibrate_batchnorm(final, x_train, device, channels_last, training.batch_size)
    epochs = sum(h["epochs"] for h in result.history) + finetune
    measured = measure(final, dataset, training, device, result.history[-1]["train_loss"], epochs, start)
    full = {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    layers = {root: len(kept) / full[root] for root, kept in result.keep.items()}
    params = sum(p.numel() for p in final.parameters())
    return Pruned(final.cpu().eval(), measured, "joint", True, params / dense_params, layers, result.keep,
                  {"ratios": result.ratios, "iterations": iterations, "stage_epochs": list(stage_epochs),
                   "finetune_epochs": finetune})


def finish_unstructured(final: nn.Module, method: str, dataset: Dataset, training: TrainingSpec, device, loss: float,
                        start: float, details: dict[str, Any] | None = None, epochs: int | None = None) -> Pruned:
    """The last step of every unstructured method: BatchNorm re-estimated, the masked network measured,
    and what each layer kept."""
    # Removing weights shifts every activation after them, so BatchNorm statistics gathered before the cut
    # no longer fit; re-estimating them runs forward passes only and changes no weight.
    recalibrate_batchnorm(final, training_split(dataset, training)[0], device, use_channels_last(training, device),
                          training.batch_size)
    result = measure(final, dataset, training, device, loss, epochs or training.epochs, start)
    counts = magnitude.kept_counts(final)
    totals = {name: m.weight.numel() for name, m in magnitude.prunable_layers(final)}
    layers = {name: counts[name] / totals[name] for name in totals}
    kept = sum(counts.values()) / sum(totals.values())
    return Pruned(final.cpu().eval(), result, method, False, kept, layers, None, details or {})


__all__ = ["METHODS", "ASLPOptions", "EdgePopupOptions", "JointOptions", "MagnitudeOptions", "Method", "Pruned",
           "PruningError", "ReparamOptions", "SupermaskOptions", "check", "check_budget", "joint_ratios",
           "finish_unstructured", "joint_schedule", "magnitude_prune_trained", "method", "parse_options", "prune"]
