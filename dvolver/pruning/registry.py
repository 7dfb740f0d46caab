"""What each pruning method is, without running it: its name, its options with the paper's defaults
(METHODS.md), whether it takes a budget, and the checks a spec needs before anything is trained.

This module imports neither torch nor torch_pruning, so validating a search (the API does it on every
POST) stays cheap; dvolver.pruning.methods runs the methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ASLPOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signed_constant: bool = Field(True, description="weights sign(w) * std(w) per layer")
    smart_rescale: bool = Field(True, description="one learned scalar per layer, init 1")
    mask_lr: float = Field(50.0, gt=0, le=1e4, description="peak SGD learning rate of the mask logits")
    scale_lr: float = Field(1e-3, gt=0, le=10, description="peak SGD learning rate of the rescale scalars")


class EdgePopupOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signed_constant: bool = True
    lr: float = Field(0.1, gt=0, le=1e4, description="peak SGD learning rate of the scores")
    weight_decay: float = Field(1e-4, ge=0, le=1)


class SupermaskOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signed_constant: bool = True
    dynamic_rescale: bool = True
    lr: float = Field(50.0, gt=0, le=1e4, description="peak SGD learning rate of the scores (ASLP's harness: 50)")


class ReparamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lam: float = Field(10.0, gt=0, le=1e6, description="weight of the budget loss")
    t_lr: float = Field(0.05, gt=0, le=10, description="peak SGD learning rate of each layer's log t")


class MagnitudeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Literal["global", "layerwise"] = "global"
    finetune_epochs: int = Field(0, ge=0, le=1000, description="epochs of masked fine-tuning after the cut")
    finetune_lr_scale: float = Field(0.1, gt=0, le=1, description="fine-tuning peak lr, as a share of training.lr")


class JointOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    iterations: int = Field(6, ge=1, le=1000, description="sub-networks sampled and trained")
    finetune_fraction: float = Field(0.25, ge=0, lt=1, description="share of training.epochs for the final fine-tune")
    gumbel_scale: float = Field(0.05, ge=0, le=10)
    size_penalty: float = Field(1.0, ge=0, le=100, description="weight of the kept-MACs fraction in the reward")


@dataclass(frozen=True)
class Method:
    name: str
    options: type[BaseModel]
    takes_budget: bool  # False: the method learns its sparsity
    structured: bool  # True: removes whole filters, so the result is a narrower dense network
    # The function that runs it: for the built-in methods, its name in dvolver.pruning.methods, so that
    # this module needs no torch; a method added from outside may give the function itself.
    runner: str | Callable[..., Any]
    keeps_best: bool = False  # keeps its best validation epoch, so training.patience can stop it early


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("aslp", ASLPOptions, takes_budget=False, structured=False, runner="run_aslp", keeps_best=True),
    Method("edgepopup", EdgePopupOptions, takes_budget=True, structured=False, runner="run_edgepopup", keeps_best=True),
    Method("supermask", SupermaskOptions, takes_budget=False, structured=False, runner="run_supermask",
           keeps_best=True),
    Method("reparam", ReparamOptions, takes_budget=True, structured=False, runner="run_reparam"),
    Method("magnitude", MagnitudeOptions, takes_budget=True, structured=False, runner="run_magnitude"),
    Method("joint", JointOptions, takes_budget=True, structured=True, runner="run_joint"),
)}


class PruningError(ValueError):
    """A method that cannot prune this network, or a budget it cannot take."""


def method(name: str) -> Method:
    if name not in METHODS:
        raise PruningError(f"unknown pruning method {name!r}; choose among {', '.join(METHODS)}")
    return METHODS[name]


def parse_options(name: str, options: dict[str, Any] | None) -> BaseModel:
    return method(name).options(**(options or {}))


def check_budget(budget: float) -> None:
    if not 0.0 < budget <= 1.0 or budget != budget:
        raise PruningError(f"budget {budget} is outside (0, 1]: give the fraction of weights to keep, "
                           "for example 0.1 to prune 90%")
