"""Surrogate-assisted Pareto search: spend each evaluation where a cheap model says the front gains most.

In NAS an evaluation is a training run, while FLOPs and params are known from the genome. The first
`initial` networks are spread over the cheap objectives' range (farthest points); after that, every
`batch` (small, so that each result informs the next choice) this search
1. builds a pool of new networks (never one already asked: canonical keys), mostly 1- and 2-gene
   mutations and crossovers of the current front and the fronts just behind it, plus uniform
   samples that keep it from collapsing onto one region;
2. takes their cheap objectives as they are, and predicts the expensive ones (accuracy, latency)
   with an ensemble of randomised trees fitted on everything evaluated so far;
3. picks the batch greedily by optimistic hypervolume improvement (mean - kappa * spread, all
   minimised) over the current front, adding each pick at its predicted value before the next, so
   one batch spreads along the cheap objectives' range instead of piling onto one niche.

The constants below were chosen on random tables of the NAS-Bench-201 shape (bench/synthetic_tables.py,
16 problems of two and three objectives, 3 seeds), never on the real table, which is scored held out:
optimism 1.5 beat 0.5, 1 and 2.5; pools of 4, 8 or 16 candidates per evaluation asked scored alike,
so the cheapest is kept: every pool member needs its costs counted (~0.1-0.2 s for a NASNet when that
meant tracing it; summed from cached unit counts, dvolver.unit_costs, a fraction of a millisecond now).

Works for any number of objectives, constraints (G > 0 infeasible; cheap ones are checked before a
candidate is asked) and failed evaluations (never used to fit the model). Every random choice
comes from one generator seeded by `seed`: the same seed asks the same genomes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from search_spaces import Genome, GenomeCodec, SearchSpace

from .ask_tell import CheapLookup, CheapValues, Told
from .pareto import dominance_distance, hypervolume_improvement, non_dominated

POOL_PER_SLOT = 4  # candidates scored per evaluation asked
MUTATION_SHARE = 0.6  # of the pool; crossovers take CROSSOVER_SHARE, uniform samples the rest
CROSSOVER_SHARE = 0.25
TWO_GENE_P = 0.3  # a mutation changes two genes instead of one
KAPPA = 1.5  # optimism: how many ensemble spreads (in rank) below the mean prediction a candidate is scored at
TREES = 64
REFERENCE_MARGIN = 0.1  # the hypervolume reference point sits this share of the range past the worst seen


class SurrogateSearch:
    def __init__(self, space: SearchSpace, key: Callable[[Genome], str], batch: int, n_objectives: int, seed: int,
                 cheap: CheapLookup | None = None, initial: int | None = None) -> None:
        self.space, self.key, self.batch, self.m = space, key, batch, n_objectives
        self.initial = batch if initial is None else initial
        self.codec: GenomeCodec = space.codec()
        self.rng = np.random.default_rng(seed)
        self._cheap_fn = cheap or (lambda genome: CheapValues(np.full(n_objectives, np.nan)))
        self._cheap: dict[str, CheapValues] = {}
        self.asked: set[str] = set()
        self.genomes: list[Genome] = []
        self.F = np.empty((0, n_objectives))
        self.G = np.empty(0)
        self.measured = np.empty(0, dtype=bool)  # a value for every objective (Told.measured)
        self.fidelity = np.empty(0)  # the share of a full training each row's values come from
        self._asks = self._tells = 0

    def ask(self) -> list[Genome]:
        first = self.measured.sum() < 2
        # Asked again before the last ask is told (the engine overlaps asks with training): that
        # ask was the spread-out first population, this one is only a batch.
        size = self.initial if first and self._asks == self._tells else self.batch
        self._asks += 1
        pool = self._pool(POOL_PER_SLOT * max(size, 2))
        if not pool:
            return []
        cheap = [self._cheap_of(g) for g in pool]
        allowed = np.array([c.violation <= 0 for c in cheap])
        if not allowed.any():  # let the engine record them infeasible, so a search that cannot be met stops
            order = np.argsort([c.violation for c in cheap], kind="stable")
            chosen = [pool[i] for i in order[:size]]
        else:
            pool = [g for g, ok in zip(pool, allowed) if ok]
            known = np.array([c.values for c, ok in zip(cheap, allowed) if ok]).reshape(len(pool), self.m)
            chosen = self._spread(pool, known, size) if first else self._select(pool, known)
        self.asked.update(self.key(g) for g in chosen)
        return chosen

    def tell(self, genomes: Sequence[Genome], told: Told) -> None:
        self._tells += 1
        self.genomes += [tuple(int(v) for v in g) for g in genomes]
        self.asked.update(self.key(g) for g in genomes)
        self.F = np.vstack([self.F, told.F.reshape(len(genomes), self.m)])
        self.G = np.concatenate([self.G, told.G])
        self.measured = np.concatenate([self.measured, told.measured])
        self.fidelity = np.concatenate([self.fidelity, told.fidelity])

    # --- the pool -------------------------------------------------------------------------------

    def _pool(self, target: int) -> list[Genome]:
        out: list[Genome] = []
        seen: set[str] = set()

        def add(genome: Genome) -> None:
            genome = tuple(int(v) for v in genome)
            k = self.key(genome)
            if k not in self.asked and k not in seen:
                seen.add(k)
                out.append(genome)

        parents = self._parents()
        if parents:
            self._fill(out, add, lambda: self._mutant(parents), int(MUTATION_SHARE * target))
            if len(parents) > 1:
                self._fill(out, add, lambda: self._child(parents), int((MUTATION_SHARE + CROSSOVER_SHARE) * target))
        self._fill(out, add, lambda: self.space.sample(self.rng), target)
        return out

    @staticmethod
    def _fill(out: list[Genome], add: Callable[[Genome], None], make: Callable[[], Genome], upto: int) -> None:
        """Draw until the pool holds `upto` (a small or nearly exhausted space may never get there)."""
        for _ in range(20 * max(upto - len(out), 0)):
            if len(out) >= upto:
                break
            add(make())

    def _parents(self) -> list[Genome]:
        """The feasible front and the fronts behind it, until they hold a batch's worth of networks."""
        rows = np.flatnonzero(self._comparable() & (self.G <= 0))
        chosen: list[int] = []
        want = max(self.batch, 10)
        while len(rows) and len(chosen) < want:
            mask = non_dominated(self.F[rows])
            chosen += rows[mask].tolist()
            rows = rows[~mask]
        return [self.genomes[i] for i in chosen]

    def _comparable(self) -> np.ndarray:
        """Rows a front is made of: measured at full fidelity, or every measured row while none is."""
        full = self.measured & (self.fidelity >= 1)
        return full if full.any() else self.measured

    def _mutant(self, parents: list[Genome]) -> Genome:
        genome = list(parents[self.rng.integers(len(parents))])
        n = min(len(genome), 2 if self.rng.random() < TWO_GENE_P else 1)
        for i in self.rng.choice(len(genome), size=n, replace=False):
            genome[i] = self.codec.mutate_gene(int(i), genome[i], self.rng)
        return tuple(genome)

    def _child(self, parents: list[Genome]) -> Genome:
        a, b = self.rng.choice(len(parents), size=2, replace=False)
        child = list(parents[a])
        other = parents[b]
        for i in range(len(child)):
            if self.rng.random() < 0.5:
                child[i] = self.codec.cross_gene(i, child[i], other[i], self.rng)[0]
        return tuple(child)

    def _cheap_of(self, genome: Genome) -> CheapValues:
        k = self.key(genome)
        if k not in self._cheap:
            self._cheap[k] = self._cheap_fn(genome)
        return self._cheap[k]

    # --- choosing the batch ---------------------------------------------------------------------

    def _spread(self, pool: list[Genome], known: np.ndarray, size: int) -> list[Genome]:
        """Farthest-point picks over the cheap objectives: the first batch covers their whole range."""
        cols = ~np.isnan(known).any(axis=0)
        if not cols.any():
            return pool[:size]
        X = known[:, cols]
        span = np.ptp(X, axis=0)
        X = (X - X.min(axis=0)) / np.where(span > 0, span, 1.0)
        picks = [int(self.rng.integers(len(pool)))]
        nearest = np.linalg.norm(X - X[picks[0]], axis=1)
        while len(picks) < min(size, len(pool)):
            # Ties (many networks share a cost) are broken at random, not by pool order.
            best = np.flatnonzero(nearest >= nearest.max() - 1e-12)
            i = int(best[self.rng.integers(len(best))])
            picks.append(i)
            nearest = np.minimum(nearest, np.linalg.norm(X - X[i], axis=1))
        return [pool[i] for i in picks]

    def _select(self, pool: list[Genome], known: np.ndarray) -> list[Genome]:
        mean, spread = self._predict(pool, known)
        valid = self.measured
        feasible = self._comparable() & (self.G <= 0)
        front = self.F[feasible] if feasible.any() else self.F[valid]
        front = front[non_dominated(front)]
        # The reference point lies past the worst of everything seen, not just past the front: a more
        # accurate network that costs more than any on the front so far must still count as a gain.
        seen = np.vstack([self.F[valid], np.where(np.isnan(known), -np.inf, known)])
        ideal, nadir = front.min(axis=0), seen.max(axis=0)
        scale = np.where(nadir - ideal > 0, nadir - ideal, np.maximum(np.abs(nadir), 1.0))
        reference = np.full(self.m, 1.0 + REFERENCE_MARGIN)

        def norm(X: np.ndarray) -> np.ndarray:
            return (X - ideal) / scale

        believed = norm(mean)
        hopeful = norm(mean - KAPPA * spread)
        current = norm(front)
        return [pool[i] for i in _greedy_batch(hopeful, believed, current, reference, self.batch)]

    def _predict(self, pool: list[Genome], known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cheap objectives as they are (no spread); the others from a tree ensemble per objective."""
        mean, spread = known.copy(), np.zeros_like(known)
        missing = np.isnan(known)
        if not missing.any():
            return mean, spread
        valid = self.measured
        X_seen = self._features([self.genomes[i] for i in np.flatnonzero(valid)])
        X_pool = self._features(pool)
        if (self.fidelity[valid] < 1).any():
            # Accuracies after a few epochs and after full training are not one number: fidelity is an input,
            # and the pool is predicted at full fidelity. (Without stopped rows the column would be constant,
            # and only shift the trees' random draws.)
            X_seen = np.column_stack([X_seen, self.fidelity[valid]])
            X_pool = np.column_stack([X_pool, np.ones(len(X_pool))])
        for j in np.flatnonzero(missing.any(axis=0)):
            mu, sd = _forest(X_seen, self.F[valid, j], X_pool, int(self.rng.integers(2**31)))
            mean[missing[:, j], j] = mu[missing[:, j]]
            spread[missing[:, j], j] = sd[missing[:, j]]
        return mean, spread

    def front_probability(self, genomes: list[Genome]) -> np.ndarray:
        """Per genome, the share of the model's trees by which its full-fidelity result would not be
        dominated by the current full-fidelity front: the chance that training it on pays off.

        Early stopping asks this to break ties at a rung (dvolver.rungs). It draws nothing from `rng`,
        so asking it leaves the search's own random stream, and so the search, as it was."""
        known = np.array([self._cheap_of(g).values for g in genomes], dtype=float).reshape(len(genomes), self.m)
        full = self.measured & (self.fidelity >= 1) & (self.G <= 0)
        if self.measured.sum() < 2 or not full.any():
            return np.full(len(genomes), 0.5)
        front = self.F[full][non_dominated(self.F[full])]
        valid = self.measured
        seen = [self.genomes[i] for i in np.flatnonzero(valid)]
        X_seen = np.column_stack([self._features(seen), self.fidelity[valid]])
        X_new = np.column_stack([self._features(genomes), np.ones(len(genomes))])
        trees = np.repeat(known[None], TREES, axis=0)  # (trees, genomes, objectives)
        for j in np.flatnonzero(np.isnan(known).any(axis=0)):
            y = self.F[valid, j]
            values = np.interp(_tree_ranks(X_seen, y, X_new, len(self.F) + j), (np.arange(len(y)) + 0.5) / len(y),
                               np.sort(y))
            trees[:, :, j] = np.where(np.isnan(known[:, j]), values, known[:, j])
        beaten = (front[None, None, :, :] <= trees[:, :, None, :]).all(-1) & (
            front[None, None, :, :] < trees[:, :, None, :]).any(-1)
        return 1.0 - beaten.any(axis=2).mean(axis=0)

    def _features(self, genomes: list[Genome]) -> np.ndarray:
        """One-hot genes of the canonical form (equivalent networks look alike), set genes as their bits,
        plus the cheap objectives, which say much about accuracy (bigger networks learn more)."""
        rows = []
        for genome in genomes:
            g = self.space.canonical(genome)
            parts: list[np.ndarray] = []
            for i, (lo, hi) in enumerate(zip(self.codec.lower, self.codec.upper)):
                if i in self.codec.set_genes:
                    parts.append(np.array([(int(g[i]) >> b) & 1 for b in range(int(hi).bit_length())], float))
                else:
                    onehot = np.zeros(hi - lo + 1)
                    onehot[int(g[i]) - lo] = 1.0
                    parts.append(onehot)
            cheap = self._cheap_of(genome).values
            parts.append(np.nan_to_num(np.sign(cheap) * np.log1p(np.abs(cheap)), nan=0.0))
            rows.append(np.concatenate(parts))
        return np.array(rows)


def _forest(X: np.ndarray, y: np.ndarray, X_new: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread over the trees of an extremely randomised forest: the spread is large where
    the evaluations so far disagree or are absent, which is where optimism should look.

    The trees learn ranks, not values: a few broken networks (10 % accuracy) would otherwise make the
    spread largest wherever one was seen, not where a better network is likely. Predictions are
    mapped back through the observed values."""
    order = np.sort(y)
    per_tree = _tree_ranks(X, y, X_new, seed)
    mean, spread = per_tree.mean(axis=0), per_tree.std(axis=0)
    grid = (np.arange(len(y)) + 0.5) / len(y)
    value = np.interp(mean, grid, order)
    optimistic = np.interp(mean - KAPPA * spread, grid, order, left=order[0] - (order[-1] - order[0]) / len(y))
    return value, (value - optimistic) / KAPPA if KAPPA > 0 else np.zeros_like(value)


def _tree_ranks(X: np.ndarray, y: np.ndarray, X_new: np.ndarray, seed: int) -> np.ndarray:
    """(trees, rows): each tree's predicted rank of y (in (0, 1)) for the rows of X_new."""
    from sklearn.ensemble import ExtraTreesRegressor

    ranks = (np.argsort(np.argsort(y, kind="stable"), kind="stable") + 0.5) / len(y)
    forest = ExtraTreesRegressor(n_estimators=TREES, min_samples_leaf=2, max_features=0.5, bootstrap=True,
                                 random_state=seed, n_jobs=1)
    forest.fit(X, ranks)
    return np.stack([t.predict(X_new) for t in forest.estimators_])


def _greedy_batch(hopeful: np.ndarray, believed: np.ndarray, front: np.ndarray, reference: np.ndarray,
                  size: int) -> list[int]:
    """Pick `size` rows one at a time by hypervolume improvement of their optimistic point over the
    front, each pick joining the front at its believed point.

    Improvements only shrink as the front grows, so a stale score is an upper bound and only the
    leader needs rescoring (lazy greedy). Once no candidate improves the front even optimistically,
    the ones closest to it come next.
    """
    front = np.asarray(front, dtype=float)
    bound = np.array([hypervolume_improvement(p, front, reference) for p in hopeful])
    free = np.ones(len(hopeful), dtype=bool)
    picks: list[int] = []
    while len(picks) < min(size, len(hopeful)):
        i = -1
        while (bound[free] > 0).any():
            lead = int(np.flatnonzero(free)[np.argmax(bound[free])])
            bound[lead] = hypervolume_improvement(hopeful[lead], front, reference)
            others = free.copy()
            others[lead] = False
            if bound[lead] > 0 and (not others.any() or bound[lead] >= bound[others].max()):
                i = lead
                break
        if i < 0:
            rest = np.flatnonzero(free)
            i = int(rest[np.argmin(dominance_distance(hopeful[rest], front))])
        picks.append(i)
        free[i] = False
        front = np.vstack([front, believed[i]])
    return picks
