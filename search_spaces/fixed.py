"""A fixed backbone as a search space with no genes: what a pruning-only search searches over.

Its genome is empty; with a pruning method (``search_spaces.pruned``) the only genes left are the
pruning genome's, so the search runs over methods and budgets of one network.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict
from torch import nn

from .backbones import build_backbone
from .base import Genome, GenomeCodec
from .units import Inventory, Shape


class BackboneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackboneSpace:
    def __init__(self, name: str, options: BackboneOptions | None = None) -> None:
        self.name = name
        self.options = options or BackboneOptions()

    def codec(self) -> GenomeCodec:
        return GenomeCodec((), ())

    def sample(self, rng: np.random.Generator) -> Genome:
        return ()

    def canonical(self, genome: Genome) -> Genome:
        return ()

    def build(self, genome: Genome, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return build_backbone(self.name, input_shape, num_classes)

    def op_inventory(self, genome: Genome, input_shape: tuple[int, int, int], num_classes: int) -> Inventory:
        """One unit, the whole network: it has no genes, so it is counted once per input shape and classes."""
        return {(_backbone_unit, self.name, tuple(input_shape), num_classes): 1}

    def describe(self, genome: Genome) -> dict[str, Any]:
        return {"space": self.name, "backbone": self.name}


def _backbone_unit(name: str, input_shape: tuple[int, int, int], num_classes: int) -> tuple[nn.Module, tuple[Shape]]:
    return build_backbone(name, input_shape, num_classes), (input_shape,)
