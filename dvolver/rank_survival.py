"""How well a search's proxy ranking survives final training (issue 19): rank correlations between the
candidates' proxy accuracy and their final accuracy, and the final front against the proxy front.

The proxy accuracy is a candidate's validation accuracy in the search; the final ones are its training's
validation accuracy (what the search optimised, at final scale) and test accuracy (never optimised). The final
front is taken over test accuracy and the search's cost objectives measured on the final networks, with no
constraints: the search's bounds were set for the proxy's scale. Reference architectures (trainings with no
candidate) join the final front, so a found network can fall off it to a hand-designed one, but have no proxy
accuracy to correlate. A candidate trained more than once counts by its latest finished training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .front import pareto_front
from .objectives import OBJECTIVES
from .pareto import non_dominated
from .spec import SearchSpec
from .store import Store, Training

# Where a final training holds each objective's value, measured on the network at its final scale.
FINAL_VALUES = {"acc": "test_acc", "flops": "flops", "macs": "macs", "params": "params", "latency": "latency_ms"}


@dataclass(frozen=True)
class Survival:
    search_id: int
    objectives: list[str]
    # one per retrained candidate: training, candidate, proxy_acc, val_acc, test_acc
    pairs: list[dict[str, float | int | None]]
    kendall_tau_val: float | None  # None: fewer than two pairs, or every value tied
    spearman_rho_val: float | None
    kendall_tau_test: float | None
    spearman_rho_test: float | None
    proxy_front: list[int]  # candidate ids
    final_front: list[int]  # training ids, references included
    fell_off: list[int]  # proxy-front candidates retrained and not on the final front
    not_retrained: list[int]  # proxy-front candidates with no finished training
    references: list[int]  # training ids of the reference architectures


def kendall_tau_b(x: Sequence[float], y: Sequence[float], chunk: int = 512) -> float | None:
    """Kendall's tau-b, which corrects for ties in either ranking (as scipy.stats.kendalltau); None when it
    is undefined (fewer than two values, or one side all tied). The pairs are compared `chunk` rows at a
    time, so a whole table's 15625 cells fit in memory."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("kendall_tau_b needs two 1-d samples of the same length")
    both = untied_x = untied_y = 0
    for start in range(0, len(x) - 1, chunk):
        stop = min(start + chunk, len(x))
        # pairs (i, j) with i in this chunk and j after i
        later = np.arange(start, stop)[:, None] < np.arange(start + 1, len(x))[None, :]
        dx = np.sign(x[start:stop, None] - x[None, start + 1 :]).astype(np.int8) * later
        dy = np.sign(y[start:stop, None] - y[None, start + 1 :]).astype(np.int8) * later
        both += int(np.sum(dx * dy, dtype=np.int64))
        untied_x += int(np.count_nonzero(dx))
        untied_y += int(np.count_nonzero(dy))
    return both / math.sqrt(float(untied_x) * float(untied_y)) if untied_x and untied_y else None


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's correlation of the ranks, tied values sharing their mean rank."""
    if len(x) < 2:
        return None
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum()) / denominator if denominator else None


def _ranks(values: Sequence[float]) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):  # ties share the mean of the ranks they span
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def survival(store: Store, search_id: int) -> Survival:
    """The rank correlations and fronts of the search's finished trainings."""
    spec = SearchSpec.from_stored(store.get_search(search_id).spec)
    finished = [t for t in store.list_trainings(search_id) if t.status == "finished"]
    latest = {t.candidate_id: t for t in finished if t.candidate_id is not None}  # id order: the last one wins
    references = [t for t in finished if t.candidate_id is None]
    candidates = {c.id: c for c in store.candidates(search_id, ("finished",))}
    pairs = [{"training": t.id, "candidate": cid, "proxy_acc": candidates[cid].objectives.get("acc"),
              "val_acc": t.val_acc, "test_acc": t.test_acc} for cid, t in latest.items()]
    proxy, val, test = ([float(p[k]) for p in pairs] for k in ("proxy_acc", "val_acc", "test_acc"))
    proxy_front = [c.id for c in pareto_front(candidates.values(), spec)]
    final = [*latest.values(), *references]
    final_front = _final_front(final, spec.objectives)
    on_front = set(final_front)
    return Survival(
        search_id, list(spec.objectives), pairs, kendall_tau_b(proxy, val), spearman_rho(proxy, val),
        kendall_tau_b(proxy, test), spearman_rho(proxy, test), proxy_front, final_front,
        fell_off=[c for c in proxy_front if c in latest and latest[c].id not in on_front],
        not_retrained=[c for c in proxy_front if c not in latest], references=[t.id for t in references])


def _final_front(trainings: list[Training], objectives: list[str]) -> list[int]:
    if not trainings:
        return []
    points = np.array([[OBJECTIVES[o].minimised(float(getattr(t, FINAL_VALUES[o]))) for o in objectives]
                       for t in trainings])
    return [t.id for t, keep in zip(trainings, non_dominated(points)) if keep]
