"""NSGA-II on pymoo with Dvolver's operators (METHODS.md s.1).

Binary tournament on dominance with a crowding tie-break, uniform crossover (p = 0.9 per pair, 0.1
per gene, set genes shared out), per-gene mutation to a different valid value (p = 0.1) and
(mu + lambda) survival. A set gene (extra_concat) mutates to a neighbouring set, one state
replaced, added or removed, as the official Dvolver code does, rather than to any other set.
Offspring are de-duplicated on canonical keys against everything asked before.

pymoo is imported here, not by dvolver.algorithms, so that a search with another algorithm never
loads it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2 as PymooNSGA2
from pymoo.core.crossover import Crossover
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.evaluator import Evaluator
from pymoo.core.mutation import Mutation
from pymoo.core.problem import Problem
from pymoo.core.sampling import Sampling
from pymoo.core.termination import NoTermination
from pymoo.problems.static import StaticProblem

from search_spaces import Genome, GenomeCodec, SearchSpace

from .ask_tell import Told

GENE_SWAP_P = 0.1
GENE_MUTATION_P = 0.1
CROSSOVER_P = 0.9
# pymoo's sorting and crowding subtract objective values, and inf - inf is NaN: what was never
# measured goes to it as a finite value worse than any real one, and stays inside this adapter.
_NOT_MEASURED = 1e18
_FAILED_VIOLATION = 1e6


class NSGA2:
    def __init__(self, space: SearchSpace, key: Callable[[Genome], str], population: int, n_objectives: int,
                 seed: int) -> None:
        codec = space.codec()
        self.key = key
        self.asked: set[str] = set()
        self._problem = Problem(n_var=len(codec), n_obj=n_objectives, n_ieq_constr=1, xl=np.array(codec.lower),
                                xu=np.array(codec.upper), vtype=int)
        self._algorithm = PymooNSGA2(pop_size=population, sampling=SpaceSampling(space),
                                     crossover=UniformGeneSwap(codec), mutation=ResampleGene(codec),
                                     eliminate_duplicates=CanonicalDuplicates(key, self.asked))
        self._algorithm.setup(self._problem, termination=NoTermination(), seed=seed, verbose=False)
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

    def tell(self, genomes: Sequence[Genome], told: Told) -> None:
        pop = self._pending.popleft()
        if [tuple(g) for g in genomes] != [tuple(int(v) for v in x) for x in pop.get("X")]:
            raise ValueError("NSGA2.tell: the genomes told are not the oldest ask's; tell asks in the order made")
        F = np.where(np.isfinite(told.F), told.F, _NOT_MEASURED)
        G = np.where(np.isfinite(told.G), told.G, _FAILED_VIOLATION)
        # A candidate stopped early ranks behind every full-fidelity one (pymoo puts any violation behind
        # none), and the further it trained the better: its accuracy is not comparable to theirs.
        G = np.where(told.full, G, np.maximum(G, 1.0 - told.fidelity))[:, None]
        Evaluator().eval(StaticProblem(self._problem, F=F, G=G), pop)
        self._algorithm.tell(infills=pop)


class SpaceSampling(Sampling):
    """The first population: the space's own uniform sampler, which only draws valid genomes."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        return np.array([self.space.sample(random_state) for _ in range(n_samples)], dtype=int)


class UniformGeneSwap(Crossover):
    def __init__(self, codec: GenomeCodec) -> None:
        super().__init__(2, 2, prob=CROSSOVER_P, vtype=int)
        self.codec = codec

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        out = X.copy()
        _, n_matings, n_var = X.shape
        for m in range(n_matings):
            for i in range(n_var):
                if random_state.random() < GENE_SWAP_P:
                    out[0, m, i], out[1, m, i] = self.codec.cross_gene(i, int(X[0, m, i]), int(X[1, m, i]),
                                                                       random_state)
        return out


class ResampleGene(Mutation):
    def __init__(self, codec: GenomeCodec) -> None:
        super().__init__(prob=1.0, vtype=int)
        self.codec = codec

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        X = np.array(X, dtype=int, copy=True)
        for row in X:
            for i in range(len(row)):
                if random_state.random() < GENE_MUTATION_P:
                    row[i] = self.codec.mutate_gene(i, int(row[i]), random_state)
        return X


class CanonicalDuplicates(DuplicateElimination):
    """Offspring equal (canonically) to one another, to the population or to anything asked before."""

    def __init__(self, key: Callable[[Genome], str], asked: set[str]) -> None:
        super().__init__()
        self.key, self.asked = key, asked

    def _do(self, pop, other, is_duplicate):
        keys = [self.key(tuple(int(v) for v in x)) for x in pop.get("X")]
        if other is None:
            seen: set[str] = set()
            for i, k in enumerate(keys):
                is_duplicate[i] = k in seen or k in self.asked
                seen.add(k)
        else:
            others = {self.key(tuple(int(v) for v in x)) for x in other.get("X")}
            for i, k in enumerate(keys):
                is_duplicate[i] = is_duplicate[i] or k in others
        return is_duplicate
