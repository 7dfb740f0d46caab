"""What can be searched: a registry of search spaces by name."""

from __future__ import annotations

import json
from functools import lru_cache, partial
from typing import Any

from pydantic import BaseModel

from .backbones import BACKBONES
from .base import Genome, GenomeCodec, SearchSpace, genome_key
from .fixed import BackboneOptions, BackboneSpace
from .nasnet import NASNetOptions, NASNetSpace
from .nb201 import NB201Options, NB201Space
from .pruned import UNPRUNED, PrunedSpace, PruningChoice

# Bumped whenever canonical forms change: stored results under an older scheme cannot be matched.
KEY_SCHEME = 1

SPACES: dict[str, tuple[Any, type[BaseModel]]] = {
    "nasnet": (NASNetSpace, NASNetOptions),
    "nb201": (NB201Space, NB201Options),
} | {name: (partial(BackboneSpace, name), BackboneOptions) for name in BACKBONES}

# Spaces whose only genes are a pruning genome: one fixed network.
FIXED_SPACES = tuple(BACKBONES)


def options_model(name: str) -> type[BaseModel]:
    return SPACES[name][1]


def make_space(name: str, options: dict[str, Any] | None = None) -> SearchSpace:
    """One space object per (name, options) and process: building one may read a table."""
    return _make_space(name, json.dumps(options or {}, sort_keys=True))


def structure_space(name: str, options: dict[str, Any] | None = None) -> SearchSpace:
    """The space without its results table: enough to build, describe or canonicalise a genome, and
    it still loads when a finished search's table file has moved."""
    return make_space(name, {k: v for k, v in (options or {}).items() if k != "table"})


@lru_cache(maxsize=16)
def _make_space(name: str, options_json: str) -> SearchSpace:
    space_cls, options_cls = SPACES[name]
    return space_cls(options_cls(**json.loads(options_json)))


__all__ = ["FIXED_SPACES", "KEY_SCHEME", "SPACES", "UNPRUNED", "Genome", "GenomeCodec", "PrunedSpace", "PruningChoice",
           "SearchSpace", "genome_key", "make_space", "options_model", "structure_space"]
