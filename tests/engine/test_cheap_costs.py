"""Costs summed from cached unit counts equal fvcore's count of the whole network, exactly.

Each check builds the network and counts it whole with `costs.count`, the way the driver did before
units were cached, and compares every figure (macs, flops, params, uncounted_ops, non_mac_ops, and
the order of their ops) with `unit_costs.count_genome` on the same genome.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import torch

from dvolver import SearchSpec, unit_costs
from dvolver.costs import Costs, count
from dvolver.evaluation import cheap_metrics
from search_spaces import FIXED_SPACES, make_space
from search_spaces.nasnet import NASNET_A, NASNetSpace, join, split
from search_spaces.nb201 import ALL_GENOMES, live_edges

pytestmark = pytest.mark.slow

DIGITS = (1, 8, 8)
CIFAR = (3, 32, 32)
GENOMES = 200


def _figures(c: Costs) -> tuple:
    return (c.macs, c.flops, c.params, c.uncounted_ops, c.non_mac_ops, list(c.uncounted_ops), list(c.non_mac_ops))


def _whole(job: tuple) -> Costs:
    """The reference: the built network traced whole by fvcore (in a worker process)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same random weights whichever worker builds it
    space, genome, shape, classes = job
    return count(space.build(genome, shape, classes), shape)


