"""The proxy-to-final rank correlations (tau-b and Spearman with ties) against hand-computed values and
scipy.stats, and the fronts of a hand-built store: which proxy-front member fell off the final front."""

from __future__ import annotations

import numpy as np
import pytest

from dvolver.rank_survival import kendall_tau_b, spearman_rho, survival
from dvolver.spec import SearchSpec
from dvolver.store import Store

CASES = [
    # x, y, tau-b, rho, worked out by hand
    ([1, 2, 3, 4], [1, 3, 2, 4], 4 / 6, 0.8),  # one discordant pair of six; sum d^2 = 2
    ([1, 1, 2, 3], [1, 2, 2, 3], 4 / 5, 3.75 / 4.5),  # one tie in each: 4 / sqrt(5 * 5); mean ranks shared
    ([3, 2, 1], [1, 2, 3], -1.0, -1.0),
]


@pytest.mark.parametrize(("x", "y", "tau", "rho"), CASES)
def test_the_correlations_match_hand_computed_values(x, y, tau, rho):
    assert kendall_tau_b(x, y) == pytest.approx(tau)
    assert spearman_rho(x, y) == pytest.approx(rho)


def test_the_correlations_are_undefined_for_fewer_than_two_values_or_one_value_only():
    assert kendall_tau_b([1.0], [2.0]) is None and spearman_rho([1.0], [2.0]) is None
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None and spearman_rho([1, 1, 1], [1, 2, 3]) is None


def test_the_correlations_match_scipy_with_ties():
    from scipy import stats  # installed with scikit-learn, a dependency: never a skip
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 5, 9).astype(float), rng.integers(0, 5, 9).astype(float)
        assert kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
        assert spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_tau_b_is_the_same_whatever_the_chunk_of_pairs_compared_at_once():
    x = np.random.default_rng(0).normal(size=700)
    y = x + np.random.default_rng(1).normal(size=700)
    assert kendall_tau_b(x, y, chunk=64) == pytest.approx(kendall_tau_b(x, y, chunk=1000))


def _finished(store: Store, search_id: int, candidate_id: int | None, val: float, test: float, params: int) -> int:
    [training_id] = store.create_trainings(search_id, [{"candidate_id": candidate_id, "genome": (1,), "space": "nasnet",
                                                        "recipe": {}, "epochs": 1}])
    store.take_training(training_id)
    store.record_epoch(training_id, {"epoch": 1, "val_acc": val}, b"checkpoint")
    store.finish_training(training_id, {"test_acc": test, "macs": params, "flops": 2 * params, "params": params,
                                        "latency_ms": 1.0}, b"weights")
    return training_id


def test_a_proxy_front_member_beaten_at_final_scale_falls_off_the_final_front(store_url):
    store = Store(store_url)
    spec = SearchSpec.from_dict({"objectives": ["acc", "params"]}).model_dump(mode="json")
    search = store.create_search(spec, {})
    # Proxy: a (90 %, 100), b (80 %, 50) and c (70 %, 10) are the front; d (60 %, 200) is dominated.
    a, b, c, d = (store.record(search, f"nasnet:{i}", (i,), "finished", {"acc": acc, "params": params}).id
                  for i, (acc, params) in enumerate([(90, 100), (80, 50), (70, 10), (60, 200)]))
    _finished(store, search, a, val=91, test=90, params=1000)
    tb = _finished(store, search, b, val=93, test=92, params=500)  # now beats a on both objectives
    tc = _finished(store, search, c, val=85, test=84, params=100)
    reference = _finished(store, search, None, val=80, test=80, params=2000)
    s = survival(store, search)
    assert [p["candidate"] for p in s.pairs] == [a, b, c]
    assert s.kendall_tau_val == pytest.approx(1 / 3) and s.spearman_rho_val == pytest.approx(0.5)
    assert s.proxy_front == [a, b, c] and s.final_front == [tb, tc]
    assert s.fell_off == [a] and s.not_retrained == [] and s.references == [reference]
    assert d not in s.proxy_front
