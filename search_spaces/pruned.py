"""A search space with a pruning genome appended: architecture and pruning searched as one candidate.

The last two genes choose a pruning method (or none) and a budget (the fraction kept) from the spec's
lists. A method that learns its own sparsity ignores the budget gene, so its canonical form sets it to
0: two genomes differing only there are one candidate, trained once. Building a genome builds the
architecture unpruned; the evaluation prunes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from .base import Genome, GenomeCodec, SearchSpace
from .units import Inventory

UNPRUNED = "none"


@dataclass(frozen=True)
class PruningChoice:
    method: str  # a method name, or UNPRUNED
    budget: float | None  # fraction kept; None for UNPRUNED and methods with learned sparsity


class PrunedSpace:
    def __init__(self, base: SearchSpace, methods: tuple[str, ...], budgets: tuple[float, ...],
                 takes_budget: frozenset[str]) -> None:
        if not methods or not budgets:
            raise ValueError("a pruned space needs at least one method and one budget")
        self.base, self.methods, self.budgets, self.takes_budget = base, methods, budgets, takes_budget
        self.name = base.name
        self.arch_genes = len(base.codec())
        table = getattr(base, "table", None)
        if table is not None:
            raise ValueError("a table search looks results up and trains nothing, so nothing can be pruned")

    def codec(self) -> GenomeCodec:
        base = self.base.codec()
        return GenomeCodec(base.lower + (0, 0), base.upper + (len(self.methods) - 1, len(self.budgets) - 1),
                           base.set_genes)

    def split(self, genome: Genome) -> tuple[Genome, PruningChoice]:
        arch, (m, b) = tuple(genome[: self.arch_genes]), genome[self.arch_genes :]
        method = self.methods[int(m)]
        budget = self.budgets[int(b)] if method in self.takes_budget else None
        return arch, PruningChoice(method, budget)

    def sample(self, rng: np.random.Generator) -> Genome:
        arch = tuple(self.base.sample(rng))
        return arch + (int(rng.integers(len(self.methods))), int(rng.integers(len(self.budgets))))

    def canonical(self, genome: Genome) -> Genome:
        arch, choice = self.split(genome)
        m = int(genome[self.arch_genes])
        b = int(genome[self.arch_genes + 1]) if choice.budget is not None else 0
        return tuple(self.base.canonical(arch)) + (m, b)

    def build(self, genome: Genome, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return self.base.build(self.split(genome)[0], input_shape, num_classes)

    def op_inventory(self, genome: Genome, input_shape: tuple[int, int, int], num_classes: int) -> Inventory | None:
        """The unpruned architecture's units (what `build` builds); None when the base space lists none."""
        inventory = getattr(self.base, "op_inventory", None)
        return None if inventory is None else inventory(self.split(genome)[0], input_shape, num_classes)

    def describe(self, genome: Genome) -> dict[str, Any]:
        arch, choice = self.split(genome)
        pruning = None if choice.method == UNPRUNED else {"method": choice.method, "budget": choice.budget}
        return self.base.describe(arch) | {"pruning": pruning}
