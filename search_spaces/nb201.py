"""The NAS-Bench-201 cell space: 4 nodes, 6 edges, 5 ops per edge (5^6 = 15,625 cells).

Two ways to score a cell: train the benchmark's network (`NB201Network`, which drops dead edges),
or look it up in a table of the benchmark's measured results (`NB201Table`, simulation mode).

Genes are the op codes of the edges in the benchmark's order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2:
0 none, 1 skip_connect, 2 nor_conv_1x1, 3 nor_conv_3x3, 4 avg_pool_3x3.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .base import Genome, GenomeCodec, uniform_sample
from .ops import ReLUConvBN, Zero, avg_pool, half_size, make_stem, stem_output_size
from .units import Inventory, Shape, UnitKey, add_unit, stem_unit, zero_unit

Unit = tuple[nn.Module, tuple[Shape, ...]]

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from), the benchmark's order
_TERM = {2: "c1", 3: "c3", 4: "ap"}


class NB201Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: int = Field(16, ge=1, le=512, description="C: channels of the first stage")
    cells_per_stage: int = Field(5, ge=1, le=20, description="N: cells in each of the 3 stages")
    table: str | None = Field(None, description="CSV of measured results: look cells up instead of training")


def arch_str(genome: Genome) -> str:
    nodes = []
    for to in (1, 2, 3):
        nodes.append("|" + "|".join(f"{OPS[genome[e]]}~{src}" for e, (t, src) in enumerate(EDGES) if t == to) + "|")
    return "+".join(nodes)


def parse_arch_str(text: str) -> Genome:
    ops: dict[tuple[int, int], int] = {}
    for to, node in enumerate(text.strip().split("+"), start=1):
        for item in filter(None, node.split("|")):
            name, src = item.split("~")
            ops[(to, int(src))] = OPS.index(name)
    if set(ops) != set(EDGES):
        raise ValueError(f"{text!r} is not a NAS-Bench-201 cell: it must name the 6 edges 1<-0 .. 3<-2")
    return tuple(ops[edge] for edge in EDGES)


def live_edges(genome: Genome) -> tuple[bool, ...]:
    """Edges that carry signal from the input to the output node; the rest are dead weight."""
    nonzero = {0: True}
    for to in (1, 2, 3):
        nonzero[to] = any(genome[e] and nonzero[src] for e, (t, src) in enumerate(EDGES) if t == to)
    reaches = {3: True}
    for node in (2, 1):
        reaches[node] = any(genome[e] and reaches[t] for e, (t, src) in enumerate(EDGES) if src == node)
    return tuple(bool(genome[e]) and nonzero[src] and reaches[t] for e, (t, src) in enumerate(EDGES))


def edge_terms(genome: Genome) -> dict[int, str]:
    """For each live edge with weights, what it computes, written over the cell input `x`.

    Sums are sorted multisets of terms and skip edges pass their source's terms through, so two
    cells get the same strings exactly when they compute the same function of the same parameters.
    """
    live = live_edges(genome)
    terms: dict[int, list[str]] = {0: ["x"]}
    named: dict[int, str] = {}

    def as_input(node: int) -> str:
        t = terms[node]
        return t[0] if len(t) == 1 else "sum(" + ",".join(t) + ")"

    for to in (1, 2, 3):
        acc: list[str] = []
        for e, (t, src) in enumerate(EDGES):
            if t != to or not live[e]:
                continue
            if genome[e] == 1:
                acc += terms[src]
            else:
                named[e] = f"{_TERM[genome[e]]}({as_input(src)})"
                acc.append(named[e])
        terms[to] = sorted(acc)
    named[-1] = as_input(3) if terms[3] else "zero"
    return named


def functional_key(genome: Genome) -> str:
    return edge_terms(genome)[-1]


ALL_GENOMES: tuple[Genome, ...] = tuple(itertools.product(range(len(OPS)), repeat=len(EDGES)))


@dataclass(frozen=True)
class TableRow:
    acc: float
    flops: float
    params: float
    curve: tuple[tuple[int, float], ...] = ()  # (epoch, accuracy in %), by epoch; () without curve columns


CURVE_PREFIX = "acc_epoch_"  # a learning-curve column: acc_epoch_<E>, accuracy in % after E epochs
_CURVE_COLUMN = re.compile(re.escape(CURVE_PREFIX) + r"([1-9][0-9]*)")


class NB201Table:
    """Measured results for every cell, read from a CSV (arch_str or op0..op5 columns).

    Accuracy comes from the first present of val_acc, valid_acc, accuracy, acc, test_acc (in %);
    FLOPs from `flops` or `flops_m` (millions) and params from `params` or `params_m`, in the
    table's own counting convention.

    A table may also hold a learning curve: columns `acc_epoch_<E>` (E a positive integer, no
    leading zeros), the validation accuracy in % after E epochs of the table's training, numeric
    in every row. `curve_epochs` lists the epochs present (sorted; empty without such columns),
    each row's `curve` pairs them with its accuracies, and `acc_at` reads one. The accuracy column
    above stays the full-fidelity accuracy, whatever the curve holds.
    """

    ACC_COLUMNS = ("val_acc", "valid_acc", "accuracy", "acc", "test_acc")  # preference order

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.fingerprint = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        with self.path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            self.acc_column = next((c for c in self.ACC_COLUMNS if c in columns), None)
            missing = []
            if self.acc_column is None:
                missing.append("an accuracy column (" + " or ".join(self.ACC_COLUMNS) + ")")
            flops_col = _scaled_column(columns, "flops")
            params_col = _scaled_column(columns, "params")
            if flops_col is None:
                missing.append("flops or flops_m")
            if params_col is None:
                missing.append("params or params_m")
            by_ops = all(f"op{i}" in columns for i in range(len(EDGES)))
            if not by_ops and "arch_str" not in columns:
                missing.append("arch_str or op0..op5")
            if missing:
                raise ValueError(f"{self.path} lacks the column(s) " + ", ".join(missing))
            curve_columns = _curve_columns(self.path, columns)
            self.curve_epochs: tuple[int, ...] = tuple(epoch for epoch, _ in curve_columns)
            self._epoch_index = {epoch: i for i, epoch in enumerate(self.curve_epochs)}
            self.rows: dict[Genome, TableRow] = {}
            for line, row in enumerate(reader, start=2):
                try:
                    genome = (tuple(int(row[f"op{i}"]) for i in range(len(EDGES))) if by_ops
                              else parse_arch_str(row["arch_str"]))
                    self.rows[genome] = TableRow(
                        float(row[self.acc_column]),  # type: ignore[index]
                        float(row[flops_col[0]]) * flops_col[1],  # type: ignore[index]
                        float(row[params_col[0]]) * params_col[1],  # type: ignore[index]
                        tuple((epoch, _curve_cell(row, column)) for epoch, column in curve_columns),
                    )
                except (ValueError, KeyError) as exc:
                    raise ValueError(f"{self.path} line {line}: {exc}") from exc
        if not self.rows:
            raise ValueError(f"{self.path} holds no rows")

    def lookup(self, genome: Genome) -> TableRow:
        try:
            return self.rows[tuple(genome)]
        except KeyError:
            raise KeyError(f"cell {arch_str(genome)} is not in {self.path}") from None

    def acc_at(self, genome: Genome, epochs: int) -> float:
        """The cell's accuracy (in %) after exactly `epochs` epochs, from the table's curve columns."""
        row = self.lookup(genome)
        try:
            return row.curve[self._epoch_index[epochs]][1]
        except (KeyError, TypeError):
            held = ", ".join(map(str, self.curve_epochs)) if self.curve_epochs else "none"
            raise KeyError(f"{self.path} has no accuracy after {epochs!r} epochs: its curve epochs are {held} "
                           f"(columns {CURVE_PREFIX}<E>)") from None


def _curve_columns(path: Path, columns: list[str]) -> list[tuple[int, str]]:
    """The learning-curve columns, as (epoch, column) sorted by epoch."""
    found = []
    for column in columns:
        if not column.startswith(CURVE_PREFIX):
            continue
        match = _CURVE_COLUMN.fullmatch(column)
        if match is None:
            raise ValueError(f"{path} column {column!r}: a curve column is {CURVE_PREFIX}<E>, E a positive "
                             "integer without leading zeros")
        found.append((int(match.group(1)), column))
    return sorted(found)


def _curve_cell(row: dict[str, str | None], column: str) -> float:
    """One curve cell as a number; the caller's error names the file and line."""
    text = row.get(column)  # None where the row is short
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"column {column}: {text!r} is not a number") from None