@pytest.fixture(scope="module")
def references():
    """Whole-network counts on every core: tracing them is what the checks spend their time on."""
    with ProcessPoolExecutor(max(1, min(4, os.cpu_count() or 1)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        yield lambda space, genomes, shape, classes: list(
            pool.map(_whole, [(space, g, shape, classes) for g in genomes], chunksize=8))


def _mismatches(references, space, genomes, shape, classes=10):
    """Genomes whose summed costs differ from the whole network's, with both figures."""
    bad = []
    for genome, whole in zip(genomes, references(space, genomes, shape, classes)):
        summed = unit_costs.count_genome(space, genome, shape, classes)
        assert summed is not None
        if _figures(summed) != _figures(whole):
            bad.append((genome, _figures(whole), _figures(summed)))
    return bad


def _with_extras(space: NASNetSpace, genome, rng):
    """The genome with random extra_concat bitmasks (sampling leaves them empty)."""
    normal, reduction = split(genome, space.options.blocks)
    top = 1 << (space.options.blocks + 1)
    return join(type(normal)(normal.blocks, int(rng.integers(top))),
                type(reduction)(reduction.blocks, int(rng.integers(top))))


def _nasnet_genomes(space: NASNetSpace, seed: int, n: int = GENOMES):
    """n random genomes, half with extra_concat bits, a quarter of those mutated further; then
    edge cases: NASNet-A, every op one type, every block reading state 0, every state forced out."""
    rng = np.random.default_rng(seed)
    codec = space.codec()
    genomes = []
    for i in range(n):
        genome = space.sample(rng)
        if i % 2:
            genome = _with_extras(space, genome, rng)
        if i % 4 == 3:
            genome = list(genome)
            for gene in rng.choice(len(genome), size=3, replace=False):
                genome[gene] = codec.mutate_gene(int(gene), genome[gene], rng)
            genome = tuple(genome)
        codec.check(genome)
        genomes.append(genome)
    B = space.options.blocks
    for op in range(6):
        genomes.append(tuple(([0, op, 1, op] * B + [0]) * 2))
    genomes.append(tuple(([0, 0, 0, 3] * B + [(1 << (B + 1)) - 1]) * 2))
    genomes.append(NASNET_A)
    return genomes


@pytest.mark.parametrize("options,shape", [({}, DIGITS), ({"cells_per_stage": 2, "filters": 32}, CIFAR)],
                         ids=["default-digits", "cifar-proxy"])
def test_nasnet_summed_costs_equal_the_whole_network(references, options, shape):
    space = make_space("nasnet", options)
    genomes = _nasnet_genomes(space, seed=len(options))
    assert len(set(genomes)) >= GENOMES
    assert _mismatches(references, space, genomes, shape) == []


@pytest.mark.parametrize("shape", [(3, 7, 9), (3, 100, 60)], ids=["odd-sizes", "stride2-stem"])
def test_nasnet_at_odd_and_large_inputs(references, shape):
    space = make_space("nasnet", {"filters": 4})
    assert _mismatches(references, space, _nasnet_genomes(space, seed=7, n=4)[:6], shape, classes=3) == []


def test_nb201_summed_costs_equal_the_whole_network(references):
    space = make_space("nb201")
    rng = np.random.default_rng(11)
    picks = rng.choice(len(ALL_GENOMES), size=GENOMES, replace=False)
    edge_cases = [
        (0, 0, 0, 0, 0, 0),  # no edge: the cell emits zeros
        (3, 0, 0, 0, 0, 0),  # a conv that never reaches the output: dead, zeros again
        (0, 0, 0, 3, 0, 0),  # only the direct edge
        (0, 0, 3, 2, 0, 4),  # 2<-1 and 3<-2 dead (node 1 gets nothing)
        (1, 1, 1, 1, 1, 1),  # skips only: additions, no params
        (4, 4, 4, 4, 4, 4),
        (3, 3, 3, 3, 3, 3),
    ]
    genomes = [ALL_GENOMES[i] for i in picks] + edge_cases
    assert sum(not all(live_edges(g)) for g in genomes) > 50  # dead edges are well represented
    assert _mismatches(references, space, genomes, CIFAR) == []


def test_every_backbone_and_a_pruned_backbone(references):
    for name in FIXED_SPACES:
        assert _mismatches(references, make_space(name), [()], CIFAR) == [], name
    spec = SearchSpec(space="conv2", pruning={"methods": ["aslp"], "budgets": [0.5]})
    space = spec.search_space()
    genomes = [space.sample(np.random.default_rng(s)) for s in range(2)]
    assert _mismatches(references, space, genomes, DIGITS) == []


def test_pruned_candidates_cheap_metrics_are_the_dense_networks_count(references):
    spec = SearchSpec(pruning={"methods": ["aslp"], "budgets": [0.5, 0.1]})
    space = spec.search_space()
    rng = np.random.default_rng(3)
    genomes = [space.sample(rng) for _ in range(GENOMES)]
    methods = {space.split(g)[1].method for g in genomes}
    assert methods == {"none", "aslp"}
    bad = []
    for genome, whole in zip(genomes, references(space, genomes, DIGITS, 10)):
        metrics = cheap_metrics(genome, spec, DIGITS, 10)
        summed = unit_costs.count_genome(space, genome, DIGITS, 10)
        assert summed is not None and metrics["cost_source"].startswith("fvcore")
        if space.split(genome)[1].method == "none":
            # A random init holds an exact-zero weight about once in 2**24 draws, and a traced count then
            # adds sparse figures; an untrained dense network's costs are dense.
            dense = {k: v for k, v in whole.as_metrics().items() if k not in ("sparse_macs", "sparse_flops",
                                                                             "nonzero_params")}
            want = dense | {"cost_source": "fvcore"}
        else:
            want = {"dense_macs": whole.macs, "dense_flops": whole.flops, "dense_params": whole.params,
                    "cost_source": "fvcore, after pruning"}
        if metrics != want or _figures(summed) != _figures(whole):
            bad.append(genome)
    assert bad == []


def test_a_genome_counted_again_costs_no_fvcore_work():
    space = make_space("nasnet")
    cache = unit_costs.UnitCache()
    genome = space.sample(np.random.default_rng(0))
    first = unit_costs.count_genome(space, genome, DIGITS, 10, cache=cache)
    after_first = cache.info()
    assert after_first.counted == after_first.units > 10
    assert unit_costs.count_genome(space, genome, DIGITS, 10, cache=cache) == first
    again = cache.info()
    assert again.counted == after_first.counted and again.units == after_first.units
    assert again.hits - after_first.hits == len(space.op_inventory(genome, DIGITS, 10))
    # The same network written differently (blocks reordered, inputs swapped) has the same units.
    assert unit_costs.count_genome(space, space.canonical(genome), DIGITS, 10, cache=cache) == first
    assert cache.info().counted == after_first.counted


def test_the_driver_counts_through_the_process_wide_cache_and_leaves_torch_rng_alone():
    spec = SearchSpec()
    genome = spec.search_space().sample(np.random.default_rng(1))
    cheap_metrics(genome, spec, DIGITS, 10)
    before = unit_costs.CACHE.info()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    cheap_metrics(genome, spec, DIGITS, 10)
    assert torch.equal(torch.rand(3), expected)
    after = unit_costs.CACHE.info()
    assert after.counted == before.counted and after.hits > before.hits
    # A new genome: only the units not met before are counted, with the caller's RNG untouched.
    torch.manual_seed(0)
    cheap_metrics(spec.search_space().sample(np.random.default_rng(2)), spec, DIGITS, 10)
    assert torch.equal(torch.rand(3), expected)


def test_the_cache_is_bounded_and_a_space_without_units_gets_none():
    space = make_space("nasnet", {"filters": 4})
    cache = unit_costs.UnitCache(max_units=5)
    genome = space.sample(np.random.default_rng(4))
    unbounded = unit_costs.count_genome(space, genome, DIGITS, 10, cache=unit_costs.UnitCache())
    assert unit_costs.count_genome(space, genome, DIGITS, 10, cache=cache) == unbounded
    assert cache.info().units == 5

    class NoUnits:
        name = "opaque"

    assert unit_costs.count_genome(NoUnits(), (), DIGITS, 10) is None
