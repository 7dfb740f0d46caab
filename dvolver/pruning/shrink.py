"""Physical filter removal: a structured pruning result as a smaller dense network.

A structured pruning method decides which output channels (filters) of each ``nn.Conv2d`` survive.
``shrink`` removes the others and narrows every layer that reads them (the BatchNorm after the conv,
the next conv's input channels, a Linear's input features after a flatten, the convs and BatchNorms
joined to it by a residual addition), so that ``dvolver.costs.count`` reports what the pruned
network really costs. ``channel_mask_model`` builds the same-size network with those channels
zeroed instead; the two compute the same function, which is how the result is checked.

Which layer depends on which channel is found by Torch-Pruning's ``DependencyGraph``: it traces one
forward pass through autograd, so it follows ``forward`` code it has never seen, not a list of
known backbones.

Residual coupling. Channels that meet in an addition (a ResNet stage's stem or entry shortcut and
every block's second conv) form one group: a channel can leave only if it leaves every member. A
``keep`` dict may name any one member of a group (the others follow it) or several with the same
set. Different sets for one group raise ``ValueError`` rather than being merged: a union would keep
channels the method asked to remove, so the network and its costs would no longer be the ones the
method chose. ``coupled_convs`` lists the groups so a method can choose one set per group.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

__all__ = ["KeepSpec", "channel_mask_model", "coupled_convs", "resolve_keep", "shrink"]

# Output-channel indices to keep, or a boolean mask over the conv's output channels.
KeepSpec = torch.Tensor | Iterable[int] | Iterable[bool]


@dataclass(frozen=True)
class _Group:
    """Convs whose output channels are tied; channel indices are given in the root conv's numbering."""

    root: str
    channels: int
    members: tuple[str, ...]
    to_root: dict[str, dict[int, int]]  # member -> {member channel: root channel}


def _graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no Conv2d layer to prune; structured pruning removes conv "
                         "filters, so give it a convolutional network")
    was_training = model.training
    # The graph is read from autograd, so the traced output needs a grad_fn even when every weight
    # is frozen (supermask-style methods freeze them): let the input carry the gradient instead.
    x = example_input.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            # The input goes in a tuple because the tracer first tries model(*example_inputs), which
            # would unpack a bare tensor along its batch dimension. The tracer runs in eval mode (so
            # BatchNorm running statistics stay untouched) and leaves the model there: restored below.
            return tp.DependencyGraph().build_dependency(model, example_inputs=(x,), verbose=False)
    finally:
        model.train(was_training)


def _groups(model: nn.Module, graph: tp.DependencyGraph) -> list[_Group]:
    convs = {module: name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)}
    groups: list[_Group] = []
    seen: set[str] = set()
    for module, name in convs.items():
        if name in seen or module not in graph.module2node:  # a conv the forward pass never calls stays as is
            continue
        full = graph.get_pruning_group(module, tp.prune_conv_out_channels, list(range(module.out_channels)))
        to_root: dict[str, dict[int, int]] = {}
        for item in full:
            member = convs.get(item.dep.target.module)
            if member is not None and graph.is_out_channel_pruning_fn(item.dep.handler):
                to_root[member] = dict(zip(item.idxs, item.root_idxs))
        members = tuple(n for n in convs.values() if n in to_root)  # model order
        seen.update(members)
        groups.append(_Group(root=name, channels=module.out_channels, members=members, to_root=to_root))
    return groups


def _indices(name: str, spec: KeepSpec, channels: int) -> set[int]:
    values = spec.detach().cpu().flatten().tolist() if isinstance(spec, torch.Tensor) else list(spec)
    is_mask = (spec.dtype == torch.bool) if isinstance(spec, torch.Tensor) else (
        bool(values) and all(isinstance(v, bool) for v in values))
    if is_mask:
        if len(values) != channels:
            raise ValueError(f"keep mask for {name!r} has {len(values)} entries but the layer has {channels} "
                             "output channels")
        values = [i for i, v in enumerate(values) if v]
    idx = [int(v) for v in values]
    if len(set(idx)) != len(idx):
        raise ValueError(f"keep indices for {name!r} repeat a channel: {sorted(idx)}")
    if any(i < 0 or i >= channels for i in idx):
        raise ValueError(f"keep indices for {name!r} must lie in [0, {channels}), got {sorted(idx)}")
    if not idx:
        raise ValueError(f"keep for {name!r} removes all {channels} output channels; keep at least one "
                         "(to drop a whole layer, change the architecture instead)")
    return set(idx)


def _root_keep(model: nn.Module, groups: list[_Group], keep: Mapping[str, KeepSpec]) -> dict[str, list[int]]:
    """Per group root: the root-numbered channels to keep, checked against every named member."""
    modules = dict(model.named_modules())
    group_of = {member: g for g in groups for member in g.members}
    for name in keep:
        if name not in group_of:
            kind = type(modules[name]).__name__ if name in modules else "no such module"
            convs = ", ".join(list(group_of)[:8])
            raise ValueError(f"keep names {name!r} ({kind}), which is not a prunable Conv2d of this model; "
                             f"its Conv2d layers are {convs}{', ...' if len(group_of) > 8 else ''}")
    chosen: dict[str, tuple[str, set[int]]] = {}
    for name, spec in keep.items():
        g = group_of[name]
        mapping = g.to_root[name]
        root_set = {mapping[i] for i in _indices(name, spec, modules[name].out_channels)}
        if g.root in chosen and chosen[g.root][1] != root_set:
            other = chosen[g.root][0]
            raise ValueError(f"{name!r} and {other!r} are joined by a residual addition, so their output channels "
                             f"are kept or removed together, but keep gives them different sets; give one set for "
                             f"the whole group {list(g.members)} (see coupled_convs)")
        chosen[g.root] = (name, root_set)
    return {root: sorted(s) for root, (_, s) in chosen.items()}


