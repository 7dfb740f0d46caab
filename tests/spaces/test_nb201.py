import random
import zlib
from collections import defaultdict

import pytest
import torch

from dvolver.costs import count
from search_spaces import make_space
from search_spaces.nb201 import (
    ALL_GENOMES,
    EDGES,
    NB201Cell,
    NB201Options,
    NB201Space,
    NB201Table,
    arch_str,
    edge_terms,
    live_edges,
    parse_arch_str,
)


def _outputs(genome, x):
    """The cell's output with every weighted edge's parameters drawn from what that edge computes,
    so two cells that compute the same thing get the same weights wherever they put them."""
    cell = NB201Cell(genome, x.shape[1])
    terms = edge_terms(genome)
    for edge, module in cell.edges.items():
        gen = torch.Generator().manual_seed(zlib.crc32(terms.get(int(edge), "skip").encode()))
        for p in module.parameters():
            p.data = torch.randn(p.shape, generator=gen)
    return cell.train()(x)


def _classes(space) -> dict[tuple, list]:
    """Every NAS-Bench-201 cell, grouped by the space's canonical form."""
    classes = defaultdict(list)
    for genome in ALL_GENOMES:
        classes[space.canonical(genome)].append(genome)
    return classes


def _assert_merged_cells_compute_alike(classes: dict, x: torch.Tensor, rng: random.Random, samples: int) -> None:
    """Up to four members of each of `samples` classes that merge cells give their first member's output."""
    merged = [members for members in classes.values() if len(members) > 1]
    for members in rng.sample(merged, samples):
        reference = _outputs(members[0], x)
        for other in rng.sample(members, min(4, len(members))):
            assert torch.allclose(_outputs(other, x), reference, atol=1e-5), (arch_str(members[0]), arch_str(other))


def test_cells_with_one_canonical_form_compute_the_same_function():
    classes = _classes(NB201Space())
    assert len(classes) < len(ALL_GENOMES) / 2
    x = torch.randn(4, 3, 6, 6)
    rng = random.Random(0)
    _assert_merged_cells_compute_alike(classes, x, rng, 150)
    canonicals = list(classes)
    for a, b in (rng.sample(canonicals, 2) for _ in range(150)):
        assert not torch.allclose(_outputs(a, x), _outputs(b, x), atol=1e-3), (arch_str(a), arch_str(b))


def test_table_canonical_forms_merge_only_the_same_network_at_the_same_cost(nb201_table):
    space = make_space("nb201", {"table": str(nb201_table)})
    classes = _classes(space)
    cost = {g: (space.table.lookup(g).flops, space.table.lookup(g).params) for g in ALL_GENOMES}
    for members in classes.values():
        assert len({cost[g] for g in members}) == 1, arch_str(members[0])
    x = torch.randn(3, 4, 6, 6)
    rng = random.Random(5)
    _assert_merged_cells_compute_alike(classes, x, rng, 100)
    canonicals = list(classes)
    for a, b in (rng.sample(canonicals, 2) for _ in range(200)):
        same_function = torch.allclose(_outputs(a, x), _outputs(b, x), atol=1e-3)
        assert not same_function or cost[a] != cost[b], (arch_str(a), arch_str(b))


def test_dead_edges_merge_when_trained_but_not_in_table_mode(nb201_table):
    live_only = parse_arch_str("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_3x3~1|none~2|")
    dead_conv = parse_arch_str("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_3x3~1|none~2|")
    assert live_edges(dead_conv)[1] is False  # node 2 feeds nothing
    trained = NB201Space()
    assert trained.canonical(live_only) == trained.canonical(dead_conv)
    table = make_space("nb201", {"table": str(nb201_table)})
    assert table.table.lookup(live_only).flops < table.table.lookup(dead_conv).flops
    assert table.canonical(live_only) != table.canonical(dead_conv)


def test_table_reads_every_cell_and_round_trips_arch_strings(nb201_table):
    table = NB201Table(nb201_table)
    assert len(table.rows) == 15625
    for genome in list(table.rows)[:500]:
        assert parse_arch_str(arch_str(genome)) == genome


def test_builder_is_the_benchmark_network(nb201_table):
    """Where every edge is live, our network has the benchmark's params exactly, and fvcore's
    conv + linear multiply-adds equal the table's "FLOPs" (the benchmark counts MACs)."""
    table = NB201Table(nb201_table)
    space = NB201Space(NB201Options())
    all_live = [g for g in table.rows if live_edges(g) == tuple(op != 0 for op in g) and all(g)]
    for genome in random.Random(1).sample(all_live, 12):
        model = space.build(genome, (3, 32, 32), 10)
        costs = count(model, (3, 32, 32))
        row = table.lookup(genome)
        assert costs.params == row.params
        from fvcore.nn import FlopCountAnalysis

        by_op = FlopCountAnalysis(model.eval(), torch.zeros(1, 3, 32, 32)).unsupported_ops_warnings(False).by_operator()
        assert abs(by_op["conv"] + by_op["linear"] - row.flops) <= 20
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_table_with_missing_columns_is_refused(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("arch_str,flops_m\n" + arch_str((1,) * len(EDGES)) + ",1.0\n")
    with pytest.raises(ValueError, match="accuracy column.*params or params_m"):
        NB201Table(bad)
