"""Successive halving on Pareto standing: the rungs a candidate trains through, and who goes on.

A candidate trains min_epochs, then min_epochs x eta, and so on, up to max_epochs (always the last
rung). At a rung, candidates are ranked on (the accuracy they reached there, their counted costs), all
minimised: by non-dominated sorting first, then inside a front by a tie-break, then by the order the
results came in. The best 1/eta go on.

Ranking on Pareto standing instead of accuracy alone keeps a cheap network alive that is only
moderately accurate: on a front over accuracy and cost it may be the best there is at its cost.
"""

from __future__ import annotations

from typing import get_args

import numpy as np

from .pareto import hypervolume, non_dominated
from .training_spec import EarlyStoppingSpec, TieBreak

TIE_BREAKS: tuple[TieBreak, ...] = get_args(TieBreak)


def rung_epochs(es: EarlyStoppingSpec) -> tuple[int, ...]:
    """The epochs each rung trains up to: min_epochs x eta^k below max_epochs, then max_epochs."""
    assert es.max_epochs is not None, "validated specs fill max_epochs"
    epochs, e = [], es.min_epochs
    while e < es.max_epochs:
        epochs.append(e)
        e *= es.eta
    return (*epochs, es.max_epochs)


def fronts(F: np.ndarray) -> list[np.ndarray]:
    """Row indices of each non-dominated front, best first."""
    rest = np.arange(len(F))
    out = []
    while len(rest):
        mask = non_dominated(F[rest])
        out.append(rest[mask])
        rest = rest[~mask]
    return out


def _normalised(F: np.ndarray) -> np.ndarray:
    span = np.ptp(F, axis=0)
    return (F - F.min(axis=0)) / np.where(span > 0, span, 1.0)


def crowding(F: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance inside one front (normalised columns); the ends of each axis get inf."""
    n, m = F.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    X = _normalised(F)
    for j in range(m):
        order = np.argsort(X[:, j], kind="stable")
        distance[order[0]] = distance[order[-1]] = np.inf
        distance[order[1:-1]] += X[order[2:], j] - X[order[:-2], j]
    return distance


def hypervolume_contribution(F: np.ndarray) -> np.ndarray:
    """How much of the front's hypervolume (normalised columns, reference 1.1) each point alone holds."""
    X = _normalised(F)
    reference = np.full(F.shape[1], 1.1)
    total = hypervolume(X, reference)
    return np.array([total - hypervolume(np.delete(X, i, axis=0), reference) for i in range(len(X))])


def ranked(F: np.ndarray, tie_break: TieBreak = "crowding", chance: np.ndarray | None = None) -> list[int]:
    """Row indices of F (minimised, accuracy negated in column 0), best first: front by front, each
    front by its tie-break (larger first), then by accuracy, then in row order. `surrogate` breaks ties
    by `chance`, the model's probability per row that the candidate's full training reaches the front
    (crowding where no model is given)."""
    F = np.asarray(F, dtype=float)
    order: list[int] = []
    for front in fronts(F):
        if len(front) == 1:
            s = np.zeros(1)
        elif tie_break == "surrogate" and chance is not None:
            s = np.asarray(chance, dtype=float)[front]
        else:
            s = (hypervolume_contribution if tie_break == "hypervolume" else crowding)(F[front])
        order += front[np.lexsort((front, F[front, 0], -s))].tolist()
    return order


def going_on(F: np.ndarray, rows: list[int], eta: int, tie_break: TieBreak = "crowding",
             chance: np.ndarray | None = None) -> set[int]:
    """Which of `rows` go on: those ranked among the best 1/eta of every result at the rung (F). The
    best result at a rung always goes on, so the first candidates reach full fidelity."""
    position = {row: i for i, row in enumerate(ranked(F, tie_break, chance))}
    return {row for row in rows if position[row] < len(F) / eta}