def _pruning_groups(model: nn.Module, keep: Mapping[str, KeepSpec], example_input: torch.Tensor
                    ) -> tuple[tp.DependencyGraph, list[tuple[nn.Module, list[int]]]]:
    graph = _graph(model, example_input)
    groups = _groups(model, graph)
    root_keep = _root_keep(model, groups, keep)
    modules = dict(model.named_modules())
    plan = []
    for g in groups:
        if g.root in root_keep:
            kept = set(root_keep[g.root])
            removed = [i for i in range(g.channels) if i not in kept]
            if removed:
                plan.append((modules[g.root], removed))
    return graph, plan


def coupled_convs(model: nn.Module, example_input: torch.Tensor) -> list[tuple[str, ...]]:
    """The model's Conv2d layers grouped by tied output channels (one tuple per group, in model order).

    A plain conv is a group of one; in a ResNet, the convs whose outputs meet in an addition share a
    group and take one keep set.
    """
    work = copy.deepcopy(model)  # the tracer leaves hooks' side effects and mode changes on what it traces
    return [g.members for g in _groups(work, _graph(work, example_input))]


def resolve_keep(model: nn.Module, keep: Mapping[str, KeepSpec], example_input: torch.Tensor
                 ) -> dict[str, list[int]]:
    """``keep`` completed over coupled convs and validated: every Conv2d that loses a channel, with the
    sorted output channels it keeps. Raises ``ValueError`` for what ``shrink`` would refuse."""
    work = copy.deepcopy(model)
    groups = _groups(work, _graph(work, example_input))
    root_keep = _root_keep(work, groups, keep)
    resolved: dict[str, list[int]] = {}
    for g in groups:
        if g.root in root_keep and len(root_keep[g.root]) < g.channels:
            kept = set(root_keep[g.root])
            for member in g.members:
                resolved[member] = sorted(i for i, r in g.to_root[member].items() if r in kept)
    return resolved


def shrink(model: nn.Module, keep: Mapping[str, KeepSpec], example_input: torch.Tensor) -> nn.Module:
    """A narrower copy of ``model`` that keeps only the given output channels of the named Conv2d layers.

    ``keep`` maps a Conv2d's name (as in ``model.named_modules()``) to the output-channel indices to
    keep, or to a boolean mask over its output channels; convs not named (and not coupled to a named
    one) keep every channel. Every layer that depends on a removed channel is narrowed with it.
    ``example_input`` is one batch the model accepts (batch 1 is enough); it is only traced.
    The copy computes what ``channel_mask_model(model, keep, example_input)`` computes, and keeps the
    model's train/eval mode, dtype, device and which parameters require grad. ``model`` is unchanged.
    """
    work = copy.deepcopy(model)
    requires_grad = {name: p.requires_grad for name, p in work.named_parameters()}
    graph, plan = _pruning_groups(work, keep, example_input)
    for root, removed in plan:
        # One group at a time, each from the module's current state: the groups share no output
        # channels, so pruning one leaves the root indices of the next valid.
        graph.get_pruning_group(root, tp.prune_conv_out_channels, removed).prune(record_history=False)
    # Torch-Pruning builds fresh Parameters, which always require grad; frozen weights stay frozen.
    for name, p in work.named_parameters():
        p.requires_grad_(requires_grad.get(name, True))
    return work


def channel_mask_model(model: nn.Module, keep: Mapping[str, KeepSpec], example_input: torch.Tensor) -> nn.Module:
    """A same-size copy of ``model`` in which every channel ``shrink`` would remove is exactly zero.

    A removed channel is zeroed where it is produced: the conv's filter and bias, and the scale and
    shift (and running mean) of every BatchNorm on it, so the channel is zero after the BatchNorm in
    train and eval mode alike and every layer that reads it gets nothing from it, as in the shrunk
    network.
    """
    work = copy.deepcopy(model)
    graph, plan = _pruning_groups(work, keep, example_input)
    with torch.no_grad():
        for root, removed in plan:
            for item in graph.get_pruning_group(root, tp.prune_conv_out_channels, removed):
                if not graph.is_out_channel_pruning_fn(item.dep.handler):
                    continue  # readers of the channel need nothing: their input is zero
                module, idx = item.dep.target.module, torch.as_tensor(item.idxs, dtype=torch.long)
                if isinstance(module, nn.Conv2d | nn.Linear):
                    module.weight[idx] = 0
                    if module.bias is not None:
                        module.bias[idx] = 0
                elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                    if module.affine:
                        module.weight[idx] = 0
                        module.bias[idx] = 0
                    if module.running_mean is not None:
                        module.running_mean[idx] = 0
                elif isinstance(module, nn.Module) and any(True for _ in module.parameters(recurse=False)):
                    raise ValueError(f"cannot mask channels of {type(module).__name__}: only Conv2d, Linear and "
                                     "BatchNorm layers may carry a pruned channel's values")
    return work
