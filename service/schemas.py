"""The service's request and response bodies; the request body of POST /searches is SearchSpec."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path as PathLib
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, Field, field_validator

from dvolver import spec as dvolver_spec

from .paths import confine


class Progress(BaseModel):
    evaluations: int
    budget: int
    front_size: int
    hypervolume: float | None = Field(description=(
        "the front's hypervolume normalised by the range of this search's own first generation (reference 1.1 "
        "in each objective): it follows one search's progress, but two searches' values are on different "
        "scales; compare searches with shared_hypervolume"))
    training_epochs: int = Field(0, description="epochs the evaluated candidates trained, rungs summed")
    full_fidelity_epochs: int = Field(0, description=(
        "epochs the same candidates would have trained without early stopping"))


class SharedHypervolume(BaseModel):
    """The front's hypervolume on a reference point shared by every search of the same problem (space,
    table or dataset, objectives) that the caller can see, so that their values compare."""

    value: float | None = Field(description=(
        "the share, in [0, 1], of the box from `ideal` to `reference` that the search's front dominates; "
        "null while it has no front"))
    ideal: dict[str, float] = Field(description=(
        "per objective, the best value any feasible candidate of the group reached"))
    reference: dict[str, float] = Field(description=(
        "per objective, the worst value any feasible candidate of the group reached, moved `margin` of the "
        "ideal-to-worst range further (of the value's size where that range is empty)"))
    margin: float
    searches: list[int] = Field(description=(
        "the searches measured on this reference; it moves when one of them finds a new best or worst value"))


class SearchSummary(BaseModel):
    id: int
    name: str | None
    owner: str | None
    status: str
    space: str
    dataset: str
    objectives: list[str]
    progress: Progress
    shared_hypervolume: SharedHypervolume | None = Field(None, description=(
        "given by GET /searches and GET /searches/{id}; null elsewhere, and while no search of the group "
        "has a feasible candidate"))
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


class ObjectiveInfo(BaseModel):
    direction: str
    unit: str
    label: str
    cost: bool


class Timings(BaseModel):
    queued_seconds: float | None
    running_seconds: float | None


class SearchDetail(SearchSummary):
    spec: dict[str, Any]
    stats: dict[str, Any]
    timings: Timings
    hypervolume_history: list[list[float]]
    objective_info: dict[str, ObjectiveInfo]
    last_event_id: int  # follow /events?after= this to get only what happens next


class SearchPage(BaseModel):
    items: list[SearchSummary]
    total: int
    limit: int
    offset: int


class CandidateOut(BaseModel):
    id: int
    key: str
    status: str
    objectives: dict[str, float | None]
    metrics: dict[str, Any]
    genome: list[int]
    worker: str | None
    seconds: float | None
    error: str | None
    on_front: bool
    rung: int | None = Field(None, description=(
        "early stopping: the rungs the candidate trained (1-based; equal to rungs at full fidelity)"))
    rungs: int | None = Field(None, description="early stopping: the search's number of rungs")


class CandidateDetail(CandidateOut):
    architecture: dict[str, Any]
    exports: dict[str, str]


class CandidatePage(BaseModel):
    items: list[CandidateOut]
    total: int
    limit: int
    offset: int


class FrontOut(BaseModel):
    objectives: list[str]
    items: list[CandidateOut]
    note: str | None = None


class Point(BaseModel):
    id: int
    x: float
    y: float


class PointsOut(BaseModel):
    x: str
    y: str
    front: list[Point]
    dominated: list[Point]
    dominated_total: int
    dominated_shown: int
    candidates_total: int


class FrontMember(BaseModel):
    id: int
    objectives: dict[str, float | None]


class Generation(BaseModel):
    evaluations: int
    hypervolume: float | None
    front: list[FrontMember]


class HistoryOut(BaseModel):
    generations: list[Generation]
    total_generations: int


class WhoAmI(BaseModel):
    owner: str | None
    open_reads: bool


class Health(BaseModel):
    status: str
    db: str


# Ids a database integer can hold; anything larger is refused with 422 instead of reaching SQL.
MAX_ID = 2**63 - 1
SearchId = Annotated[int, Path(ge=1, le=MAX_ID, description="the search's id")]
CandidateId = Annotated[int, Path(ge=1, le=MAX_ID, description="the candidate's id")]


def submitted_spec(roots: tuple[PathLib, ...]) -> type[dvolver_spec.SearchSpec]:
    """SearchSpec as POST /searches takes it: the files it names must lie under `roots`.

    Field validators run before SearchSpec's check of its files, so nothing outside the roots is
    opened, and a refusal names the field."""

    class SearchSpec(dvolver_spec.SearchSpec):  # the name clients see in the OpenAPI schema
        @field_validator("dataset")
        @classmethod
        def _dataset_in_roots(cls, value: str) -> str:
            return value if value == "digits" else confine(value, roots)

        @field_validator("space_options")
        @classmethod
        def _table_in_roots(cls, value: dict[str, Any]) -> dict[str, Any]:
            table = value.get("table")
            if not isinstance(table, str):
                return value  # absent, or a type the space's options refuse
            try:
                return value | {"table": confine(table, roots)}
            except ValueError as exc:
                raise ValueError(f"table: {exc}") from None

    return SearchSpec


class TrainingOut(BaseModel):
    """A final training: a found candidate (or a reference architecture, `candidate_id` null) retrained at its
    final scale. Accuracies are in %, on the validation split (`val_acc`, after the last epoch recorded) and
    the test split (`test_acc`, once finished); MACs and FLOPs (= 2 x MACs, fvcore) and params are of the
    deployed network at the final scale, latency on the CPU at batch 1."""

    id: int
    search_id: int
    candidate_id: int | None
    genome: list[int]
    space: str
    status: str = Field(description="queued, running, finished, failed or cancelled")
    epoch: int = Field(description="epochs done, each checkpointed")
    epochs: int
    val_acc: float | None
    test_acc: float | None
    macs: int | None
    flops: int | None
    params: int | None
    latency_ms: float | None
    weights_sha256: str | None
    error: str | None
    runner: str | None = Field(description="the runner holding it while it runs")
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exports: dict[str, str] = Field(description="links to the trained network as files, once finished")


class TrainingDetail(TrainingOut):
    recipe: dict[str, Any] = Field(description="the FinalTraining, as the space filled it in")
    history: list[dict[str, Any]] = Field(description="per epoch: train_loss, val_acc (%), lr, drop_path, seconds")


class TrainingPage(BaseModel):
    items: list[TrainingOut]
    total: int
    limit: int
    offset: int


class TrainingRequest(BaseModel):
    """What POST /searches/{id}/trainings retrains: `candidates` (ids of finished candidates, or "front" or
    "knee") or a reference `genome` ("nasnet-a", or a genome of the search's space), with one recipe."""

    model_config = {"extra": "forbid"}

    candidates: list[Annotated[int, Field(ge=1, le=2**62)]] | Literal["front", "knee"] | None = Field(
        None, max_length=1000)
    genome: str | list[int] | None = Field(None, description="a reference architecture instead of candidates")
    recipe: dict[str, Any] = Field(default_factory=dict, description=(
        "a FinalTraining (see `dvolver train --help` for its fields); the dataset defaults to the search's and "
        "must lie under the service's data roots"))


class Survival(BaseModel):
    """How the proxy ranking survived final training, over the search's finished trainings (validation and
    test splits)."""

    search_id: int
    objectives: list[str]
    pairs: list[dict[str, Any]] = Field(description="per retrained candidate: its proxy, final val and test acc")
    kendall_tau_val: float | None
    spearman_rho_val: float | None
    kendall_tau_test: float | None
    spearman_rho_test: float | None
    proxy_front: list[int] = Field(description="candidate ids")
    final_front: list[int] = Field(description="training ids: final test accuracy and costs at final scale")
    fell_off: list[int] = Field(description="proxy-front candidates retrained and off the final front")
    not_retrained: list[int]
    references: list[int] = Field(description="training ids of reference architectures")
