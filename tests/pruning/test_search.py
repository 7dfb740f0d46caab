"""Pruning as a search: the pruning genome in the spec, pruned candidates on the front, their exports."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from dvolver import data
from dvolver.algorithms import GridSearch
from dvolver.api import run_search
from dvolver.errors import SpecError
from dvolver.export import export_candidate
from dvolver.spec import SearchSpec
from dvolver.store import Store
from dvolver.training import accuracy
from search_spaces import genome_key
from tests.helpers import TINY

QUICK = {"epochs": 2, "batch_size": 32, "train_limit": 300}

BAD_PRUNING = {
    "unknown method": ({"space": "conv4", "pruning": {"methods": ["obd"]}}, "unknown pruning method 'obd'"),
    "budget zero": ({"space": "conv4", "pruning": {"methods": ["reparam"], "budgets": [0.1, 0.0]}},
                    r"budget 0.0 is outside (0, 1]"),
    "budget above one": ({"space": "conv4", "pruning": {"methods": ["reparam"], "budgets": [1.5]}},
                         r"budget 1.5 is outside (0, 1]"),
    "joint without convs": ({"space": "lenet300", "pruning": {"methods": ["joint"]}},
                            "joint removes conv filters and LeNet300 has no Conv2d layer"),
    "joint on cells": ({"space": "nasnet", "pruning": {"methods": ["joint"]}},
                       "nasnet cells join branches whose filters it cannot remove"),
    "backbone alone": ({"space": "conv4"}, "only its pruning can be searched"),
    "bad option": ({"space": "conv4", "pruning": {"methods": ["reparam"], "options": {"reparam": {"lam": -1}}}},
                   "pruning: options for reparam: lam: Input should be greater than 0"),
    "option of another method": ({"space": "conv4", "pruning": {"methods": ["reparam"], "options": {"aslp": {}}}},
                                 "options for 'aslp', which is not among the methods reparam"),
}


@pytest.mark.parametrize("case", list(BAD_PRUNING))
def test_bad_pruning_is_refused_before_anything_runs(case, tmp_path):
    spec, message = BAD_PRUNING[case]
    db = tmp_path / "store.db"
    with pytest.raises(SpecError) as caught:
        run_search(spec, db=str(db), executor="inline")
    assert message in str(caught.value)
    assert not db.exists()


def test_a_table_search_cannot_be_pruned(nb201_table):
    with pytest.raises(SpecError, match="trains nothing, so it cannot be pruned"):
        SearchSpec.from_dict({"space": "nb201", "space_options": {"table": str(nb201_table)},
                              "pruning": {"methods": ["aslp"]}})


def test_learned_sparsity_ignores_the_budget_gene_and_set_budgets_do_not():
    spec = SearchSpec.from_dict({"space": "conv2", "pruning": {"methods": ["aslp", "reparam"], "budgets": [0.5, 0.1]}})
    space = spec.search_space()
    assert space.split((0, 1))[1].method == "none"
    key = lambda g: genome_key(space.name, space.canonical(g))  # noqa: E731
    assert key((1, 0)) == key((1, 1))  # aslp
    assert key((2, 0)) != key((2, 1))  # reparam 0.5 / 0.1
    assert key((0, 0)) == key((0, 1))  # unpruned
    grid = GridSearch(space, key, batch=10)
    asked = grid.ask()
    assert [space.split(g)[1] for g in asked] == [space.split(g)[1] for g in [(0, 0), (1, 0), (2, 0), (2, 1)]]
    assert grid.ask() == []


def _val_accuracy(model: torch.nn.Module, dataset) -> float:
    return accuracy(model.eval(), dataset.x_val, dataset.y_val, torch.device("cpu"), channels_last=True)


def test_pruned_backbone_candidates_export_and_reload_to_their_measured_accuracy(tmp_path):
    db = str(tmp_path / "store.db")
    res = run_search({"space": "conv2", "algorithm": "grid", "population": 4, "evaluations": 4, "training": QUICK,
                      "pruning": {"methods": ["magnitude", "joint"], "budgets": [0.5]}}, db=db, executor="inline")
    store, dataset = Store(db), data.load("digits")
    by_method = {(c.metrics.get("pruning") or {}).get("method", "none"): c for c in res.candidates}
    assert set(by_method) == {"none", "magnitude", "joint"}

    masked = by_method["magnitude"]
    m = masked.metrics
    assert m["cost_kind"] == "sparse" and m["macs"] == m["sparse_macs"] < m["masked_macs"] == m["dense_macs"]
    assert m["flops"] == 2 * m["macs"] and m["params"] == m["nonzero_params"] < m["dense_params"]
    assert m["pruning"]["kept_fraction"] == pytest.approx(0.5, abs=1e-6)
    for fmt in ("state_dict", "sparse"):
        out = export_candidate(store, res.search_id, masked.id, fmt)
        state = torch.load(io.BytesIO(out.data), weights_only=True)
        if fmt == "sparse":
            assert any(v.is_sparse for v in state.values())
            state = {k: v.to_dense() if v.is_sparse else v for k, v in state.items()}
        model = res.spec.search_space().build(masked.genome, dataset.input_shape, dataset.num_classes)
        model.load_state_dict(state)
        assert _val_accuracy(model, dataset) == pytest.approx(m["acc"])

    narrow = by_method["joint"]
    n = narrow.metrics
    assert n["cost_kind"] == "dense" and n["macs"] < n["dense_macs"] and n["params"] < n["dense_params"]
    program = torch.export.load(io.BytesIO(export_candidate(store, res.search_id, narrow.id, "torch_export").data))
    with torch.no_grad():  # an exported program is already in eval mode and refuses .eval()
        predicted = program.module()(dataset.x_val).argmax(1)
    assert 100.0 * float((predicted == dataset.y_val).float().mean()) == pytest.approx(n["acc"])
    with pytest.raises(Exception, match="no masked weights to store sparse"):
        export_candidate(store, res.search_id, narrow.id, "sparse")


def test_nasnet_and_aslp_share_one_front_with_honest_costs(tmp_path):
    """Pruned and unpruned networks are searched together and ranked on one front, each at its own cost
    kind. Which kinds the front then holds is the search's business (it varies with the model and the
    seed), so the test checks that the front is the non-dominated set of both kinds together."""
    from dvolver.pareto import non_dominated

    spec = TINY | {"training": QUICK, "population": 6, "evaluations": 12, "seed": 1,
                   "pruning": {"methods": ["aslp"], "options": {"aslp": {"mask_lr": 200}}}}
    res = run_search(spec, db=str(tmp_path / "store.db"), executor="inline")
    done = [c for c in res.candidates if c.status == "finished"]
    pruned = [c for c in done if c.metrics.get("pruning")]
    unpruned = [c for c in done if not c.metrics.get("pruning")]
    assert pruned and unpruned, [(c.metrics.get("pruning"), c.objectives) for c in res.candidates]
    for c in pruned:
        m = c.metrics
        assert m["pruning"]["method"] == "aslp" and m["cost_kind"] == "sparse"
        assert m["flops"] == 2 * m["macs"] == 2 * m["sparse_macs"] < 2 * m["dense_macs"]
        assert m["macs"] == pytest.approx(m["dense_macs"] * m["pruning"]["kept_fraction"], rel=0.2)
    for c in unpruned:
        assert "cost_kind" not in c.metrics and "sparse_macs" not in c.metrics
    F = np.array([[-c.objectives["acc"], c.objectives["flops"]] for c in done])
    assert {c.id for c in res.front} == {c.id for c, keep in zip(done, non_dominated(F)) if keep}
    accs = np.array([c.objectives["acc"] for c in res.front])
    assert accs.max() > 30  # something on the front learned; chance is 10%
