import numpy as np
import pytest
import torch

from dvolver.costs import count
from search_spaces import genome_key, make_space
from search_spaces.base import mask_to_set
from search_spaces.nasnet import NASNET_A, OPS, Cell, NASNetSpace, canonical_cell, join, split

SPACE = NASNetSpace()


def test_nasnet_a_genome_is_the_published_cell():
    assert len(NASNET_A) == 42
    normal, reduction = split(NASNET_A, 5)
    # NASNet-A's normal cell outputs six states (h_{k-1} forced in, plus the five blocks);
    # its reduction cell outputs four.
    assert normal.concat() == [1, 2, 3, 4, 5, 6]
    assert reduction.concat() == [3, 4, 5, 6]
    assert OPS[normal.blocks[0][1]] == "sep_conv_5x5" and OPS[reduction.blocks[1][1]] == "max_pool_3x3"
    SPACE.codec().check(NASNET_A)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 7, 7), (3, 224, 224)])
def test_builds_for_any_input_size(shape):
    model = SPACE.build(NASNET_A, shape, 10)
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_n_and_f_shape_the_network():
    space = make_space("nasnet", {"cells_per_stage": 2, "filters": 12})
    model = space.build(NASNET_A, (3, 32, 32), 7)
    assert len(model.cells) == 3 * 2 + 2  # N normal cells per stage, two reduction cells
    assert model.stem[0].out_channels == 3 * 12
    assert model.head[-1].out_features == 7
    # F doubles at each reduction: the last normal cell works on 4F channels, six states wide.
    assert model.cells[-1].out_channels == 4 * 12 * 6


def _permute_blocks(cell: Cell, rng: np.random.Generator) -> Cell:
    """The same cell written differently: independent blocks reordered, block inputs swapped,
    and unused states forced into extra_concat (they are output anyway)."""
    blocks = list(cell.blocks)
    n = len(blocks)
    order: list[int] = []
    placed: set[int] = {0, 1}
    while len(order) < n:
        ready = [b for b in range(n) if b not in order and {blocks[b][0], blocks[b][2]} <= placed]
        pick = ready[rng.integers(len(ready))]
        order.append(pick)
        placed.add(pick + 2)
    new_index = {0: 0, 1: 1} | {old + 2: new + 2 for new, old in enumerate(order)}
    out = []
    for old in order:
        a, oa, b, ob = blocks[old]
        pair = [(new_index[a], oa), (new_index[b], ob)]
        if rng.random() < 0.5:
            pair.reverse()
        out.append((pair[0][0], pair[0][1], pair[1][0], pair[1][1]))
    renamed = Cell(tuple(out), 0)
    forced = {new_index[s] for s in mask_to_set(cell.extra)} & renamed.used()
    unused = [s for s in range(renamed.num_states - 1) if s not in renamed.used()]
    forced |= {s for s in unused if rng.random() < 0.5}
    mask = sum(1 << s for s in forced)
    return Cell(renamed.blocks, mask)


def test_equivalent_genomes_share_one_key_and_one_cost():
    rng = np.random.default_rng(0)
    for i in range(60):
        genome = SPACE.sample(rng)
        genome = tuple(g if i not in SPACE.codec().set_genes else int(rng.integers(0, 64))
                       for i, g in enumerate(genome))
        normal, reduction = split(genome, 5)
        twin = join(_permute_blocks(normal, rng), _permute_blocks(reduction, rng))
        SPACE.codec().check(twin)
        assert genome_key("nasnet", SPACE.canonical(genome)) == genome_key("nasnet", SPACE.canonical(twin))
        if i < 6:  # counting costs takes a trace; a few suffice to show equal keys mean equal networks
            a = count(SPACE.build(genome, (1, 8, 8), 10), (1, 8, 8))
            b = count(SPACE.build(twin, (1, 8, 8), 10), (1, 8, 8))
            assert (a.macs, a.params) == (b.macs, b.params)


def test_canonical_form_is_stable_and_separates_different_cells():
    rng = np.random.default_rng(1)
    keys = set()
    for _ in range(200):
        genome = SPACE.sample(rng)
        canon = SPACE.canonical(genome)
        assert SPACE.canonical(canon) == canon
        SPACE.codec().check(canon)
        keys.add(canon)
    assert len(keys) == 200  # random cells in this huge space are all different networks
    normal, reduction = split(NASNET_A, 5)
    changed = Cell(((normal.blocks[0][0], 2) + normal.blocks[0][2:],) + normal.blocks[1:], normal.extra)
    assert canonical_cell(changed) != canonical_cell(normal)


def test_codec_operators_keep_genomes_valid():
    codec = SPACE.codec()
    rng = np.random.default_rng(2)
    for _ in range(300):
        i = int(rng.integers(len(codec)))
        value = int(rng.integers(codec.lower[i], codec.upper[i] + 1))
        mutated = codec.mutate_gene(i, value, rng)
        assert mutated != value and codec.lower[i] <= mutated <= codec.upper[i]
    set_gene = max(codec.set_genes)
    for a, b in [(0b0101, 0b0010), (0b11, 0b01), (0, 0b100000)]:
        x, y = codec.cross_gene(set_gene, a, b, rng)
        # The children share out exactly the parents' elements.
        assert sorted(mask_to_set(x) + mask_to_set(y)) == sorted(mask_to_set(a) + mask_to_set(b))
