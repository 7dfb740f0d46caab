"""Issue 5: the surrogate search (SurrogateSearch): reproducible, never asks twice, never fits a failure,
beats random search on the NAS-Bench-201 table."""

import numpy as np

from dvolver import efficiency
from dvolver.algorithms import SurrogateSearch, make_algorithm
from dvolver.api import run_search
from dvolver.ask_tell import CheapValues, Told
from search_spaces import make_space
from tests.helpers import TINY, keyer, table_spec


def test_surrogate_search_beats_random_search_at_100_evaluations(nb201_table):
    """At the product's defaults, on the mean over four seeds (raw HV ratio). With the GP model every one
    of the four beats random search (0.95-0.98 against 0.90-0.93); with the forest before it, seed 0 fell
    below random (0.879 against 0.918), so one seed is not enough to judge by."""
    problem = efficiency.load_problem(nb201_table)

    def hv(search: str, seed: int) -> float:
        asked = efficiency.dvolver_search(search)(problem, seed, 100)
        return efficiency.score(problem, np.array([problem.point(g) for g in asked])).hv_ratio

    ours, rand = (np.mean([hv(search, seed) for seed in range(4)]) for search in ("surrogate", "random"))
    assert ours > rand + 0.03  # measured: 0.971 against 0.911


def _toy(g):
    return [-(sum(g) + (g[0] == 3) * 2.0), float(sum(1 for v in g if v == 3))]


def _cheap_second(g):
    return CheapValues(np.array([np.nan, float(sum(1 for v in g if v == 3))]))


def _drive(algorithm, batches, fail_every=0):
    asked = []
    for _ in range(batches):
        genomes = algorithm.ask()
        asked.append(genomes)
        F = np.array([_toy(g) for g in genomes])
        G = np.zeros(len(genomes))
        status = ["finished"] * len(genomes)
        if fail_every:
            F[::fail_every], G[::fail_every] = np.inf, np.inf  # what the engine tells for a failed evaluation
            status[::fail_every] = ["failed"] * len(status[::fail_every])
        algorithm.tell(genomes, Told(F, G, tuple(status)))
    return asked


def test_surrogate_search_is_reproducible_and_never_asks_a_network_twice():
    space = make_space("nb201")

    def run(seed, fail_every=0):
        algorithm = make_algorithm("surrogate", space, keyer(space), 8, 2, seed, cheap=_cheap_second)
        return _drive(algorithm, 8, fail_every)

    first = run(3)
    assert first == run(3)
    assert first != run(4)
    assert [len(b) for b in first] == [8] + [2] * 7  # the population, then population // 4 at a time
    keys = [keyer(space)(g) for batch in first for g in batch]
    assert len(keys) == len(set(keys)) == 22
    with_failures = run(3, fail_every=3)  # the search goes on past failed evaluations
    assert sum(len(b) for b in with_failures) == 22


def test_failed_evaluations_are_never_fitted_on(monkeypatch):
    """A failure is told with status "failed" and F = +inf: fitted on, it would be predicted as a
    network of infinite cost and steer the search; the model sees only the evaluations that worked."""
    from dvolver.gp_model import RankGP

    fitted = []
    real = RankGP.predict

    def spy(self, X, y, X_new, optimism, results=None):
        fitted.append(y.copy())
        return real(self, X, y, X_new, optimism, results)

    monkeypatch.setattr(RankGP, "predict", spy)
    space = make_space("nb201")
    asked = _drive(make_algorithm("surrogate", space, keyer(space), 8, 2, 3, cheap=_cheap_second), 6, fail_every=3)
    told = sum(len(b) for b in asked[:-1])  # the last ask was fitted on every batch before it
    failed_before_last = sum(len(b[::3]) for b in asked[:-1])
    assert fitted and all(np.isfinite(y).all() for y in fitted)
    assert len(fitted[-1]) == told - failed_before_last


