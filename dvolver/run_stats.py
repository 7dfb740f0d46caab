"""What a search run reports about itself: the counters, its front's hypervolume, and where the time went.

The store keeps these as JSON on the search row; everything that reads them (the CLI, the service,
the benchmarks) reads them through `RunStats`, so a renamed or missing field fails in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class Progress:
    """The live counters, handed to `on_progress` after every result."""

    evaluations: int
    budget: int
    front_size: int
    hypervolume: float | None
    trained: int = 0
    reused: int = 0
    infeasible: int = 0
    failed: int = 0
    stopped: int = 0  # early stopping: candidates stopped at a rung below the last
    training_epochs: int = 0  # epochs the evaluated candidates trained, rungs summed
    full_fidelity_epochs: int = 0  # what they would have trained without early stopping


@dataclass
class RunStats:
    """One search's stats. `evaluations` counts trained, reused and failed candidates, not those rejected
    on cheap constraints (`infeasible`). Hypervolumes are of the normalised, minimised front inside
    `hypervolume_box` (the range seen up to the first front), with the reference point at 1.1."""

    data_fingerprint: str | None = None
    input_shape: list[int] | None = None
    num_classes: int | None = None
    stopped_early: str | None = None
    evaluations: int = 0
    budget: int = 0
    trained: int = 0
    reused: int = 0
    infeasible: int = 0
    failed: int = 0
    stopped: int = 0
    training_epochs: int = 0  # epochs the evaluated candidates trained (in table mode, looked up)
    full_fidelity_epochs: int = 0  # epochs they would have trained to full fidelity, each max_epochs
    front_size: int = 0
    hypervolume: float | None = None
    # [evaluations, hypervolume] at each measure: after every tell, and once at the end
    hypervolume_history: list[list[float]] = field(default_factory=list)
    hypervolume_box: list[list[float]] | None = None  # [ideal, nadir], minimised
    workers: int = 1
    busy_seconds: dict[str, float] = field(default_factory=dict)  # per worker: seconds spent evaluating
    evaluation_wall_seconds: float = 0.0  # from the first submission to the last result
    utilisation: float | None = None  # busy seconds over workers x evaluation wall seconds
    driver_cpu_seconds: float = 0.0  # the search process's own CPU, evaluations run inside it excluded
    driver_cpu_seconds_per_evaluation: float = 0.0  # per trained candidate
    time_limit_hit: bool = False
    wall_seconds: float | None = None  # the whole run, set once it finished

    @classmethod
    def from_dict(cls, stored: dict[str, Any] | None) -> RunStats:
        """A search's stored stats; fields a search has not written yet (a queued one) keep their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (stored or {}).items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        # Shallow: asdict deep-copies the hypervolume history, which grows by one entry a tell, and the
        # engine writes the stats after every tell (a quadratic cost that showed in 1,000-evaluation runs).
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def summary(self) -> dict[str, Any]:
        """Everything but the per-tell history, for a one-screen view."""
        return {k: v for k, v in self.to_dict().items() if k != "hypervolume_history"}
