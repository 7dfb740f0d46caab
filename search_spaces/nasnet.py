"""Dvolver's NASNet-A-style space: a normal and a reduction cell of B blocks each (METHODS.md s.1).

Genome, per cell: [b0.in0, b0.op0, b0.in1, b0.op1, ..., b{B-1}.op1, extra_concat], normal cell
first. States 0 and 1 are the outputs of cells k-2 and k-1; block b's output is state b + 2 and
its inputs come from states 0 .. b + 1. The cell outputs the concatenation of every state no block
reads plus the states forced in by `extra_concat`, a bitmask over states 0 .. B.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .base import Genome, GenomeCodec, mask_to_set, set_to_mask
from .ops import FactorizedReduce, ReLUConvBN, SepConv, avg_pool, half_size, make_stem, max_pool, stem_output_size
from .units import Inventory, Shape, UnitKey, add_unit, cat_unit, stem_unit

Unit = tuple[nn.Module, tuple[Shape, ...]]

OPS = ("sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "avg_pool_3x3", "max_pool_3x3", "identity")
_SHORT = {"sep3": 0, "sep5": 1, "sep7": 2, "avg": 3, "max": 4, "id": 5}


class NASNetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cells_per_stage: int = Field(1, ge=1, le=12, description="N: normal cells in each of the 3 stages")
    filters: int = Field(8, ge=2, le=512, description="F: filters of the first stage, doubled at each reduction")
    blocks: int = Field(5, ge=1, le=8, description="B: blocks per cell")
    stem_multiplier: int = Field(3, ge=1, le=8)


@dataclass(frozen=True)
class Cell:
    """One cell's genes: B blocks of (in0, op0, in1, op1) and the extra_concat bitmask."""

    blocks: tuple[tuple[int, int, int, int], ...]
    extra: int

    @property
    def num_states(self) -> int:
        return len(self.blocks) + 2

    def used(self) -> set[int]:
        return {s for in0, _, in1, _ in self.blocks for s in (in0, in1)}

    def concat(self) -> list[int]:
        """The states the cell outputs, in state order."""
        forced = set(mask_to_set(self.extra))
        return [s for s in range(self.num_states) if s not in self.used() or s in forced]

    def genes(self) -> list[int]:
        return [g for block in self.blocks for g in block] + [self.extra]


def split(genome: Genome, blocks: int) -> tuple[Cell, Cell]:
    width = 4 * blocks + 1

    def cell(genes: Genome) -> Cell:
        body = tuple(tuple(int(g) for g in genes[4 * b : 4 * b + 4]) for b in range(blocks))
        return Cell(body, int(genes[4 * blocks]))  # type: ignore[arg-type]

    return cell(genome[:width]), cell(genome[width : 2 * width])


def join(normal: Cell, reduction: Cell) -> Genome:
    return tuple(normal.genes() + reduction.genes())


@lru_cache(maxsize=65536)
def canonical_cell(cell: Cell) -> Cell:
    """One form per distinct cell: the smallest genome among all ways of writing it.

    Three symmetries: the two inputs of a block can be swapped (add commutes); blocks can be
    numbered in any order that keeps each block after its inputs; and an extra_concat state that
    no block reads is output anyway, so forcing it changes nothing. Trying every valid numbering
    (at most B! = 120) makes the form exact even when two blocks compute the same thing.
    """
    best: Cell | None = None
    n = len(cell.blocks)
    for order in itertools.permutations(range(n)):
        new_index = {0: 0, 1: 1} | {old + 2: new + 2 for new, old in enumerate(order)}
        if any(new_index[s] >= new + 2 for new, old in enumerate(order) for s in cell.blocks[old][::2]):
            continue
        blocks = []
        for old in order:
            in0, op0, in1, op1 = cell.blocks[old]
            (a, oa), (b, ob) = sorted([(new_index[in0], op0), (new_index[in1], op1)])
            blocks.append((a, oa, b, ob))
        renumbered = Cell(tuple(blocks), 0)
        forced = {new_index[s] for s in mask_to_set(cell.extra)} & renumbered.used()
        candidate = Cell(renumbered.blocks, set_to_mask(forced))
        if best is None or candidate.genes() < best.genes():
            best = candidate
    assert best is not None
    return best


def parse_cell(text: str) -> Cell:
    """Reads METHODS.md's notation: `0 sep5, 1 sep3 | 1 sep5, 1 sep3 | ... | extra [1]`."""
    parts = [p.strip() for p in text.split("|")]
    extra: list[int] = []
    if parts and parts[-1].startswith("extra"):
        inside = parts.pop().removeprefix("extra").strip().strip("[]")
        extra = [int(s) for s in inside.split(",") if s.strip()]
    blocks = []
    for part in parts:
        pair = []
        for item in part.split(","):
            state, op = item.split()
            pair += [int(state), _SHORT[op]]
        blocks.append(tuple(pair))
    return Cell(tuple(blocks), set_to_mask(extra))  # type: ignore[arg-type]


