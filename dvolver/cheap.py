"""What is known of a genome before it is trained: its counted costs, and the algorithm's view of them.

Counted once per canonical key: the surrogate search scores pools that ask the same genomes again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from search_spaces import Genome

from .ask_tell import CheapValues
from .evaluation import cheap_metrics
from .objectives import OBJECTIVES, violation
from .spec import SearchSpec


class CheapCounts:
    def __init__(self, spec: SearchSpec, key: Callable[[Genome], str], input_shape: tuple[int, ...] | None,
                 num_classes: int | None) -> None:
        self.spec, self.key = spec, key
        self.input_shape, self.num_classes = input_shape, num_classes
        self._metrics: dict[str, dict[str, Any]] = {}

    def metrics(self, genome: Genome) -> dict[str, Any]:
        """Everything counted (MACs, FLOPs, params and what the space adds), as recorded with the candidate."""
        key = self.key(genome)
        if key not in self._metrics:
            counted = cheap_metrics(genome, self.spec, self.input_shape, self.num_classes)
            self._metrics[key] = counted | {name: float(o.derive(counted)) for name, o in OBJECTIVES.items()
                                            if o.derive is not None and name in self.spec.objectives}
        return self._metrics[key]

    def objectives(self, genome: Genome) -> dict[str, float]:
        """The counted metrics that are objectives, by name."""
        return {k: float(v) for k, v in self.metrics(genome).items() if k in OBJECTIVES}

    def values(self, genome: Genome) -> CheapValues:
        """The algorithm's view: the spec's objectives minimised (NaN for those that need training), and
        how far the genome breaks the constraints on cheap objectives."""
        values = self.objectives(genome)
        known = [OBJECTIVES[o].minimised(values[o]) if OBJECTIVES[o].cheap and o in values else np.nan
                 for o in self.spec.objectives]
        return CheapValues(np.array(known, dtype=float), violation(self.spec.constraints, values, cheap_only=True))
