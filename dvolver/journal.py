"""The ask journal: each ask of a search, with its algorithm's random state before it, checked on replay.

Resuming a search is replaying it from its first ask. Each ask is journalled with the state of the
algorithm's generator before it and the keys it asked; a replay checks every ask it repeats against
the journal, so a resume that would not reproduce the run (another Dvolver, another pymoo) stops
with the generation where it diverged instead of quietly mixing two searches.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from search_spaces import Genome

from .ask_tell import Algorithm
from .errors import DvolverError
from .store import Store


class ReplayDiverged(DvolverError):
    """Replaying a search's journal asked for other candidates than the journal records."""


class AskJournal:
    def __init__(self, store: Store, search_id: int, key: Callable[[Genome], str],
                 recorded_versions: dict[str, Any]) -> None:
        self.store, self.search_id, self.key = store, search_id, key
        self.recorded_versions = recorded_versions
        self.recorded = [e["payload"] for e in store.events(search_id, kinds=("ask",))]
        self.asks = 0  # made by this pass

    def ask(self, algorithm: Algorithm) -> list[Genome]:
        """The algorithm's next ask: checked against the journal where the journal has it, else appended.
        Raises ReplayDiverged on the first difference."""
        generation = self.asks
        state = None if algorithm.rng is None else json.dumps(algorithm.rng.bit_generator.state, sort_keys=True)
        genomes = algorithm.ask()
        self.asks += 1
        entry = {"generation": generation, "rng_state": state, "keys": [self.key(g) for g in genomes]}
        if generation < len(self.recorded):
            recorded = self.recorded[generation]
            for part in ("rng_state", "keys"):
                if recorded.get(part) != entry[part]:
                    raise ReplayDiverged(
                        f"search {self.search_id}: replaying its journal diverged at generation {generation} "
                        f"({part} differs from the journal's): this Dvolver does not reproduce the run that "
                        f"recorded it (versions then: {self.recorded_versions}); resume it with those versions "
                        "or start a new search")
        elif genomes:
            self.store.append_event(self.search_id, "ask", entry)
        return genomes