NASNET_A: Genome = join(
    parse_cell("0 sep5, 1 sep3 | 1 sep5, 1 sep3 | 0 avg, 1 id | 1 avg, 1 avg | 0 sep3, 0 id | extra [1]"),
    parse_cell("0 sep5, 1 sep7 | 0 max, 1 sep7 | 0 avg, 1 sep5 | 3 id, 2 avg | 2 sep3, 0 max | extra [3]"),
)


def _make_op(index: int, channels: int, stride: int) -> nn.Module:
    name = OPS[index]
    if name.startswith("sep_conv"):
        return SepConv(channels, channels, int(name[-1]), stride)
    if name == "avg_pool_3x3":
        return avg_pool(stride)
    if name == "max_pool_3x3":
        return max_pool(stride)
    return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels)


def _make_pre0(c_in: int, channels: int, reduction_prev: bool) -> nn.Module:
    return FactorizedReduce(c_in, channels) if reduction_prev else ReLUConvBN(c_in, channels, 1)


def _make_pre1(c_in: int, channels: int) -> nn.Module:
    return ReLUConvBN(c_in, channels, 1)


def _make_resize(channels: int) -> nn.Module:
    return FactorizedReduce(channels, channels)


def _make_head(channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def _make_aux_head(channels: int, size: tuple[int, int], num_classes: int) -> nn.Sequential:
    """NASNet's auxiliary classifier (as in its TensorFlow code, which Dvolver ran, and in DARTS): ReLU, 5x5
    average pool at stride 3, 1x1 conv to 128, a conv to 768 over the whole remaining map, then a linear
    layer. A map smaller than the pool (8x8 digits leave 4x4 there) goes to the convs unpooled."""
    pool: nn.Module = nn.AvgPool2d(5, stride=3) if min(size) >= 5 else nn.Identity()
    pooled = ((size[0] - 5) // 3 + 1, (size[1] - 5) // 3 + 1) if min(size) >= 5 else size
    return nn.Sequential(
        nn.ReLU(), pool,
        nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
        nn.Conv2d(128, 768, pooled, bias=False), nn.BatchNorm2d(768), nn.ReLU(),
        nn.Flatten(), nn.Linear(768, num_classes),
    )


def drop_path(x: torch.Tensor, rate: float) -> torch.Tensor:
    """Zeroes each sample's whole tensor with probability ``rate`` and scales the kept ones by 1 / (1 - rate),
    so that the expected output is unchanged (NASNet's and DARTS's drop-path). Draws from torch's global
    generator of ``x``'s device, which the final training seeds and checkpoints."""
    keep = 1.0 - rate
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


def _stride(reduction: bool, state: int) -> int:
    return 2 if reduction and state < 2 else 1


class CellModule(nn.Module):
    def __init__(self, cell: Cell, c_prev_prev: int, c_prev: int, channels: int, reduction: bool,
                 reduction_prev: bool) -> None:
        super().__init__()
        self.cell = cell
        self.pre0 = _make_pre0(c_prev_prev, channels, reduction_prev)
        self.pre1 = _make_pre1(c_prev, channels)
        ops = []
        for in0, op0, in1, op1 in cell.blocks:
            for state, op in ((in0, op0), (in1, op1)):
                ops.append(_make_op(op, channels, _stride(reduction, state)))
        self.ops = nn.ModuleList(ops)
        self.concat = cell.concat()
        # Cell inputs that a reduction cell outputs directly must be brought down to its size.
        self.resize = nn.ModuleDict({str(s): _make_resize(channels) for s in self.concat if reduction and s < 2})
        self.out_channels = channels * len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_rate: float = 0.0) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for b, (in0, _, in1, _) in enumerate(self.cell.blocks):
            states.append(self._path(2 * b, states[in0], drop_rate) + self._path(2 * b + 1, states[in1], drop_rate))
        outs = [self.resize[str(s)](states[s]) if str(s) in self.resize else states[s] for s in self.concat]
        return torch.cat(outs, dim=1)

    def _path(self, index: int, x: torch.Tensor, drop_rate: float) -> torch.Tensor:
        """One op of a block; with ``drop_rate``, dropped per sample. An identity is never dropped: dropping
        it would only drop the state it passes on, as NASNet and DARTS reason."""
        op = self.ops[index]
        y = op(x)
        return drop_path(y, drop_rate) if drop_rate > 0 and not isinstance(op, nn.Identity) else y


@dataclass(frozen=True)
class CellPlan:
    """One cell of a network: what its CellModule is built from, and the (H, W) of its inputs."""

    cell: Cell
    c_prev_prev: int
    c_prev: int
    channels: int
    reduction: bool
    reduction_prev: bool
    size_prev_prev: tuple[int, int]  # of s0, the output of cell k-2 (twice size_prev after a reduction)
    size_prev: tuple[int, int]  # of s1, and of every state before the cell's stride-2 ops
    concat: tuple[int, ...]

    @property
    def out_channels(self) -> int:
        return self.channels * len(self.concat)

    @property
    def size(self) -> tuple[int, int]:
        return half_size(self.size_prev) if self.reduction else self.size_prev


@dataclass(frozen=True)
class NetworkPlan:
    """The stem's channels, every cell in order, and what reaches the head: the network's shape,
    which both the network and its op inventory are made from."""

    stem_channels: int
    cells: tuple[CellPlan, ...]
    head_channels: int
    head_size: tuple[int, int]


def network_plan(normal: Cell, reduction: Cell, options: NASNetOptions,
                 input_shape: tuple[int, int, int]) -> NetworkPlan:
    """Stem, then 3 stages of N normal cells with a reduction cell between stages."""
    _, height, width = input_shape
    channels = options.filters
    stem_channels = options.stem_multiplier * channels
    size = stem_output_size(height, width)
    c_pp, c_p, size_pp, size_p = stem_channels, stem_channels, size, size
    cells: list[CellPlan] = []
    reduction_prev = False
    concats = {False: tuple(normal.concat()), True: tuple(reduction.concat())}
    for stage in range(3):
        kinds = [False] * options.cells_per_stage
        if stage > 0:
            channels *= 2
            kinds.insert(0, True)
        for is_reduction in kinds:
            cell = reduction if is_reduction else normal
            plan = CellPlan(cell, c_pp, c_p, channels, is_reduction, reduction_prev, size_pp, size_p,
                            concats[is_reduction])
            cells.append(plan)
            c_pp, c_p, size_pp, size_p, reduction_prev = c_p, plan.out_channels, size_p, plan.size, is_reduction
    return NetworkPlan(stem_channels, tuple(cells), c_p, size_p)


class NASNetwork(nn.Module):
    """Stem, then 3 stages of N normal cells with a reduction cell between stages (`network_plan`).

    Two regularisers for final training, both off unless asked, so a search's network is unchanged:
    ``drop_path_rate``, which the trainer sets as training goes, drops block ops per sample in training
    mode; ``aux_head`` adds NASNet's auxiliary classifier on the last cell before the second reduction,
    whose logits ``forward`` returns beside the network's, as ``(logits, aux_logits)``, in training mode
    only. In eval mode the network computes, and exports, its logits alone."""

    def __init__(self, genome: Genome, options: NASNetOptions, input_shape: tuple[int, int, int],
                 num_classes: int, aux_head: bool = False) -> None:
        super().__init__()
        plan = network_plan(*split(genome, options.blocks), options, input_shape)
        in_channels, height, width = input_shape
        self.stem = make_stem(in_channels, plan.stem_channels, max(height, width))
        self.cells = nn.ModuleList(
            [CellModule(p.cell, p.c_prev_prev, p.c_prev, p.channels, p.reduction, p.reduction_prev) for p in plan.cells]
        )
        self.head = _make_head(plan.head_channels, num_classes)
        self.drop_path_rate = 0.0
        # NASNet's place for it: the cell before the second reduction, i.e. the end of the middle stage.
        self.aux_index = 2 * options.cells_per_stage
        aux = plan.cells[self.aux_index]
        # Built last, so the network's own weights draw the same initial values with or without it.
        self.aux_head = _make_aux_head(aux.out_channels, aux.size, num_classes) if aux_head else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        rate = self.drop_path_rate if self.training else 0.0
        aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, rate)
            if i == self.aux_index and self.aux_head is not None and self.training:
                aux = self.aux_head(s1)
        logits = self.head(s1)
        return logits if aux is None else (logits, aux)


