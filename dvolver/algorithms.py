"""Search algorithms over a genome codec, with an ask/tell interface the engine drives.

NSGA-II runs on pymoo with Dvolver's operators (METHODS.md s.1): binary tournament on dominance
with a crowding tie-break, uniform crossover (p = 0.9 per pair, 0.1 per gene, set genes shared
out), per-gene mutation to a different valid value (p = 0.1) and (mu + lambda) survival. A set
gene (extra_concat) mutates to a neighbouring set, one state replaced, added or removed, as the
official Dvolver code does, rather than to any other set. Neither
algorithm ever asks twice for the same network: offspring are de-duplicated on canonical keys
against everything asked before.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np

from search_spaces import Genome, GenomeCodec, SearchSpace

from .surrogate_search import CheapObjectives, CheapValues, SurrogateSearch

__all__ = ["NSGA2", "Algorithm", "CheapObjectives", "CheapValues", "GridSearch", "RandomSearch", "SurrogateSearch",
           "make_algorithm"]

GENE_SWAP_P = 0.1
GENE_MUTATION_P = 0.1
CROSSOVER_P = 0.9


class Algorithm(Protocol):
    # The one generator every random choice draws from; None for an algorithm that draws nothing.
    # The engine journals its state at each ask, so a resumed search can prove it replays the run.
    rng: np.random.Generator | None

    def ask(self) -> list[Genome]: ...

    def tell(self, genomes: list[Genome], F: np.ndarray, G: np.ndarray) -> None:
        """F: minimised objectives, one row per genome; G: constraint violation (> 0 infeasible).

        Tells answer asks in the order they were made; the engine may make one more ask before
        telling the one before it."""


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

    def tell(self, genomes: list[Genome], F: np.ndarray, G: np.ndarray) -> None:
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

    def tell(self, genomes: list[Genome], F: np.ndarray, G: np.ndarray) -> None:
        pass


class NSGA2:
    def __init__(self, space: SearchSpace, key: Callable[[Genome], str], population: int, n_objectives: int,
                 seed: int) -> None:
        from pymoo.algorithms.moo.nsga2 import NSGA2 as PymooNSGA2
        from pymoo.core.problem import Problem
        from pymoo.core.termination import NoTermination

        codec = space.codec()
        self.key = key
        self.asked: set[str] = set()
        problem = Problem(n_var=len(codec), n_obj=n_objectives, n_ieq_constr=1, xl=np.array(codec.lower),
                          xu=np.array(codec.upper), vtype=int)
        self._algorithm = PymooNSGA2(
            pop_size=population,
            sampling=_sampling(space),
            crossover=_crossover(codec),
            mutation=_mutation(codec),
            eliminate_duplicates=_duplicates(self),
        )
        self._algorithm.setup(problem, termination=NoTermination(), seed=seed, verbose=False)
        self._problem = problem
        self._pending: deque = deque()  # asked, not yet told: the engine may ask again before telling

    @property
    def rng(self) -> np.random.Generator:
        return self._algorithm.random_state

    def ask(self) -> list[Genome]:
        pop = self._algorithm.ask()
        if pop is None or len(pop) == 0:  # mating found nothing new: space exhausted
            return []
        self._pending.append(pop)
        genomes = [tuple(int(v) for v in x) for x in pop.get("X")]
        self.asked.update(self.key(g) for g in genomes)
        return genomes

    def tell(self, genomes: list[Genome], F: np.ndarray, G: np.ndarray) -> None:
        from pymoo.core.evaluator import Evaluator
        from pymoo.problems.static import StaticProblem

        pop = self._pending.popleft()
        assert [tuple(g) for g in genomes] == [tuple(int(v) for v in x) for x in pop.get("X")], \
            "tell() must answer the asks in the order they were made"
        Evaluator().eval(StaticProblem(self._problem, F=np.asarray(F, float), G=np.asarray(G, float)), pop)
        self._algorithm.tell(infills=pop)


def make_algorithm(name: str, space: SearchSpace, key: Callable[[Genome], str], population: int,
                   n_objectives: int, seed: int, cheap: CheapObjectives | None = None,
                   batch: int | None = None) -> Algorithm:
    """`cheap`: what is known of a genome before training (its cheap objectives and their constraints);
    the algorithms that choose what to evaluate by it use it, the others ignore it. `batch`: how many
    the surrogate search asks at a time once its first `population` is evaluated."""
    if name == "surrogate":
        return SurrogateSearch(space, key, batch or default_batch(population), n_objectives, seed, cheap,
                               initial=population)
    if name == "random":
        return RandomSearch(space, key, population, seed)
    if name == "grid":
        return GridSearch(space, key, population)
    return NSGA2(space, key, population, n_objectives, seed)


def default_batch(population: int) -> int:
    """Small batches let each evaluation inform the next; a quarter of the population still keeps a few
    workers busy (on tables of the NAS-Bench-201 shape, batches of 5 after a first 20 beat batches of 20
    by ~0.04 hypervolume ratio at 100 evaluations: bench/RESULTS.md)."""
    return max(1, population // 4)


def _sampling(space: SearchSpace):
    from pymoo.core.sampling import Sampling

    class SpaceSampling(Sampling):
        def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
            return np.array([space.sample(random_state) for _ in range(n_samples)], dtype=int)

    return SpaceSampling()


def _crossover(codec: GenomeCodec):
    from pymoo.core.crossover import Crossover

    class UniformGeneSwap(Crossover):
        def __init__(self) -> None:
            super().__init__(2, 2, prob=CROSSOVER_P, vtype=int)

        def _do(self, problem, X, *args, random_state=None, **kwargs):
            out = X.copy()
            _, n_matings, n_var = X.shape
            for m in range(n_matings):
                for i in range(n_var):
                    if random_state.random() < GENE_SWAP_P:
                        out[0, m, i], out[1, m, i] = codec.cross_gene(i, int(X[0, m, i]), int(X[1, m, i]),
                                                                      random_state)
            return out

    return UniformGeneSwap()


def _mutation(codec: GenomeCodec):
    from pymoo.core.mutation import Mutation

    class ResampleGene(Mutation):
        def __init__(self) -> None:
            super().__init__(prob=1.0, vtype=int)

        def _do(self, problem, X, *args, random_state=None, **kwargs):
            X = np.array(X, dtype=int, copy=True)
            for row in X:
                for i in range(len(row)):
                    if random_state.random() < GENE_MUTATION_P:
                        row[i] = codec.mutate_gene(i, int(row[i]), random_state)
            return X

    return ResampleGene()


def _duplicates(owner: NSGA2):
    """Offspring equal (canonically) to one another, to the population or to anything asked before."""
    from pymoo.core.duplicate import DuplicateElimination

    class CanonicalDuplicates(DuplicateElimination):
        def _do(self, pop, other, is_duplicate):
            keys = [owner.key(tuple(int(v) for v in x)) for x in pop.get("X")]
            if other is None:
                seen: set[str] = set()
                for i, k in enumerate(keys):
                    is_duplicate[i] = k in seen or k in owner.asked
                    seen.add(k)
            else:
                others = {owner.key(tuple(int(v) for v in x)) for x in other.get("X")}
                for i, k in enumerate(keys):
                    is_duplicate[i] = is_duplicate[i] or k in others
            return is_duplicate

    return CanonicalDuplicates()
