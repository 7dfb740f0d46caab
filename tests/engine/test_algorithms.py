import numpy as np

from dvolver.algorithms import RandomSearch
from dvolver.ask_tell import Told
from dvolver.nsga2 import NSGA2
from search_spaces import make_space
from tests.helpers import keyer


def _drive(algorithm, generations, objective):
    asked = []
    for _ in range(generations):
        genomes = algorithm.ask()
        asked.append(genomes)
        F = np.array([objective(g) for g in genomes], dtype=float)
        algorithm.tell(genomes, Told.finished(F))
    return asked


def _toy_objective(g):
    return [-sum(g), sum(1 for x in g if x == 3)]


def test_nsga2_is_reproducible_and_never_asks_a_network_twice():
    space = make_space("nb201")
    runs = [_drive(NSGA2(space, keyer(space), 16, 2, seed=7), 12, _toy_objective) for _ in range(2)]
    assert runs[0] == runs[1]
    keys = [keyer(space)(g) for batch in runs[0] for g in batch]
    assert len(keys) == len(set(keys))
    other = _drive(NSGA2(space, keyer(space), 16, 2, seed=8), 12, _toy_objective)
    assert other != runs[0]


def test_nsga2_improves_on_its_initial_population():
    space = make_space("nb201")
    asked = _drive(NSGA2(space, keyer(space), 16, 2, seed=1), 15, _toy_objective)
    first = max(sum(g) for g in asked[0])
    last = max(sum(g) for batch in asked[-3:] for g in batch)
    assert last > first


def test_random_search_draws_distinct_networks():
    space = make_space("nasnet")
    rs = RandomSearch(space, keyer(space), 10, seed=0)
    batches = [rs.ask() for _ in range(3)]
    keys = [keyer(space)(g) for b in batches for g in b]
    assert len(keys) == 30 == len(set(keys))
    for g in batches[0]:
        space.codec().check(g)
        assert g[20] == 0 and g[41] == 0  # Dvolver starts with empty extra_concat


def test_an_unknown_algorithm_name_is_an_error_not_nsga2():
    import pytest

    from dvolver.algorithms import make_algorithm
    from dvolver.errors import DvolverError

    space = make_space("nb201")
    with pytest.raises(DvolverError, match="unknown algorithm 'nsga3'; choose among surrogate, nsga2, random, grid"):
        make_algorithm("nsga3", space, keyer(space), 8, 2, 0)


def test_told_says_what_each_row_is_and_rejects_nan_and_unknown_statuses():
    import pytest

    told = Told(np.array([[-0.9, 1.0], [np.inf, 2.0], [np.inf, 3.0]]), np.array([0.0, np.inf, 0.5]),
                ("finished", "failed", "infeasible"))
    assert told.measured.tolist() == [True, False, False]
    with pytest.raises(ValueError, match="NaN"):
        Told(np.array([[np.nan, 1.0]]), np.zeros(1), ("finished",))
    with pytest.raises(ValueError, match="unknown status"):
        Told(np.array([[0.0, 1.0]]), np.zeros(1), ("lost",))
    with pytest.raises(ValueError, match="one row each"):
        Told(np.array([[0.0, 1.0]]), np.zeros(2), ("finished",))


def test_nsga2_ranks_a_failed_candidate_below_every_measured_one():
    """A failed row (F and G at +inf) must neither crash pymoo's crowding (inf - inf) nor survive."""
    space = make_space("nb201")
    algorithm = NSGA2(space, keyer(space), 8, 2, seed=0)
    genomes = algorithm.ask()
    F = np.array([_toy_objective(g) for g in genomes], dtype=float)
    G = np.zeros(len(genomes))
    F[0], G[0] = np.inf, np.inf
    algorithm.tell(genomes, Told(F, G, ("failed",) + ("finished",) * (len(genomes) - 1)))
    offspring = algorithm.ask()
    algorithm.tell(offspring, Told.finished(np.array([_toy_objective(g) for g in offspring], dtype=float)))
    survivors = {tuple(int(v) for v in x) for x in algorithm._algorithm.pop.get("X")}
    assert len(survivors) == 8 and genomes[0] not in survivors
    assert np.isfinite(algorithm._algorithm.pop.get("F")).all()
