"""What a trained candidate computed, recorded when it was evaluated, for its exports to be held to.

An export is checked against outputs the evaluation recorded from the network it had just trained and
measured, not against a second copy built from the same stored bytes: a copy of a wrong file agrees
with itself.
"""

from __future__ import annotations

import torch
from torch import nn

METRIC = "check_outputs"  # the candidate metric holding the recorded logits
BATCH = 2


def check_input(input_shape: tuple[int, ...]) -> torch.Tensor:
    """The same inputs at evaluation and at export: seeded, whatever the caller's random state."""
    return torch.randn(BATCH, *input_shape, generator=torch.Generator().manual_seed(0))


def record(model: nn.Module, input_shape: tuple[int, ...]) -> list[list[float]]:
    """The logits of ``model`` (on the CPU, in eval mode) for `check_input`, as JSON-ready lists."""
    model.eval()
    with torch.inference_mode():
        return model(check_input(input_shape)).double().tolist()