# Unit builders (search_spaces.units): each builds one of the network's modules alone, with the
# function the network's builder calls, and gives the shapes of its inputs.
def _pre0_unit(c_in: int, channels: int, reduction_prev: bool, height: int, width: int) -> Unit:
    return _make_pre0(c_in, channels, reduction_prev), ((c_in, height, width),)


def _pre1_unit(c_in: int, channels: int, height: int, width: int) -> Unit:
    return _make_pre1(c_in, channels), ((c_in, height, width),)


def _op_unit(index: int, channels: int, stride: int, height: int, width: int) -> Unit:
    return _make_op(index, channels, stride), ((channels, height, width),)


def _resize_unit(channels: int, height: int, width: int) -> Unit:
    return _make_resize(channels), ((channels, height, width),)


def _head_unit(channels: int, height: int, width: int, num_classes: int) -> Unit:
    return _make_head(channels, num_classes), ((channels, height, width),)


def _cell_units(p: CellPlan) -> list[UnitKey]:
    """What CellModule.forward runs, in its order: pre0, pre1, each block's two ops and their sum,
    the resized inputs a reduction cell outputs, the concatenation."""
    channels = p.channels
    h, w = p.size_prev
    out_h, out_w = p.size
    keys: list[UnitKey] = [
        (_pre0_unit, p.c_prev_prev, channels, p.reduction_prev, *p.size_prev_prev),
        (_pre1_unit, p.c_prev, channels, h, w),
    ]
    add = (add_unit, channels, out_h, out_w)
    for in0, op0, in1, op1 in p.cell.blocks:
        for state, op in ((in0, op0), (in1, op1)):
            stride = _stride(p.reduction, state)
            keys.append((_op_unit, op, channels, stride, h, w) if stride == 2 else
                        (_op_unit, op, channels, 1, out_h, out_w))
        keys.append(add)
    if p.reduction:
        keys += [(_resize_unit, channels, h, w) for s in p.concat if s < 2]
    keys.append((cat_unit, len(p.concat), channels, out_h, out_w))
    return keys


