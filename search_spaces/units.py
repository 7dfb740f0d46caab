"""A network as a bag of units: what a cost counter needs to know without building the network.

A space's `op_inventory(genome, input_shape, num_classes)` lists the units a genome's network is
made of, in the order its forward pass runs them, as a mapping unit key -> how many times the
network runs that unit. A unit key is a small tuple `(builder, *args)`: `builder(*args)` returns the
unit's module, built alone, and the shapes (C, H, W) of the inputs it takes in the network. Counting
each unit's module on inputs of those shapes and adding the counts up gives the network's count, as
long as the units cover all of it: every op module, and the glue its containers compute in their
forward passes (the additions and concatenations that join branches), which are units too (`Add`,
`Cat`). Unit builders are the functions the network builders themselves call, so a unit is the very
module the network holds.

A key names its builder by the function itself, so keys from different spaces cannot collide.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .ops import Zero, make_stem

Shape = tuple[int, ...]
UnitKey = tuple[Any, ...]  # (builder, *hashable args)
Inventory = Mapping[UnitKey, int]  # unit -> how many times the network runs it
UnitBuilder = Callable[..., tuple[nn.Module, tuple[Shape, ...]]]


def build_unit(key: UnitKey) -> tuple[nn.Module, tuple[Shape, ...]]:
    """The unit's module alone, and the shapes of its inputs (without the batch dimension)."""
    return key[0](*key[1:])


class Add(nn.Module):
    """The `a + b` that joins two branches."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class Cat(nn.Module):
    """The `torch.cat(..., dim=1)` of a cell's outputs."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(list(xs), dim=1)


def add_unit(channels: int, height: int, width: int) -> tuple[nn.Module, tuple[Shape, ...]]:
    return Add(), ((channels, height, width),) * 2


def cat_unit(n: int, channels: int, height: int, width: int) -> tuple[nn.Module, tuple[Shape, ...]]:
    return Cat(), ((channels, height, width),) * n


def zero_unit(channels: int, height: int, width: int) -> tuple[nn.Module, tuple[Shape, ...]]:
    return Zero(channels), ((channels, height, width),)


def stem_unit(c_in: int, c_out: int, height: int, width: int) -> tuple[nn.Module, tuple[Shape, ...]]:
    return make_stem(c_in, c_out, max(height, width)), ((c_in, height, width),)
