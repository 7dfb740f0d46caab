import numpy as np

from dvolver.algorithms import NSGA2, RandomSearch
from search_spaces import genome_key, make_space


def _keyer(space):
    return lambda g: genome_key(space.name, space.canonical(g))


def _drive(algorithm, generations, objective):
    asked = []
    for _ in range(generations):
        genomes = algorithm.ask()
        asked.append(genomes)
        F = np.array([objective(g) for g in genomes], dtype=float)
        algorithm.tell(genomes, F, np.zeros((len(genomes), 1)))
    return asked


def _toy_objective(g):
    return [-sum(g), sum(1 for x in g if x == 3)]


def test_nsga2_is_reproducible_and_never_asks_a_network_twice():
    space = make_space("nb201")
    runs = [_drive(NSGA2(space, _keyer(space), 16, 2, seed=7), 12, _toy_objective) for _ in range(2)]
    assert runs[0] == runs[1]
    keys = [_keyer(space)(g) for batch in runs[0] for g in batch]
    assert len(keys) == len(set(keys))
    other = _drive(NSGA2(space, _keyer(space), 16, 2, seed=8), 12, _toy_objective)
    assert other != runs[0]


def test_nsga2_improves_on_its_initial_population():
    space = make_space("nb201")
    asked = _drive(NSGA2(space, _keyer(space), 16, 2, seed=1), 15, _toy_objective)
    first = max(sum(g) for g in asked[0])
    last = max(sum(g) for batch in asked[-3:] for g in batch)
    assert last > first


def test_random_search_draws_distinct_networks():
    space = make_space("nasnet")
    rs = RandomSearch(space, _keyer(space), 10, seed=0)
    batches = [rs.ask() for _ in range(3)]
    keys = [_keyer(space)(g) for b in batches for g in b]
    assert len(keys) == 30 == len(set(keys))
    for g in batches[0]:
        space.codec().check(g)
        assert g[20] == 0 and g[41] == 0  # Dvolver starts with empty extra_concat