class NASNetSpace:
    name = "nasnet"

    def __init__(self, options: NASNetOptions | None = None) -> None:
        self.options = options or NASNetOptions()

    def codec(self) -> GenomeCodec:
        lower: list[int] = []
        upper: list[int] = []
        B = self.options.blocks
        for _ in range(2):
            for b in range(B):
                lower += [0, 0, 0, 0]
                upper += [b + 1, len(OPS) - 1, b + 1, len(OPS) - 1]
            lower.append(0)
            upper.append((1 << (B + 1)) - 1)
        width = 4 * B + 1
        return GenomeCodec(tuple(lower), tuple(upper), frozenset({width - 1, 2 * width - 1}))

    def sample(self, rng: np.random.Generator) -> Genome:
        """Uniform per gene, with an empty extra_concat as in Dvolver: mutation finds extras."""
        codec = self.codec()
        return tuple(
            0 if i in codec.set_genes else int(rng.integers(lo, hi + 1))
            for i, (lo, hi) in enumerate(zip(codec.lower, codec.upper))
        )

    def canonical(self, genome: Genome) -> Genome:
        normal, reduction = split(genome, self.options.blocks)
        return join(canonical_cell(normal), canonical_cell(reduction))

    def build(self, genome: Genome, input_shape: tuple[int, int, int], num_classes: int,
              aux_head: bool = False) -> nn.Module:
        """``aux_head``: with NASNet's auxiliary classifier for training (NASNetwork)."""
        return NASNetwork(genome, self.options, input_shape, num_classes, aux_head)

    def op_inventory(self, genome: Genome, input_shape: tuple[int, int, int], num_classes: int) -> Inventory:
        """The units the genome's network runs, without building it (search_spaces.units)."""
        plan = network_plan(*split(genome, self.options.blocks), self.options, input_shape)
        in_channels, height, width = input_shape
        keys: list[UnitKey] = [(stem_unit, in_channels, plan.stem_channels, height, width)]
        for cell in plan.cells:
            keys += _cell_units(cell)
        keys.append((_head_unit, plan.head_channels, *plan.head_size, num_classes))
        return Counter(keys)

    def describe(self, genome: Genome) -> dict[str, Any]:
        normal, reduction = split(genome, self.options.blocks)
        return {"space": self.name, "normal": _describe_cell(normal), "reduction": _describe_cell(reduction)}


def _describe_cell(cell: Cell) -> dict[str, Any]:
    names = ["c_{k-2}", "c_{k-1}"] + [f"b{b}" for b in range(len(cell.blocks))]
    edges = [
        {"from": names[state], "to": names[b + 2], "op": OPS[op]}
        for b, (in0, op0, in1, op1) in enumerate(cell.blocks)
        for state, op in ((in0, op0), (in1, op1))
    ]
    edges += [{"from": names[s], "to": "out", "op": "concat"} for s in cell.concat()]
    return {"nodes": names + ["out"], "edges": edges, "extra_concat": mask_to_set(cell.extra)}
