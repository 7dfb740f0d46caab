"""A genome's costs without tracing its network: fvcore counts each distinct unit once, then sums.

A space that lists a genome's units (`op_inventory`, see search_spaces.units) gets the same `Costs`
as `costs.count` on the built network, by construction: every figure is still fvcore's, taken on
the unit's module alone with zeros inputs of the shapes it sees in the network, and the units cover
the whole forward pass, glue included. Distinct units are few (an op type at a width, stride and
resolution), so after a warm-up counting a genome is a few dictionary additions.

The cache is process-wide (the driver is one process), bounded, and safe to share between threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from search_spaces.units import Inventory, UnitKey, build_unit

from .costs import Costs, OpCounts, count_ops, to_costs

MAX_UNITS = 16384  # a search meets a few hundred distinct units; each entry holds a few numbers


@dataclass(frozen=True)
class CacheInfo:
    units: int  # units held now
    counted: int  # units fvcore has counted in this process (misses)
    hits: int


class UnitCache:
    """fvcore's counts per unit key, least recently used dropped past `max_units`."""

    def __init__(self, max_units: int = MAX_UNITS) -> None:
        self.max_units = max_units
        self._counts: OrderedDict[UnitKey, OpCounts] = OrderedDict()
        self._lock = threading.Lock()
        self._counted = 0
        self._hits = 0

    def get(self, key: UnitKey) -> OpCounts:
        with self._lock:
            found = self._counts.get(key)
            if found is not None:
                self._counts.move_to_end(key)
                self._hits += 1
                return found
        # Counted outside the lock: tracing takes milliseconds, and two threads counting the same
        # unit at once both get the same figures.
        with torch.random.fork_rng(devices=[]):  # building a unit draws weights: leave the caller's RNG be
            module, input_shapes = build_unit(key)
        counts = count_ops(module, input_shapes)
        with self._lock:
            self._counted += 1
            self._counts[key] = counts
            self._counts.move_to_end(key)
            while len(self._counts) > self.max_units:
                self._counts.popitem(last=False)
        return counts

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(len(self._counts), self._counted, self._hits)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()


CACHE = UnitCache()


def add_up(inventory: Inventory, cache: UnitCache = CACHE) -> Costs:
    """The costs of a network made of these units, each run as many times as the inventory says.

    Units come in forward order, so the ops in uncounted_ops and non_mac_ops come in the order in
    which the whole network's trace first meets them, as in `costs.count`."""
    by_op: dict[str, int] = {}
    uncounted: dict[str, int] = {}
    params = 0
    for key, times in inventory.items():
        unit = cache.get(key)
        params += times * unit.params
        _add(by_op, unit.by_op, times)
        _add(uncounted, unit.uncounted, times)
    return to_costs(OpCounts(by_op=by_op, uncounted=uncounted, params=params))


def _add(total: dict[str, int], part: Mapping[str, int], times: int) -> None:
    for op, value in part.items():
        total[op] = total.get(op, 0) + times * value


def count_genome(space: Any, genome: Any, input_shape: tuple[int, int, int], num_classes: int,
                 cache: UnitCache = CACHE) -> Costs | None:
    """The genome's network's costs from its units; None when the space does not list them."""
    inventory_of = getattr(space, "op_inventory", None)
    inventory = None if inventory_of is None else inventory_of(genome, tuple(input_shape), num_classes)
    return None if inventory is None else add_up(inventory, cache)
