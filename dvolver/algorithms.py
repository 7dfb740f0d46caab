"""The search algorithms by name, each with the ask/tell interface of dvolver.ask_tell.

The surrogate search (the default) is in dvolver.surrogate_search and NSGA-II in dvolver.nsga2;
random and grid search are here. None of them ever asks twice for the same network.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from search_spaces import Genome, SearchSpace

from .ask_tell import Algorithm, CheapLookup, Told
from .errors import DvolverError
from .surrogate_search import SurrogateSearch

__all__ = ["ALGORITHM_NAMES", "Algorithm", "GridSearch", "RandomSearch", "SurrogateSearch", "make_algorithm"]


class RandomSearch:
    """Uniform samples from the space, never the same network twice."""

    def __init__(self, space: SearchSpace, key: Callable[[Genome], str], batch: int, seed: int) -> None:
        self.space, self.key, self.batch = space, key, batch
        self.rng = np.random.default_rng(seed)
        self.asked: set[str] = set()

    def ask(self) -> list[Genome]:
        out: list[Genome] = []
        for _ in range(self.batch * 50):
            if len(out) == self.batch:
                break
            genome = self.space.sample(self.rng)
            k = self.key(genome)
            if k not in self.asked:
                self.asked.add(k)
                out.append(genome)
        return out

    def tell(self, genomes: Sequence[Genome], told: Told) -> None:
        pass


class GridSearch:
    """Every network of the space once, in genome order: for small spaces such as a pruning sweep over
    a few budgets. Genes are enumerated lazily, so a large space is simply cut off by the budget."""

    def __init__(self, space: SearchSpace, key: Callable[[Genome], str], batch: int) -> None:
        codec = space.codec()
        self.key, self.batch = key, batch
        self.rng = None
        self.genomes = itertools.product(*(range(lo, hi + 1) for lo, hi in zip(codec.lower, codec.upper)))
        self.asked: set[str] = set()

    def ask(self) -> list[Genome]:
        out: list[Genome] = []
        for genome in self.genomes:
            k = self.key(genome)
            if k not in self.asked:
                self.asked.add(k)
                out.append(tuple(int(g) for g in genome))
                if len(out) == self.batch:
                    break
        return out

    def tell(self, genomes: Sequence[Genome], told: Told) -> None:
        pass


def _nsga2(space: SearchSpace, key: Callable[[Genome], str], population: int, n_objectives: int, seed: int,
           cheap: CheapLookup | None, batch: int | None) -> Algorithm:
    from .nsga2 import NSGA2

    return NSGA2(space, key, population, n_objectives, seed)


# name -> factory(space, key, population, n_objectives, seed, cheap, batch); the first is the default.
# ALGORITHM_NAMES (the spec's JSON schema lists them) are the built-in ones; an entry added at run time
# is accepted by the spec's validator as well, in the process that added it.
ALGORITHMS: dict[str, Callable[..., Algorithm]] = {
    "surrogate": lambda space, key, population, n_objectives, seed, cheap, batch: SurrogateSearch(
        space, key, batch or default_batch(population), n_objectives, seed, cheap, initial=population),
    "nsga2": _nsga2,
    "random": lambda space, key, population, n_objectives, seed, cheap, batch: RandomSearch(
        space, key, population, seed),
    "grid": lambda space, key, population, n_objectives, seed, cheap, batch: GridSearch(space, key, population),
}
ALGORITHM_NAMES = tuple(ALGORITHMS)


def make_algorithm(name: str, space: SearchSpace, key: Callable[[Genome], str], population: int,
                   n_objectives: int, seed: int, cheap: CheapLookup | None = None,
                   batch: int | None = None) -> Algorithm:
    """`cheap`: what is known of a genome before training (its cheap objectives and their constraints);
    the algorithms that choose what to evaluate by it use it, the others ignore it. `batch`: how many
    the surrogate search asks at a time once its first `population` is evaluated. An unknown name
    raises DvolverError."""
    if name not in ALGORITHMS:
        raise DvolverError(f"unknown algorithm {name!r}; choose among {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name](space, key, population, n_objectives, seed, cheap, batch)


def default_batch(population: int) -> int:
    """Small batches let each evaluation inform the next; a quarter of the population still keeps a few
    workers busy (on tables of the NAS-Bench-201 shape, batches of 5 after a first 20 beat batches of 20
    by ~0.04 hypervolume ratio at 100 evaluations: bench/RESULTS.md)."""
    return max(1, population // 4)