def test_surrogate_batch_after_the_first_population_is_the_specs():
    space = make_space("nb201")
    algorithm = make_algorithm("surrogate", space, keyer(space), 6, 2, 0, cheap=_cheap_second, batch=4)
    assert [len(b) for b in _drive(algorithm, 3)] == [6, 4, 4]


def test_surrogate_search_improves_without_cheap_objectives_and_with_three():
    space = make_space("nb201")
    blind = _drive(SurrogateSearch(space, keyer(space), 10, 2, seed=1), 10)
    assert max(sum(g) for b in blind[-3:] for g in b) > max(sum(g) for g in blind[0])

    def three(g):
        return CheapValues(np.array([np.nan, float(sum(1 for v in g if v == 3)), float(g.count(2))]))

    def score(g):  # the first, trained objective, as accuracy: higher is better
        return -_toy(g)[0]

    algorithm = SurrogateSearch(space, keyer(space), 10, 3, seed=1, cheap=three)
    asked = []
    for _ in range(5):
        asked.append(algorithm.ask())
        algorithm.tell(asked[-1], Told.finished(np.array([_toy(g) + [g.count(2)] for g in asked[-1]])))
    assert len(algorithm.genomes) == 50
    later = [score(g) for b in asked[-2:] for g in b]
    first = [score(g) for g in asked[0]]
    # Random asks would leave both the best and the mean where the first, random batch put them.
    assert max(later) > max(first) and np.mean(later) > np.mean(first) + 2


def test_surrogate_search_never_asks_what_breaks_a_cheap_constraint(nb201_table, db):
    res = run_search(table_spec(nb201_table, algorithm="surrogate", evaluations=60, constraints={"max_flops": 5e7}),
                     db=db, executor="inline")
    assert res.stats.evaluations == 60 and res.stats.infeasible == 0
    assert all(c.objectives["flops"] <= 5e7 for c in res.candidates)


def test_surrogate_search_on_three_table_objectives(nb201_table, db):
    res = run_search(table_spec(nb201_table, algorithm="surrogate", evaluations=60,
                                objectives=["acc", "flops", "params"]), db=db, executor="inline")
    assert res.stats.evaluations == 60 and len(res.front) >= 3


def test_surrogate_search_on_nasnet_end_to_end(db):
    first = run_search(TINY | {"algorithm": "surrogate", "seed": 2}, db=db, executor="inline")
    assert first.status == "finished" and first.stats.evaluations == 8 and first.front
    again = run_search(TINY | {"algorithm": "surrogate", "seed": 2}, db=db, executor="inline")
    assert [c.key for c in again.candidates] == [c.key for c in first.candidates]


def test_the_model_learns_from_the_front_first_and_at_most_its_row_cap(monkeypatch):
    """Past gp_model.MOST_ROWS results the model fits the least dominated ones, so a long search costs
    the same per step; every network on the front is among them, and a dominated-by-all one is not."""
    from dvolver import surrogate_search
    from dvolver.gp_model import RankGP

    monkeypatch.setattr(surrogate_search, "MOST_ROWS", 40)
    fitted = []
    real = RankGP.predict

    def spy(self, X, y, X_new, optimism, results=None):
        fitted.append((y.copy(), results))
        return real(self, X, y, X_new, optimism, results)

    monkeypatch.setattr(RankGP, "predict", spy)
    space = make_space("nb201")
    algorithm = SurrogateSearch(space, keyer(space), 10, 2, seed=0, cheap=_cheap_second)
    asked = _drive(algorithm, 6)
    y, results = fitted[-1]
    assert results == sum(len(b) for b in asked[:-1]) > 40 == len(y)  # refits follow every result

    from dvolver.pareto import dominates

    rows = set(algorithm._model_rows().tolist())
    F = algorithm.F
    beaten = [sum(dominates(F[j], F[i]) for j in range(len(F))) for i in range(len(F))]
    cutoff = sorted(beaten)[39]
    assert len(rows) == 40
    assert {i for i, b in enumerate(beaten) if b < cutoff} <= rows  # the front (0) and just behind it
    assert not rows & {i for i, b in enumerate(beaten) if b > cutoff}


