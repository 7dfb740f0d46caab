"""FinalTraining: the recipe that retrains a found architecture at its final scale (issue 19).

A search scores candidates after a short proxy training (TrainingSpec); the architectures it finds are then
trained once more, larger and longer, with the regularisers the papers' final models had. Every field's
description says what Dvolver's code used (github.com/guillaume-michel/dvolver: train.py, `--model-type cifar`
in dvolver/representations/nasneta/params.py) and what DARTS used for its CIFAR-10 retraining, the convention
most NAS papers since follow. The defaults are a recipe a CPU finishes: the papers' scale and 600 epochs need
a GPU for days.

Like training_spec, no torch: the service and the CLI validate a recipe before anything is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from .errors import DatasetError, SpecError
from .training_spec import FINITE, JsonNumbers, joined_errors

# The spaces whose networks take drop-path and an auxiliary head (search_spaces.nasnet); NB-201 cells and
# the backbones have neither.
REGULARISED_SPACES = frozenset({"nasnet"})
# What the NASNet space gets where drop_path or aux_weight is left to the space: DARTS's rate, which drops every
# cell alike, as Dvolver's depth-scaled rate does on average (0.4 at the last cell, 0.2 at the middle one).
NASNET_DROP_PATH = 0.2
NASNET_AUX_WEIGHT = 0.4


class NASNetScale(JsonNumbers):
    model_config = FINITE

    cells: int = Field(2, ge=1, le=12, description=(
        "N: normal cells per stage. Dvolver: 2 in the search, 6 for its final CIFAR-10 models (num_cells 18 = 3N "
        "in its code), 4 for ImageNet mobile; DARTS: 20 cells in all (N = 6)"))
    filters: int = Field(16, ge=2, le=512, description=(
        "F: filters of the first stage, doubled at each reduction. Dvolver: 32 on CIFAR-10 (search and final), "
        "44 for ImageNet mobile; DARTS: 36"))


class NB201Scale(JsonNumbers):
    model_config = FINITE

    channels: int = Field(16, ge=1, le=512, description="C: channels of the first stage; NAS-Bench-201: 16")
    cells: int = Field(5, ge=1, le=20, description="N: cells per stage; NAS-Bench-201: 5")


class Scale(JsonNumbers):
    """The final network's size; only the part for the candidate's space is read."""

    model_config = FINITE

    nasnet: NASNetScale = Field(default_factory=NASNetScale, description="a nasnet candidate's N and F")
    nb201: NB201Scale = Field(default_factory=NB201Scale, description="an nb201 candidate's C and N")
    width: float = Field(1.0, gt=0, le=16, description=(
        "backbones: width multiplier; the backbones are built at their published widths only, so 1"))


class FinalTraining(JsonNumbers):
    """How a found architecture is retrained: its scale, the optimiser and schedule, the regularisers, the data."""

    model_config = FINITE

    scale: Scale = Field(default_factory=Scale, description=(
        "the final network's size, by space; the defaults are larger than the search's own (nasnet N 1, F 8)"))
    epochs: int = Field(20, ge=1, le=10_000, description="Dvolver and DARTS: 600 on CIFAR-10")
    batch_size: int = Field(96, ge=1, le=8192, description="Dvolver: 32; DARTS: 96")
    lr: float = Field(0.025, gt=0, le=100, description="peak learning rate. Dvolver and DARTS: 0.025 (SGD)")
    momentum: float = Field(0.9, ge=0, lt=1, description="Dvolver and DARTS: 0.9")
    weight_decay: float = Field(3e-4, ge=0, le=1, description=(
        "L2 on every weight. Dvolver: 4e-5; DARTS: 3e-4; NASNet's own CIFAR-10 code: 5e-4"))
    nesterov: bool = Field(False, strict=True, description="Dvolver (TF MomentumOptimizer) and DARTS: off")
    schedule: Literal["cosine", "one_cycle", "constant"] = Field("cosine", description=(
        "the learning rate per step over all epochs; Dvolver's final models and DARTS: cosine to 0 (Dvolver's "
        "search used one-cycle 'triangular2')"))
    warmup_epochs: int = Field(0, ge=0, le=1000, description=(
        "linear warm-up from 0 before the cosine or constant schedule (one_cycle has its own); Dvolver and "
        "DARTS: none"))
    drop_path: float | None = Field(None, ge=0, lt=1, description=(
        "the highest drop-path rate, reached at the last epoch: the rate rises linearly from 0 over the epochs, "
        "each block op (identities aside) dropped per sample. Dvolver: 0.4 (keep probability 0.6, raised over "
        "the training steps and, as in NASNet, scaled by cell depth, so 0.2 at the middle cell); DARTS: 0.2 in "
        "every cell, raised over the epochs. Null: 0.2 where the space has drop-path (nasnet), off elsewhere"))
    aux_weight: float | None = Field(None, ge=0, le=10, description=(
        "weight of the auxiliary head's loss; 0 builds no head. Dvolver and DARTS: 0.4, on the last cell before "
        "the second reduction. Null: 0.4 where the space has the head (nasnet), off elsewhere"))
    label_smoothing: float = Field(0.0, ge=0, lt=1, description=(
        "Dvolver: 0 on CIFAR-10, 0.1 for ImageNet mobile; DARTS: 0 on CIFAR-10"))
    cutout: int | None = Field(None, ge=0, le=4096, description=(
        "side in pixels of the square zeroed at a random centre of every training image, after crop and flip "
        "(DeVries and Taylor); 0 is off. DARTS: 16 on CIFAR-10; Dvolver erased a random rectangle (2-40 % of "
        "the image) half of the time. Null: 16 for images 32x32 and larger, off for smaller"))
    crop_flip: bool | None = Field(None, strict=True, description=(
        "random crop after padding by 4 and horizontal flip, as Dvolver and DARTS on CIFAR-10; null: on for "
        "images 32x32 and larger, off for smaller (as the search's augment auto)"))
    ema_decay: float | None = Field(None, ge=0, lt=1, description=(
        "exponential moving average of the weights, which are then the ones measured and kept; null or 0 is "
        "off. The decay starts low, as TensorFlow's with its step count: min(decay, (1 + step) / (10 + step)). "
        "Dvolver: off on CIFAR-10, 0.9999 for ImageNet mobile; DARTS: off"))
    grad_clip: float | None = Field(5.0, gt=0, le=1e6, description=(
        "max global gradient norm; null turns clipping off. Dvolver (CIFAR-10) and DARTS: 5"))
    dataset: str = Field("digits", max_length=1024, description=(
        "'digits', an .npz file or a CIFAR-10 python-format folder, split as the search splits it: train for "
        "the weights, validation (what the search optimised) for the per-epoch accuracy, test reported once at "
        "the end and never used to choose anything"))
    train_limit: int | None = Field(None, ge=10, le=10**8, description=(
        "train on the first N training images, as the search's train_limit (small runs and tests)"))
    seed: int = Field(0, ge=0, lt=2**32, description="weight init, batch order, augmentation and drop-path")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when a GPU is present")
    amp: Literal["auto", "off"] = Field("auto", description=(
        "mixed precision on CUDA (bfloat16 where the GPU has it, else float16 with loss scaling); never on CPU"))

    @model_validator(mode="after")
    def _combinations(self) -> FinalTraining:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: Nesterov momentum needs a momentum above 0")
        if self.warmup_epochs and self.schedule == "one_cycle":
            raise ValueError("warmup_epochs: one_cycle warms up by itself; use 0, or the cosine or constant schedule")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs: {self.warmup_epochs} leaves none of the {self.epochs} epochs for the "
                             "schedule; lower it below epochs")
        try:
            _check_dataset(self.dataset)
        except DatasetError as exc:
            raise ValueError(f"dataset: {exc}") from None
        if self.dataset != "digits":
            self.dataset = str(Path(self.dataset).expanduser().resolve())
        return self

    def for_space(self, space: str) -> FinalTraining:
        """This recipe for a candidate of ``space``: drop_path and aux_weight left to the space filled in, and
        refused where the space's networks have neither. Raises SpecError naming the field."""
        regularised = space in REGULARISED_SPACES
        for field, value in (("drop_path", self.drop_path), ("aux_weight", self.aux_weight)):
            if value and not regularised:
                raise SpecError(f"invalid final training: {field}: the {space} space's networks have no "
                                f"{'drop-path' if field == 'drop_path' else 'auxiliary head'}; set it to 0 or null")
        if self.scale.width != 1 and space not in ("nasnet", "nb201"):
            raise SpecError(f"invalid final training: scale.width: the {space} backbone is built at its published "
                            "width only; set it to 1")
        return self.model_copy(update={
            "drop_path": (NASNET_DROP_PATH if regularised else 0.0) if self.drop_path is None else self.drop_path,
            "aux_weight": (NASNET_AUX_WEIGHT if regularised else 0.0) if self.aux_weight is None else self.aux_weight,
        })

    def space_options(self, space: str, search_options: dict[str, Any] | None = None) -> dict[str, Any]:
        """The space options the final network is built with: the search's (blocks, stem multiplier, ...) at
        this recipe's scale. A results table is dropped: the final network is trained, not looked up."""
        options = {k: v for k, v in (search_options or {}).items() if k != "table"}
        if space == "nasnet":
            return options | {"cells_per_stage": self.scale.nasnet.cells, "filters": self.scale.nasnet.filters}
        if space == "nb201":
            return options | {"channels": self.scale.nb201.channels, "cells_per_stage": self.scale.nb201.cells}
        return options

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinalTraining:
        """Validate, turning pydantic's report into one line that names the field."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SpecError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    return "invalid final training: " + joined_errors(exc)


def _check_dataset(source: str) -> None:
    # Imported here: dvolver.data loads torch, which a recipe's validation does not otherwise need.
    from .data import check_source

    check_source(source)
