"""Surrogate-assisted Pareto search: spend each evaluation where a cheap model says the front gains most.

In NAS an evaluation is a training run, while FLOPs and params are known from the genome. The first
`initial` networks are spread over the cheap objectives' range (farthest points); after that, every
`batch` (small, so that each result informs the next choice) this search
1. builds a pool of new networks (never one already asked: canonical keys), mostly 1- and 2-gene
   mutations and crossovers of the current front and the fronts just behind it, plus uniform
   samples that keep it from collapsing onto one region; with two objectives, for the first WIDE_UNTIL
   results, as many parents again come from anywhere behind the fronts (by tournament), and mutations
   change up to 4 genes;
2. takes their cheap objectives as they are, and predicts the expensive ones (accuracy, latency)
   with a Gaussian process per objective (dvolver.gp_model: a categorical kernel, so a few dozen
   results already say what each gene is worth) fitted on what has been evaluated;
3. picks the batch greedily by hypervolume improvement over the current front, adding each pick at its
   expected value before the next, so one batch spreads along the cheap objectives' range instead of
   piling onto one niche. The improvement is the optimistic one (the posterior mean less kappa standard
   deviations, all minimised) for the first EXPECTATION_FROM results, and, with two objectives, the
   expected one after that (over the posterior, by quadrature; exact in two dimensions).

The constants below and the model were chosen on random tables of the NAS-Bench-201 shape
(bench/synthetic_tables.py, 8 tables, 3 seeds, 50-200 evaluations), never on the real table, which is
scored held out (bench/RESULTS.md, issue 20): the GP replaced a forest of randomised trees (HV ratio at 50
evaluations 0.82 -> 0.94 on the 8 tables' mean); optimism 1 beat 0.5, 1.5 and 2; 30 candidates per
evaluation asked beat 4 and 10 (60 scored alike at more cost); breeding from 5 % of the results once that
is more than 10 networks lifted 16 tables' mean at 1000 evaluations from 0.9968 to 0.9974, where a
larger pool or more optimism late in the search did not; a model fitted on up to 1,000 results instead
of 300 lifted it (3 seeds each) from 0.9981 to 0.9995; expected instead of optimistic improvement
after 50 results lifted the mean at 100 evaluations from 0.951 to 0.961 (13 of 16 tables), where
taking it from the first result lost 0.014 at 50; breeding wider for the first 150 results of a
two-objective search lifted the 16 tables' mean at 200 evaluations by 0.0044 +- 0.0020 (20 seeds,
paired; +0.0030 at 100, level at 50, 300 and 1000), where breeding wider throughout lost 0.0027 at 300
and three-objective searches lost 0.006 at 50.

Works for any number of objectives, constraints (G > 0 infeasible; cheap ones are checked before a
candidate is asked) and failed evaluations (never used to fit the model). Every random choice
comes from one generator seeded by `seed`: the same seed asks the same genomes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

from search_spaces import Genome, GenomeCodec, SearchSpace

from .ask_tell import CheapLookup, CheapValues, Told
from .gp_model import MOST_ROWS, RankGP
from .pareto import dominance_distance, hypervolume_improvement, hypervolume_improvements_2d, non_dominated

POOL_PER_SLOT = 30  # candidates scored per evaluation asked
MUTATION_SHARE = 0.6  # of the pool; crossovers take CROSSOVER_SHARE, uniform samples the rest
CROSSOVER_SHARE = 0.25
PARENT_SHARE = 0.05  # of the results, at least, breed the pool (10 networks while that is fewer)
TWO_GENE_P = 0.3  # a mutation changes two genes instead of one
WIDE_UNTIL = 150  # results: before this many, a two-objective pool also breeds from behind the fronts, more widely
WIDE_MUTATION = (0.6, 0.25, 0.1, 0.05)  # meanwhile, the chance that a mutation changes 1, 2, 3 or 4 genes
KAPPA = 1.0  # optimism: how many posterior standard deviations below its mean a candidate is scored at
# From this many results on, a two-objective batch is chosen by expected hypervolume improvement over
# the model's whole posterior rather than by the improvement of one optimistic guess: early on the
# model is too unsure for its expectation to explore well; later the expectation tells a network the
# model is sure of from a long shot, which one optimistic value per network cannot.
EXPECTATION_FROM = 50
_NODES, _WEIGHTS = hermegauss(8)  # Gauss-Hermite: the expectation over a standard normal, per trained objective
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()
TREES = 64  # of the forest front_probability votes with
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
        # Memos of pure functions of the genome: the pool draws the same genomes again and again, and the
        # model's rows are featurised on every ask.
        self._keys: dict[Genome, str] = {}
        self._feature_rows: dict[str, np.ndarray] = {}
        self.asked: set[str] = set()
        self.genomes: list[Genome] = []
        self.F = np.empty((0, n_objectives))
        self.G = np.empty(0)
        self.measured = np.empty(0, dtype=bool)  # a value for every objective (Told.measured)
        self.fidelity = np.empty(0)  # the share of a full training each row's values come from
        self._beaten_by = np.empty(0, dtype=int)  # per row, how many measured rows dominate it (kept in tell)
        self._asks = self._tells = 0
        self._models: dict[int, RankGP] = {}  # one per objective that needs training

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
        self.asked.update(self._key_of(g) for g in chosen)
        return chosen

    def tell(self, genomes: Sequence[Genome], told: Told) -> None:
        self._tells += 1
        self.genomes += [tuple(int(v) for v in g) for g in genomes]
        self.asked.update(self._key_of(g) for g in genomes)
        for f, measured in zip(told.F.reshape(len(genomes), self.m), told.measured):
            self._count_dominance(f, bool(measured))
        self.G = np.concatenate([self.G, told.G])
        self.fidelity = np.concatenate([self.fidelity, told.fidelity])

    def _count_dominance(self, f: np.ndarray, measured: bool) -> None:
        """Append one row, keeping every measured row's count of the measured rows that dominate it: the
        model's rows are chosen by it on every ask, and counting afresh each time is quadratic."""
        beaten = 0
        if measured:
            rows = np.flatnonzero(self.measured)
            seen = self.F[rows]
            beaten = int(((seen <= f).all(1) & (seen < f).any(1)).sum())
            self._beaten_by[rows[(f <= seen).all(1) & (f < seen).any(1)]] += 1
        self.F = np.vstack([self.F, f])
        self.measured = np.append(self.measured, measured)
        self._beaten_by = np.append(self._beaten_by, beaten)

    # --- the pool -------------------------------------------------------------------------------

    def _pool(self, target: int) -> list[Genome]:
        out: list[Genome] = []
        seen: set[str] = set()

        def add(genome: Genome) -> None:
            genome = tuple(int(v) for v in genome)
            k = self._key_of(genome)
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
        """The feasible front and the fronts behind it, until they hold a batch's worth of networks, or
        PARENT_SHARE of the results: late in a long search the front is dense, and the networks it still
        misses are more often a mutation away from a network behind it than from one on it."""
        rows = np.flatnonzero(self._comparable() & (self.G <= 0))
        chosen: list[int] = []
        want = max(self.batch, 10, int(PARENT_SHARE * self.measured.sum()))
        while len(rows) and len(chosen) < want:
            mask = non_dominated(self.F[rows])
            chosen += rows[mask].tolist()
            rows = rows[~mask]
        return [self.genomes[i] for i in chosen + self._wide_parents(len(chosen))]

    def _wide(self) -> bool:
        # Two objectives only: with three, on the same 16 tables and seeds 3-12, breeding wide scored
        # 0.006 and 0.004 lower at 50 and 100 evaluations (11 and 10 tables down) and level at 200 and 300.
        return self.m == 2 and self.measured.sum() < WIDE_UNTIL

    def _wide_parents(self, k: int) -> list[int]:
        """Before WIDE_UNTIL results, `k` more parents, each the less dominated of two feasible results
        drawn at random. Early on the found front is still far from the true one (true front networks
        were 3-5 genes from it on synthetic_13), and 1-2 gene mutations of it alone reach little beyond
        it; later the front is close, and breeding wide there only dilutes the pool (-0.003 at 300)."""
        rows = np.flatnonzero(self._comparable() & (self.G <= 0))
        if not self._wide() or len(rows) < 4:
            return []
        a, b = rows[self.rng.integers(len(rows), size=k)], rows[self.rng.integers(len(rows), size=k)]
        return np.where(self._beaten_by[a] <= self._beaten_by[b], a, b).tolist()

    def _comparable(self) -> np.ndarray:
        """Rows a front is made of: measured at full fidelity, or every measured row while none is."""
        full = self.measured & (self.fidelity >= 1)
        return full if full.any() else self.measured

    def _mutant(self, parents: list[Genome]) -> Genome:
        genome = list(parents[self.rng.integers(len(parents))])
        if self._wide():
            n = 1 + int(self.rng.choice(len(WIDE_MUTATION), p=WIDE_MUTATION))
        else:
            n = 2 if self.rng.random() < TWO_GENE_P else 1
        n = min(len(genome), n)
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

    def _key_of(self, genome: Genome) -> str:
        genome = tuple(int(v) for v in genome)
        if genome not in self._keys:
            self._keys[genome] = self.key(genome)
        return self._keys[genome]

    def _cheap_of(self, genome: Genome) -> CheapValues:
        k = self._key_of(genome)
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
        by_expectation = self.m == 2 and self.measured.sum() >= EXPECTATION_FROM
        optimism = -_NODES if by_expectation else np.array([KAPPA])
        mean, at = self._predict(pool, known, optimism)
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
        believed = (mean - ideal) / scale
        at = (at - ideal[:, None]) / scale[:, None]
        current = (front - ideal) / scale
        if by_expectation:
            picks = _expected_batch(at, np.isnan(known).any(axis=0), believed, current, reference, self.batch)
        else:
            picks = _greedy_batch(at[:, :, 0], believed, current, reference, self.batch)
        return [pool[i] for i in picks]

    def _predict(self, pool: list[Genome], known: np.ndarray,
                 optimism: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected objectives of the pool, (pool, m), and their values `optimism` posterior standard
        deviations better, (pool, m, levels): cheap ones as they are at every level, the others from
        one Gaussian process per objective (dvolver.gp_model)."""
        mean = known.copy()
        at = np.repeat(known[:, :, None], len(optimism), axis=2)
        missing = np.isnan(known)
        if not missing.any():
            return mean, at
        rows = self._model_rows()
        X_seen = self._features([self.genomes[i] for i in rows])
        X_pool = self._features(pool)
        if (self.fidelity[rows] < 1).any():
            # Accuracies after a few epochs and after full training are not one number: fidelity is an input,
            # and the pool is predicted at full fidelity.
            X_seen = np.column_stack([X_seen, self.fidelity[rows]])
            X_pool = np.column_stack([X_pool, np.ones(len(X_pool))])
        for j in np.flatnonzero(missing.any(axis=0)):
            expected, levels = self._models.setdefault(int(j), RankGP()).predict(
                X_seen, self.F[rows, j], X_pool, optimism, results=int(self.measured.sum()))
            mean[missing[:, j], j] = expected[missing[:, j]]
            at[missing[:, j], j] = levels[missing[:, j]]
        return mean, at

    def _model_rows(self) -> np.ndarray:
        """The measured rows the model learns from: all of them, or the MOST_ROWS dominated by the fewest
        others (the front and what lies just behind it, where the next picks are made)."""
        rows = np.flatnonzero(self.measured)
        if len(rows) <= MOST_ROWS:
            return rows
        return rows[np.sort(np.argsort(self._beaten_by[rows], kind="stable")[:MOST_ROWS])]

    def front_probability(self, genomes: list[Genome]) -> np.ndarray:
        """Per genome, the share of a randomised forest's trees by which its full-fidelity result would
        not be dominated by the current full-fidelity front: the chance that training it on pays off.
        (A forest of its own, not the search's GP: early stopping's tie-breaks were measured with its votes.)

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
        return np.array([self._feature_row(g) for g in genomes])

    def _feature_row(self, genome: Genome) -> np.ndarray:
        """One-hot genes of the canonical form (equivalent networks look alike), set genes as their bits,
        plus the cheap objectives, which say much about accuracy (bigger networks learn more)."""
        k = self._key_of(genome)
        if k in self._feature_rows:
            return self._feature_rows[k]
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
        self._feature_rows[k] = row = np.concatenate(parts)
        return row


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
            i = _closest_free(hopeful, free, front)
        picks.append(i)
        free[i] = False
        front = np.vstack([front, believed[i]])
    return picks


def _expected_batch(at: np.ndarray, trained: np.ndarray, believed: np.ndarray, front: np.ndarray,
                    reference: np.ndarray, size: int) -> list[int]:
    """Two objectives: pick `size` rows one at a time by expected hypervolume improvement over the
    front, each pick joining it at its believed point. `at` holds each row's objectives at the
    quadrature nodes (pool, 2, nodes); where both are trained, the nodes of each are crossed (the
    models are independent). Once nothing is expected to improve the front, the closest come next."""
    grids = [at[:, j, :] if trained[j] else at[:, j, :1] for j in range(2)]
    weights = [_WEIGHTS if trained[j] else np.ones(1) for j in range(2)]
    first, second = grids[0][:, :, None], grids[1][:, None, :]
    points = np.stack(np.broadcast_arrays(first, second), axis=-1).reshape(len(at), -1, 2)
    w = np.outer(*weights).ravel()
    free = np.ones(len(at), dtype=bool)
    picks: list[int] = []
    while len(picks) < min(size, len(at)):
        gain = np.where(free, hypervolume_improvements_2d(points, front, reference) @ w, -1.0)
        i = int(np.argmax(gain))
        if gain[i] <= 0:
            i = _closest_free(believed, free, front)
        picks.append(i)
        free[i] = False
        front = np.vstack([front, believed[i]])
    return picks


def _closest_free(points: np.ndarray, free: np.ndarray, front: np.ndarray) -> int:
    """The free row whose point lies nearest the front: the pick once no row is scored to improve it."""
    rest = np.flatnonzero(free)
    return int(rest[np.argmin(dominance_distance(points[rest], front))])
