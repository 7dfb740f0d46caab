"""The contract between the engine and a search algorithm: what it is asked, and what it is told.

An algorithm asks for genomes; the engine answers each ask, in ask order, with one `Told`. Values
are minimised (accuracy is told as its negation). Nothing is encoded in magic numbers: a value a
candidate has no measure of is +inf, and the row's status says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from search_spaces import Genome

STATUSES = ("finished", "failed", "infeasible", "stopped")


@dataclass(frozen=True)
class Told:
    """The answer to one ask, one row per genome asked.

    F: (n, m) minimised objectives; +inf for an objective the candidate has no value for (its
       evaluation failed, or it was rejected on a cheap constraint before training).
    G: (n,) constraint violation, > 0 infeasible; +inf for a failed evaluation.
    status: per row, "finished", "failed" (its evaluation raised), "infeasible" (it broke a
       cheap constraint and was never trained) or "stopped" (early stopping ended its training at a
       rung below the last: its accuracy in F is the one it reached there).
    fidelity: (n,) the share of a full training each row's values come from: 1 for a finished
       candidate, epochs / max_epochs for a stopped one. None: every row is full fidelity.
    """

    F: np.ndarray
    G: np.ndarray
    status: tuple[str, ...]
    fidelity: np.ndarray | None = None

    def __post_init__(self) -> None:
        F = np.asarray(self.F, dtype=float)
        G = np.asarray(self.G, dtype=float).reshape(-1)
        status = tuple(self.status)
        if F.ndim != 2 or not len(F) == len(G) == len(status):
            raise ValueError(f"Told: F {F.shape}, G {G.shape} and {len(status)} statuses must have one row each")
        if unknown := set(status) - set(STATUSES):
            raise ValueError(f"Told: unknown status {sorted(unknown)}; choose among {', '.join(STATUSES)}")
        if np.isnan(F).any() or np.isnan(G).any():
            raise ValueError("Told: NaN in F or G; tell +inf for a value that was never measured")
        fidelity = np.ones(len(F)) if self.fidelity is None else np.asarray(self.fidelity, dtype=float).reshape(-1)
        if len(fidelity) != len(F) or not ((fidelity > 0) & (fidelity <= 1)).all():
            raise ValueError(f"Told: fidelity must hold one value in (0, 1] per row, got {fidelity}")
        object.__setattr__(self, "F", F)
        object.__setattr__(self, "G", G)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "fidelity", fidelity)

    @classmethod
    def finished(cls, F: np.ndarray, G: np.ndarray | None = None) -> Told:
        """Every row measured (a table lookup, a test): G defaults to no violation."""
        F = np.asarray(F, dtype=float)
        return cls(F, np.zeros(len(F)) if G is None else G, ("finished",) * len(F))

    @property
    def full(self) -> np.ndarray:
        """Rows whose values come from a full training: the ones a front may hold."""
        return self.fidelity >= 1

    @property
    def measured(self) -> np.ndarray:
        """Rows with a value for every objective. A failed or rejected candidate has one only when every
        objective is cheap (counted, not trained), and those values are then exact."""
        return np.isfinite(self.F).all(axis=1)


@dataclass(frozen=True)
class CheapValues:
    """What is known of a candidate before it is evaluated.

    values: its minimised objectives, NaN for those that need training; violation: of the
    constraints on cheap objectives (> 0: the engine would reject it untrained)."""

    values: np.ndarray
    violation: float = 0.0


# Looks up a genome's cheap values (counted costs, no training); the engine provides it.
CheapLookup = Callable[[Genome], CheapValues]


class Algorithm(Protocol):
    # The one generator every random choice draws from; None for an algorithm that draws nothing.
    # The engine journals its state at each ask, so a resumed search can prove it replays the run.
    rng: np.random.Generator | None

    def ask(self) -> list[Genome]:
        """The next genomes to evaluate; empty when the space holds nothing new."""

    def tell(self, genomes: Sequence[Genome], told: Told) -> None:
        """Answers the oldest ask not yet answered; the engine may make one more ask before telling
        the one before it."""
