"""Who trains on: the rung state of a search with early stopping, result by result.

`Halving` knows nothing of workers or the store. The loop tells it that a candidate started, and each
rung result in the order the results are handed back (dvolver.dispatch, `ordered`); it answers with
the decisions that result allows. A candidate goes on when it ranks (dvolver.rungs.ranked) among the
best 1/eta of every result at its rung so far, in the whole search, and stops otherwise:
- `sha` decides on the candidates of one ask together, once every one of them still climbing has its
  result at the rung (a barrier per ask and rung);
- `asha` decides on each candidate as its result comes in, so nobody waits for a rung to fill.

A decision is final: a stopped candidate is never taken up again. Since the results come in a fixed
order and the decisions follow from them alone, a resumed search that hands back the stored results
in the same order takes the same decisions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .rungs import going_on, rung_epochs
from .training_spec import EarlyStoppingSpec


@dataclass(frozen=True)
class Decision:
    key: str
    verdict: str  # "go" (train the next rung), "stop" (stopped early) or "done" (the last rung is in)
    rung: int  # the rung (0-based) it decides on: the next one for "go", the last one trained otherwise


@dataclass
class Climb:
    key: str
    bracket: int  # the ask it came in with
    costs: np.ndarray  # its counted costs, minimised: the columns it is ranked on beside accuracy
    rung: int = 0  # the rung it trains now
    accuracies: list[float] = field(default_factory=list)  # one per rung trained


class Halving:
    def __init__(self, es: EarlyStoppingSpec) -> None:
        self.method, self.eta, self.tie_break = es.method, es.eta, es.tie_break
        # The surrogate tie-break's model: per key, the chance its full training reaches the front.
        self.chance: Callable[[list[str]], np.ndarray] | None = None
        self.epochs = rung_epochs(es)
        self.climbing: dict[str, Climb] = {}
        self._rungs: list[list[tuple[np.ndarray, str]]] = [[] for _ in self.epochs]  # every result at each rung
        self._brackets: dict[int, set[str]] = {}  # sha: who of each ask still climbs

    @property
    def last(self) -> int:
        return len(self.epochs) - 1

    def start(self, key: str, bracket: int, costs: np.ndarray) -> None:
        self.climbing[key] = Climb(key, bracket, np.asarray(costs, dtype=float))
        self._brackets.setdefault(bracket, set()).add(key)

    def result(self, key: str, acc: float) -> list[Decision]:
        """A candidate's accuracy at the rung it was training; the decisions it allows, perhaps none yet."""
        climb = self.climbing[key]
        climb.accuracies.append(float(acc))
        if climb.rung == self.last:
            return [self._leave(climb, "done")]
        if self.method == "asha":
            return self._decide([climb])
        return self._settle(climb.bracket, climb.rung)

    def drop(self, key: str) -> list[Decision]:
        """A candidate whose training failed leaves its bracket; the others may now be decided on."""
        climb = self.climbing.pop(key)
        self._brackets[climb.bracket].discard(key)
        return [] if self.method == "asha" else self._settle(climb.bracket, climb.rung)

    def _settle(self, bracket: int, rung: int) -> list[Decision]:
        """sha: the bracket's rung is decided once every member still climbing there has its result."""
        members = [self.climbing[k] for k in sorted(self._brackets[bracket]) if self.climbing[k].rung == rung]
        if not members or any(len(c.accuracies) <= rung for c in members):
            return []
        return self._decide(members)

    def _decide(self, climbs: list[Climb]) -> list[Decision]:
        """Adds the climbs' results to their rung (they share it), then decides on each."""
        pool = self._rungs[climbs[0].rung]
        rows = list(range(len(pool), len(pool) + len(climbs)))
        pool += [(self._point(c), c.key) for c in climbs]
        chance = None
        if self.tie_break == "surrogate" and self.chance is not None:
            chance = self.chance([key for _, key in pool])
        going = going_on(np.array([p for p, _ in pool]), rows, self.eta, self.tie_break, chance)
        decisions = []
        for row, climb in zip(rows, climbs):
            if row in going:
                climb.rung += 1
                decisions.append(Decision(climb.key, "go", climb.rung))
            else:
                decisions.append(self._leave(climb, "stop"))
        return decisions

    def _point(self, climb: Climb) -> np.ndarray:
        return np.concatenate([[-climb.accuracies[climb.rung]], climb.costs])

    def _leave(self, climb: Climb, verdict: str) -> Decision:
        del self.climbing[climb.key]
        self._brackets[climb.bracket].discard(climb.key)
        return Decision(climb.key, verdict, climb.rung)
