"""The contract every search space meets, and the genome codec the algorithms work on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from torch import nn

Genome = tuple[int, ...]


def genome_key(space_name: str, genome: Genome) -> str:
    """The string under which a canonical genome is stored and de-duplicated."""
    return f"{space_name}:" + ",".join(str(int(g)) for g in genome)


@dataclass(frozen=True)
class GenomeCodec:
    """Integer genes with inclusive bounds; some genes hold a set of states as a bitmask.

    Set genes (NASNet's extra_concat) mutate to a neighbouring set (one element replaced, added or
    removed) and cross over by sharing out the union of both parents' sets, as Dvolver does.
    """

    lower: tuple[int, ...]
    upper: tuple[int, ...]
    set_genes: frozenset[int] = field(default_factory=frozenset)

    def __len__(self) -> int:
        return len(self.lower)

    def check(self, genome: Genome) -> None:
        if len(genome) != len(self):
            raise ValueError(f"genome has {len(genome)} genes, this space needs {len(self)}")
        for i, (g, lo, hi) in enumerate(zip(genome, self.lower, self.upper)):
            if not lo <= int(g) <= hi:
                raise ValueError(f"gene {i} is {g}, outside [{lo}, {hi}]")

    def mutate_gene(self, i: int, value: int, rng: np.random.Generator) -> int:
        if i in self.set_genes:
            choices = _set_neighbours(value, self.upper[i].bit_length())
        else:
            choices = [v for v in range(self.lower[i], self.upper[i] + 1) if v != value]
        return int(choices[rng.integers(len(choices))]) if choices else int(value)

    def cross_gene(self, i: int, a: int, b: int, rng: np.random.Generator) -> tuple[int, int]:
        if i in self.set_genes:
            return _share_out(int(a), int(b), rng)
        return int(b), int(a)


def mask_to_set(mask: int) -> list[int]:
    return [bit for bit in range(mask.bit_length()) if mask >> bit & 1]


def set_to_mask(items: list[int] | set[int]) -> int:
    mask = 0
    for item in items:
        mask |= 1 << int(item)
    return mask


def _set_neighbours(mask: int, width: int) -> list[int]:
    present = mask_to_set(mask)
    absent = [s for s in range(width) if not mask >> s & 1]
    out = {mask ^ (1 << p) ^ (1 << a) for p in present for a in absent}  # replace one
    out |= {mask | (1 << a) for a in absent}  # add one
    out |= {mask & ~(1 << p) for p in present}  # remove one
    return sorted(out)


def _share_out(a: int, b: int, rng: np.random.Generator, attempts: int = 100) -> tuple[int, int]:
    """Deal the multiset union of two sets into two children of the parents' sizes."""
    if a == b:
        return a, b
    pool = mask_to_set(a) + mask_to_set(b)
    sizes = [len(mask_to_set(a)), len(mask_to_set(b))]
    for _ in range(attempts):
        size1 = sizes[int(rng.integers(2))]
        order = rng.permutation(len(pool))
        first: list[int] = []
        rest: list[int] = []
        for idx in order:
            item = pool[idx]
            (first if len(first) < size1 and item not in first else rest).append(item)
        if len(set(rest)) == len(rest) and len(first) == size1 and set_to_mask(first) != a:
            return set_to_mask(first), set_to_mask(rest)
    return b, a


@runtime_checkable
class SearchSpace(Protocol):
    """What every space has. A space may also list a genome's units without building its network,
    `op_inventory(genome, input_shape, num_classes) -> Inventory | None` (search_spaces.units), so
    that its costs are summed from cached counts of each unit instead of counted on the network."""

    name: str

    def codec(self) -> GenomeCodec: ...

    def sample(self, rng: np.random.Generator) -> Genome: ...

    def canonical(self, genome: Genome) -> Genome: ...

    def build(self, genome: Genome, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module: ...

    def describe(self, genome: Genome) -> dict[str, Any]: ...


def uniform_sample(codec: GenomeCodec, rng: np.random.Generator) -> Genome:
    return tuple(int(rng.integers(lo, hi + 1)) for lo, hi in zip(codec.lower, codec.upper))
