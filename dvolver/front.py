"""A search's Pareto front over its objectives, and the hypervolume it is tracked by.

A candidate is on the front when it finished, meets every constraint, and no other such candidate
dominates it on the spec's objectives, all minimised (accuracy as its negation).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .objectives import OBJECTIVES, violation
from .pareto import dominates, hypervolume, non_dominated, normalise
from .spec import SearchSpec
from .store import Candidate

REFERENCE = 1.1  # the hypervolume reference point, in the normalised box


def minimised(candidate: Candidate, objectives: list[str]) -> list[float]:
    return [OBJECTIVES[o].minimised(float(candidate.objectives[o])) for o in objectives]


def feasible(candidate: Candidate, spec: SearchSpec) -> bool:
    return candidate.status == "finished" and violation(spec.constraints, candidate.objectives) == 0


def pareto_front(candidates: Iterable[Candidate], spec: SearchSpec) -> list[Candidate]:
    pool = [c for c in candidates if feasible(c, spec)]
    if not pool:
        return []
    mask = non_dominated(np.array([minimised(c, spec.objectives) for c in pool]))
    return [c for c, keep in zip(pool, mask) if keep]


class FrontTracker:
    """The front of the results seen so far, updated one result at a time, and its hypervolume history.

    Hypervolumes are normalised by the range of what was evaluated up to the first front, and that
    box is kept: the hypervolumes of one search then compare across its whole history."""

    def __init__(self, spec: SearchSpec) -> None:
        self.spec = spec
        self.members: list[Candidate] = []
        self.box: tuple[np.ndarray, np.ndarray] | None = None
        self.hypervolume: float | None = None
        self.history: list[list[float]] = []  # [evaluations, hypervolume] at each measure

    def add(self, candidate: Candidate) -> bool:
        """Adds the candidate if it is feasible and nothing on the front dominates it; True when the front changed."""
        if not feasible(candidate, self.spec):
            return False
        point = minimised(candidate, self.spec.objectives)
        if any(dominates(minimised(c, self.spec.objectives), point) for c in self.members):
            return False
        self.members = [c for c in self.members
                        if not dominates(point, minimised(c, self.spec.objectives))] + [candidate]
        return True

    def measure(self, evaluations: int, seen: Iterable[Candidate]) -> float | None:
        """The front's hypervolume now, appended to the history; `seen` (everything evaluated) fixes the
        box the first time there is a front."""
        if not self.members:
            return self.hypervolume
        points = np.array([minimised(c, self.spec.objectives) for c in self.members])
        if self.box is None:
            evaluated = np.array([minimised(c, self.spec.objectives) for c in seen if feasible(c, self.spec)])
            self.box = evaluated.min(axis=0), evaluated.max(axis=0)
        ideal, nadir = self.box
        self.hypervolume = hypervolume(normalise(points, ideal, nadir), np.full(points.shape[1], REFERENCE))
        self.history.append([evaluations, self.hypervolume])
        return self.hypervolume