def _scaled_column(columns: list[str], name: str) -> tuple[str, float] | None:
    if name in columns:
        return name, 1.0
    if f"{name}_m" in columns:
        return f"{name}_m", 1e6
    return None


class NB201Cell(nn.Module):
    """The benchmark's cell, without its dead edges (they cannot change the output)."""

    def __init__(self, genome: Genome, channels: int) -> None:
        super().__init__()
        self.live = live_edges(genome)
        self.genome = tuple(genome)
        self.edges = nn.ModuleDict()
        for e, alive in enumerate(self.live):
            if alive:
                self.edges[str(e)] = _make_op(genome[e], channels)
        self.zero = Zero(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: list[torch.Tensor | None] = [x, None, None, None]
        for e, (to, src) in enumerate(EDGES):
            if self.live[e]:
                out = self.edges[str(e)](nodes[src])
                nodes[to] = out if nodes[to] is None else nodes[to] + out
        return nodes[3] if nodes[3] is not None else self.zero(x)


def _make_op(op: int, channels: int) -> nn.Module:
    if op == 1:
        return nn.Identity()
    if op == 4:
        return avg_pool(1)
    return ReLUConvBN(channels, channels, 1 if op == 2 else 3)


class ResidualReduce(nn.Module):
    """The benchmark's residual block between stages: stride 2, channels doubled."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2, ceil_mode=True), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


def _make_head(channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(channels, num_classes))


@dataclass(frozen=True)
class StagePlan:
    """One stage: a ResidualReduce from `reduce_from` channels first (None in the first stage), then
    N cells of `channels` at `size` (H, W); `size_in` is the size that reaches the stage."""

    reduce_from: int | None
    channels: int
    size_in: tuple[int, int]
    size: tuple[int, int]


def network_plan(options: NB201Options, input_shape: tuple[int, int, int]) -> tuple[StagePlan, ...]:
    """Stem, then 3 stages of N cells, with channels doubled and the size halved between stages."""
    channels = options.channels
    size = stem_output_size(*input_shape[1:])
    stages = [StagePlan(None, channels, size, size)]
    for _ in range(2):
        stages.append(StagePlan(channels, channels * 2, size, half_size(size)))
        channels, size = channels * 2, half_size(size)
    return tuple(stages)


class NB201Network(nn.Module):
    def __init__(self, genome: Genome, options: NB201Options, input_shape: tuple[int, int, int],
                 num_classes: int) -> None:
        super().__init__()
        self.stem = make_stem(input_shape[0], options.channels, max(input_shape[1:]))
        layers: list[nn.Module] = []
        stages = network_plan(options, input_shape)
        for stage in stages:
            if stage.reduce_from is not None:
                layers.append(ResidualReduce(stage.reduce_from, stage.channels))
            layers += [NB201Cell(genome, stage.channels) for _ in range(options.cells_per_stage)]
        self.cells = nn.Sequential(*layers)
        self.head = _make_head(stages[-1].channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.cells(self.stem(x)))


# Unit builders (search_spaces.units): each builds one of the network's modules alone, with the
# function the network's builder calls, and gives the shapes of its inputs.
def _edge_unit(op: int, channels: int, height: int, width: int) -> Unit:
    return _make_op(op, channels), ((channels, height, width),)


def _reduce_unit(c_in: int, c_out: int, height: int, width: int) -> Unit:
    # The whole block: its forward adds the two paths.
    return ResidualReduce(c_in, c_out), ((c_in, height, width),)


def _head_unit(channels: int, height: int, width: int, num_classes: int) -> Unit:
    return _make_head(channels, num_classes), ((channels, height, width),)


def _cell_units(genome: Genome, channels: int, height: int, width: int) -> list[UnitKey]:
    """What NB201Cell.forward runs, in its order: each live edge's op, a sum for each edge into a
    node that already holds one, and the zeros of a cell whose output is unreachable."""
    live = live_edges(genome)
    keys: list[UnitKey] = []
    reached: set[int] = set()
    for e, (to, _) in enumerate(EDGES):
        if live[e]:
            keys.append((_edge_unit, genome[e], channels, height, width))
            if to in reached:
                keys.append((add_unit, channels, height, width))
            reached.add(to)
    if 3 not in reached:
        keys.append((zero_unit, channels, height, width))
    return keys


class NB201Space:
    name = "nb201"

    def __init__(self, options: NB201Options | None = None) -> None:
        self.options = options or NB201Options()
        self.table = NB201Table(self.options.table) if self.options.table else None
        if self.table is not None and len(self.table.rows) != len(ALL_GENOMES):
            raise ValueError(f"{self.table.path} lists {len(self.table.rows)} cells; a table search needs all "
                             f"{len(ALL_GENOMES)} of the space")

    def codec(self) -> GenomeCodec:
        return GenomeCodec((0,) * len(EDGES), (len(OPS) - 1,) * len(EDGES))

    def sample(self, rng: np.random.Generator) -> Genome:
        return uniform_sample(self.codec(), rng)

    @cached_property
    def _canonical(self) -> dict[Genome, Genome]:
        """Smallest member of each class of cells that are the same network.

        In table mode the class also shares the table's cost: the benchmark counts the FLOPs of
        dead edges too, so cells that differ only there are different candidates.
        """
        def cls(genome: Genome) -> tuple[Any, ...]:
            if self.table is None:
                return (functional_key(genome),)
            row = self.table.lookup(genome)
            return functional_key(genome), row.flops, row.params

        smallest: dict[tuple[Any, ...], Genome] = {}
        for genome in ALL_GENOMES:
            smallest.setdefault(cls(genome), genome)
        return {genome: smallest[cls(genome)] for genome in ALL_GENOMES}

    def canonical(self, genome: Genome) -> Genome:
        return self._canonical[tuple(int(g) for g in genome)]

    def build(self, genome: Genome, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return NB201Network(genome, self.options, input_shape, num_classes)

    def op_inventory(self, genome: Genome, input_shape: tuple[int, int, int], num_classes: int) -> Inventory:
        """The units the genome's network runs, without building it (search_spaces.units)."""
        genome = tuple(int(g) for g in genome)
        keys: list[UnitKey] = [(stem_unit, input_shape[0], self.options.channels, *input_shape[1:])]
        stages = network_plan(self.options, input_shape)
        for stage in stages:
            if stage.reduce_from is not None:
                keys.append((_reduce_unit, stage.reduce_from, stage.channels, *stage.size_in))
            keys += _cell_units(genome, stage.channels, *stage.size) * self.options.cells_per_stage
        keys.append((_head_unit, stages[-1].channels, *stages[-1].size, num_classes))
        return Counter(keys)

    def describe(self, genome: Genome) -> dict[str, Any]:
        live = live_edges(genome)
        edges = [{"from": src, "to": to, "op": OPS[genome[e]], "live": live[e]} for e, (to, src) in enumerate(EDGES)]
        return {"space": self.name, "arch_str": arch_str(genome), "cell": {"nodes": [0, 1, 2, 3], "edges": edges}}
