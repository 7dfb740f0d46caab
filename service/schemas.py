"""The service's request and response bodies; the request body of POST /searches is SearchSpec."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path as PathLib
from typing import Annotated, Any

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
