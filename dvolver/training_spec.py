"""The parts of a search spec that training reads: the proxy training every candidate gets and what one
evaluation asks of its worker, with the JSON-number rule every spec model follows.

A leaf: it imports nothing of Dvolver's, so training and the pruning methods can use these types
without importing the search spec (dvolver.spec), which imports them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

# NaN and infinity are refused everywhere: JSON cannot carry them back, and no bound holds them.
FINITE = ConfigDict(extra="forbid", allow_inf_nan=False)


def joined_errors(exc: ValidationError) -> str:
    """pydantic's report as one line, each error after the dotted path of the field it is about."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


class JsonNumbers(BaseModel):
    """A number field takes a JSON number only, as the schema says: lax pydantic would read false as 0 and
    "3" as 3. (Strict mode would too, but would lose the "finite number" message for NaN.)"""

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        numeric = cls.model_fields[info.field_name].annotation in (int, float, int | None, float | None)
        if numeric and isinstance(value, bool | str):
            raise ValueError(f"a number is needed here, got {value!r}")
        return value


class TrainingSpec(JsonNumbers):
    """The proxy training every candidate gets."""

    model_config = FINITE

    epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(128, ge=1, le=8192)
    lr: float = Field(0.1, gt=0, le=100, description="peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    grad_clip: float | None = Field(5.0, gt=0, le=1e6,
                                    description="max global gradient norm; null turns clipping off")
    schedule: Literal["one_cycle", "cosine", "constant"] = Field(
        "one_cycle", description="the learning-rate schedule; constant is the mask-learning papers' own")
    patience: int | None = Field(None, ge=1, le=10000, description=(
        "methods that keep their best epoch (aslp, edgepopup, supermask): stop after this many epochs without a "
        "new best validation accuracy; null trains every epoch"))
    augment: Literal["auto", "none", "crop_flip"] = Field(
        "auto", description="auto: random crop + flip for images 32x32 and larger, nothing for smaller"
    )
    channels_last: Literal["auto", "on", "off"] = Field("auto", description="auto: on for CPU training")
    amp: Literal["auto", "off"] = Field("auto", description=(
        "mixed precision on CUDA (auto: bfloat16 where the GPU has it, else float16 with loss scaling; never "
        "on CPU, where it would only slow training down)"))
    train_limit: int | None = Field(None, ge=10, le=10**8,
                                    description="train on a fixed random N of the training images")
    latency_repeats: int = Field(30, ge=1, le=10000)
    # Strict: true or false only, as the schema says; lax pydantic would read "yes" or 1 as true.
    keep_weights: bool = Field(True, strict=True,
                               description="store each trained network's weights, so that it can be exported")


class ResourcesSpec(JsonNumbers):
    """What one evaluation asks of its worker."""

    model_config = FINITE

    cpus_per_eval: int = Field(1, ge=1, le=256, description="CPU cores and torch threads per evaluation")
    gpus_per_eval: float = Field(0.0, ge=0, le=16, description="GPUs per evaluation, fractions allowed")


TieBreak = Literal["crowding", "hypervolume", "surrogate"]


class EarlyStoppingSpec(JsonNumbers):
    """Successive halving inside the search: candidates train in rungs of min_epochs, min_epochs x eta, ...
    up to max_epochs, and only the best 1/eta of each rung (by Pareto standing on the rung's accuracy and
    the counted costs) train on."""

    model_config = FINITE

    method: Literal["none", "sha", "asha"] = Field("sha", description=(
        "sha: each ask's candidates go up the rungs together, the best 1/eta at each; asha: a candidate goes on "
        "as soon as its rung result is among the best 1/eta of that rung so far; none: full training for all"))
    min_epochs: int = Field(1, ge=1, le=1000, description="epochs of the first rung")
    eta: int = Field(3, ge=2, le=100, description="each rung trains eta times the epochs of the one before, "
                                                  "and keeps 1/eta of its candidates")
    max_epochs: int | None = Field(None, ge=1, le=1000, description=(
        "epochs of a full-fidelity candidate, the last rung; default training.epochs (in table mode, the "
        "table's last learning-curve epoch)"))
    tie_break: TieBreak = Field("crowding", description=(
        "how candidates on one non-dominated front of a rung are ordered: crowding distance, hypervolume "
        "contribution, or the surrogate's probability that the candidate's full training reaches the front; "
        "crowding was the cheapest of the measured best (bench/multi_fidelity.py tables)"))

    @property
    def active(self) -> bool:
        return self.method != "none"