def test_expected_improvement_values_a_network_the_model_is_unsure_of():
    """Past EXPECTATION_FROM results a batch is chosen by expected hypervolume gain over the model's
    posterior. Of two networks at one cost, expected at one error, the one the model is less sure of
    can gain more than the sure one can (the gain is convex in the error), so it goes first; a sure
    network behind the front, expected to gain nothing, goes last."""
    from dvolver import surrogate_search

    nodes = surrogate_search._NODES
    front = np.array([[0.2, 0.8], [0.8, 0.2]])  # error, cost: normalised and minimised
    at = np.stack([
        np.stack([np.full_like(nodes, 0.6), np.full_like(nodes, 0.5)]),  # sure, in a gap of the front
        np.stack([0.6 + 0.3 * nodes, np.full_like(nodes, 0.5)]),  # the same guess, unsure
        np.stack([np.full_like(nodes, 0.9), np.full_like(nodes, 0.9)]),  # sure, behind the front
    ])
    believed = at.mean(axis=2)
    trained = np.array([True, False])
    picks = surrogate_search._expected_batch(at, trained, believed, front, np.full(2, 1.1), 3)
    assert picks == [1, 0, 2]


def test_early_on_the_pool_also_breeds_from_behind_the_fronts_with_wider_mutations(monkeypatch):
    """With two objectives, before WIDE_UNTIL results the parents are the fronts plus as many tournament
    winners from every feasible result, and a mutation may change up to 4 genes; after it (and with
    three objectives throughout), the fronts alone and 1-2 genes."""
    from dvolver import surrogate_search
    from dvolver.pareto import dominates

    space = make_space("nb201")
    algorithm = SurrogateSearch(space, keyer(space), 10, 2, seed=0, cheap=_cheap_second)
    _drive(algorithm, 4)
    F = algorithm.F
    # The fronts, peeled here by pairwise dominance, until they hold the 10 parents a batch of 10 wants.
    left, fronts = set(range(len(F))), []
    while len(fronts) < 10:
        front = [i for i in left if not any(dominates(F[j], F[i]) for j in left)]
        fronts += front
        left -= set(front)
    front_genomes = {algorithm.genomes[i] for i in fronts}

    def breeding(wide_until):
        monkeypatch.setattr(surrogate_search, "WIDE_UNTIL", wide_until)
        parents = algorithm._parents()
        parent = parents[0]
        changed = [sum(a != b for a, b in zip(algorithm._mutant([parent]), parent)) for _ in range(400)]
        return parents, changed

    late, late_changed = breeding(0)
    assert sorted(late) == sorted(front_genomes)
    assert set(late_changed) <= {1, 2}

    early, early_changed = breeding(10_000)
    assert len(early) == 2 * len(late) and sorted(early[:len(late)]) == sorted(front_genomes)
    assert set(early) - front_genomes  # some come from behind the fronts
    # ...chosen by tournament: over many draws the extra parents are dominated about as often as the
    # better of two results drawn at random (6.2 here), far less than one drawn at random (11.9).
    beaten = np.array([sum(dominates(F[j], F[i]) for j in range(len(F))) for i in range(len(F))])
    row = {genome: i for i, genome in enumerate(algorithm.genomes)}
    extra = [beaten[row[g]] for _ in range(50) for g in algorithm._parents()[len(late):]]
    assert abs(np.mean(extra) - np.minimum.outer(beaten, beaten).mean()) < 0.25 * beaten.mean()
    assert max(early_changed) == 4 and 0.08 < np.mean(np.array(early_changed) >= 3) < 0.22  # p = 0.15
    algorithm.m = 3  # the same results, read as a three-objective search's
    assert sorted(breeding(10_000)[0]) == sorted(front_genomes) and set(breeding(10_000)[1]) <= {1, 2}
