"""SearchSpec: the one validated description of a search.

CLI flags, the REST body and Python calls all become this object, and it is validated once, here:
whatever passes is trusted inside. Paths are made absolute so that a resumed search or a remote
worker reads the same files.
"""

from __future__ import annotations

import math
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

import search_spaces

from . import data
from .algorithms import ALGORITHM_NAMES, ALGORITHMS
from .errors import DatasetError, SpecError
from .objectives import CONSTRAINTS, OBJECTIVES
from .pruning import registry as methods_registry
from .rungs import rung_epochs
from .training_spec import FINITE, EarlyStoppingSpec, JsonNumbers, ResourcesSpec, TrainingSpec, joined_errors

__all__ = ["ALGORITHM_NAMES", "EarlyStoppingSpec", "PruningSpec", "ResourcesSpec", "SearchSpec", "TrainingSpec",
           "describe_validation_error"]


def _one_of(names: object) -> dict[str, Any]:
    """The schema of a string the validators below accept only among ``names``: the validators give
    the clearer message, the schema tells a generated client what the server takes."""
    return {"json_schema_extra": {"enum": list(names)}}  # type: ignore[call-overload]


def _options_schema(schema: dict[str, Any]) -> None:
    """Each method's options as its options model takes them, and no other key."""
    schema["properties"] = {name: {k: v for k, v in m.options.model_json_schema().items() if k != "title"}
                            for name, m in methods_registry.METHODS.items()}
    schema["additionalProperties"] = False


def _keys_among(names: object) -> dict[str, Any]:
    return {"json_schema_extra": {"propertyNames": {"enum": list(names)}}}  # type: ignore[call-overload]


TABLE_OBJECTIVES = ("acc", "flops", "params")
# Characters a name may not hold: controls, invisible formatting (a right-to-left override makes a
# name read as another), lone surrogates, private-use and unassigned code points, line breaks.
NAME_REFUSED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
class PruningSpec(JsonNumbers):
    """The pruning genome's choices: every candidate carries one method (or none) and one budget."""

    model_config = FINITE

    methods: list[Annotated[str, Field(**_one_of(methods_registry.METHODS))]] = Field(
        ..., min_length=1, max_length=16, json_schema_extra={"uniqueItems": True},
        description=f"pruning methods among {', '.join(methods_registry.METHODS)}")
    budgets: list[Annotated[float, Field(json_schema_extra={"exclusiveMinimum": 0, "maximum": 1})]] = Field(
        default_factory=lambda: [0.5, 0.2, 0.1, 0.05, 0.03], min_length=1, max_length=64,
        json_schema_extra={"uniqueItems": True},
        description="fractions kept, each in (0, 1]; 0.1 prunes 90%")
    include_unpruned: bool = Field(True, strict=True,
                                   description="also search the networks unpruned, on the same front")
    options: dict[str, dict[str, Any]] = Field(default_factory=dict, max_length=16,
                                               description="per method: its hyperparameters",
                                               json_schema_extra=_options_schema)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        names = list(value)
        unknown = [n for n in names if n not in methods_registry.METHODS]
        if unknown:
            raise ValueError(f"unknown pruning method {', '.join(map(repr, unknown))}; "
                             f"choose among {', '.join(methods_registry.METHODS)}")
        if len(set(names)) != len(names):
            raise ValueError("a pruning method is named twice")
        return names

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, value: list[float]) -> list[float]:
        for budget in value:
            try:
                methods_registry.check_budget(budget)
            except methods_registry.PruningError as exc:
                raise ValueError(str(exc)) from None
        if len(set(value)) != len(value):
            raise ValueError("a budget is given twice")
        return value

    @model_validator(mode="after")
    def _options(self) -> PruningSpec:
        full = {}
        for method, options in self.options.items():
            if method not in self.methods:
                raise ValueError(f"options for {method!r}, which is not among the methods {', '.join(self.methods)}")
            try:
                full[method] = methods_registry.parse_options(method, options).model_dump()
            except ValidationError as exc:
                raise ValueError(f"options for {method}: {joined_errors(exc)}") from None
        self.options = {m: full.get(m, methods_registry.parse_options(m, None).model_dump()) for m in self.methods}
        return self

    def choices(self) -> tuple[str, ...]:
        return ((search_spaces.UNPRUNED,) if self.include_unpruned else ()) + tuple(self.methods)


def _rules_between_fields(schema: dict[str, Any]) -> None:
    """The rules of `SearchSpec._combinations` that JSON Schema can state, for a generated client.
    A batch no larger than the evaluations it cannot: that one the server alone answers (422)."""
    keeps_best = [n for n, m in methods_registry.METHODS.items() if m.keeps_best]
    schema["properties"]["constraints"]["properties"] = {"min_acc": {"type": "number", "minimum": 0, "maximum": 100}}
    schema["allOf"] = [
        {"if": {"properties": {"algorithm": {"enum": [a for a in ALGORITHM_NAMES if a != "surrogate"]}},
                "required": ["algorithm"]},
         "then": {"properties": {"batch": {"type": "null"}}}},
        {"if": {"properties": {"training": {"properties": {"patience": {"type": "integer"}}, "required": ["patience"]}},
                "required": ["training"]},
         "then": {"properties": {"pruning": {"type": "object", "properties": {"methods": {"contains": {
             "enum": keeps_best}}}}}, "required": ["pruning"]}},
    ]


class SearchSpec(JsonNumbers):
    model_config = ConfigDict(**FINITE, json_schema_extra=_rules_between_fields)

    name: str | None = Field(None, max_length=200, description=(
        "at most 200 characters, without control or invisible formatting characters"))
    space: str = Field("nasnet", **_one_of(search_spaces.SPACES))
    space_options: dict[str, Any] = Field(default_factory=dict, max_length=32)
    dataset: str = Field("digits", max_length=1024, description=(
        "'digits', an .npz file or a CIFAR-10 python-format folder; a service reads only files under its "
        "data roots, and looks a relative path up under them"))
    objectives: list[Annotated[str, Field(**_one_of(OBJECTIVES))]] = Field(
        default_factory=lambda: ["acc", "flops"], max_length=16, json_schema_extra={"minItems": 1, "uniqueItems": True})
    # NaN let through to _constraints, whose message says what a bound must be. Strict: a bound is a JSON
    # number, as the schema says; lax pydantic would read true as 1 and "3" as 3.
    constraints: dict[str, Annotated[float, Field(allow_inf_nan=True, strict=True)]] = Field(
        default_factory=dict, max_length=16, **_keys_among(CONSTRAINTS))
    algorithm: str = Field("surrogate", **_one_of(ALGORITHM_NAMES))
    population: int = Field(12, ge=2, le=100_000)
    batch: int | None = Field(None, ge=1, le=100_000, description=(
        "surrogate search: candidates asked at a time after the first population (the smaller, the more each "
        "evaluation informs the next; a multiple of the workers keeps them all busy); default population // 4"))
    evaluations: int = Field(40, ge=1, le=10_000_000, description="budget: candidates trained (or looked up)")
    overlap: bool | None = Field(None, strict=True, description=(
        "choose the next batch while the current one trains, from the results up to the batch before, so "
        "workers never wait for the choice; default: on when candidates train, off for table look-ups"))
    time_limit_s: float | None = Field(None, gt=0, le=10**7, description=(
        "wall-clock limit of one run of the search: once reached no new candidate is asked, the ones in flight "
        "finish, and the result records that the limit was hit; without it the same spec and seed give the same "
        "front"))
    pruning: PruningSpec | None = Field(None, description="search a pruning genome too (see METHODS.md)")
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    early_stopping: EarlyStoppingSpec | None = Field(None, description=(
        "train candidates in rungs and stop the hopeless ones early (successive halving on Pareto standing); "
        "null: every candidate trains training.epochs"))
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    seed: int = Field(0, ge=0, lt=2**32)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or (info.context and info.context.get("stored")):
            return value
        refused = sorted({f"U+{ord(c):04X}" for c in value if unicodedata.category(c) in NAME_REFUSED})
        if refused:
            raise ValueError(f"a name may not hold control, formatting or unassigned characters; it holds "
                             f"{', '.join(refused[:5])}")
        return value

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: list[str]) -> list[str]:
        names = list(value)
        if not names:
            raise ValueError(f"name at least one objective among {', '.join(OBJECTIVES)}")
        unknown = [n for n in names if n not in OBJECTIVES]
        if unknown:
            raise ValueError(f"unknown objective {', '.join(map(repr, unknown))}; choose among {', '.join(OBJECTIVES)}")
        if len(set(names)) != len(names):
            raise ValueError("an objective is named twice")
        return names

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, value: dict[str, float]) -> dict[str, float]:
        for name, bound in value.items():
            if name not in CONSTRAINTS:
                raise ValueError(f"unknown constraint {name!r}; choose among {', '.join(CONSTRAINTS)}")
            if not math.isfinite(bound) or bound < 0:
                raise ValueError(f"constraint {name} must be a finite number >= 0, got {bound}")
            if name == "min_acc" and bound > 100:
                raise ValueError(f"constraint min_acc is a validation accuracy in %, at most 100, got {bound:g}: "
                                 "no candidate could meet it")
        return value

    @model_validator(mode="after")
    def _combinations(self, info: ValidationInfo) -> SearchSpec:
        """Fields that are valid alone but mean nothing together."""
        if info.context and info.context.get("stored"):
            return self  # a search already stored runs (or resumes) as it was accepted
        if self.batch is not None:
            if self.algorithm != "surrogate":
                raise ValueError(f"batch: only the surrogate search asks in batches, {self.algorithm} asks a "
                                 "population at a time; drop batch or use algorithm surrogate")
            if self.batch > self.evaluations:
                raise ValueError(f"batch: {self.batch} candidates at a time is more than the whole budget of "
                                 f"{self.evaluations} evaluations; lower batch or raise evaluations")
        methods = self.pruning.methods if self.pruning else []
        if self.training.patience is not None and not any(methods_registry.METHODS[m].keeps_best for m in methods):
            stoppable = ", ".join(n for n, m in methods_registry.METHODS.items() if m.keeps_best)
            raise ValueError(f"training.patience: only pruning methods that keep their best epoch ({stoppable}) "
                             "stop early, and this search runs none; drop patience or prune with one of them")
        if self.early_stopping is not None and self.early_stopping.active and self.pruning is not None:
            raise ValueError("early_stopping: pruning methods train in their own loops, which do not stop at rungs; "
                             "drop early_stopping or the pruning")
        return self

    def _check_early_stopping(self, curve_epochs: tuple[int, ...] | None) -> None:
        """`curve_epochs`: in table mode, the epochs the table has accuracies for (its learning curves)."""
        es = self.early_stopping
        if es is None:
            return
        if es.max_epochs is None:
            es.max_epochs = curve_epochs[-1] if curve_epochs else self.training.epochs
        if es.min_epochs > es.max_epochs:
            raise ValueError(f"early_stopping.min_epochs: {es.min_epochs} is more than max_epochs {es.max_epochs}; "
                             "the first rung cannot train longer than a full candidate")
        if not es.active:
            return
        if es.min_epochs == es.max_epochs:
            raise ValueError(f"early_stopping.min_epochs: {es.min_epochs} equals max_epochs, so there is one rung "
                             "and nothing to stop early; lower min_epochs or use method none")
        if curve_epochs is None:
            return
        missing = [e for e in rung_epochs(es) if e not in curve_epochs]
        if not curve_epochs:
            raise ValueError("early_stopping: the table has no learning curves (acc_epoch_<E> columns, the accuracy "
                             "after E epochs), so a rung's accuracy cannot be looked up; drop early_stopping or use "
                             "a table with them")
        if missing:
            raise ValueError(f"early_stopping: the rungs train {', '.join(map(str, rung_epochs(es)))} epochs and the "
                             f"table has no accuracy after {', '.join(map(str, missing))}; its learning curves "
                             f"cover epochs {_span(curve_epochs)}: choose min_epochs, eta and max_epochs among them")

    @field_validator("space")
    @classmethod
    def _space(cls, value: str) -> str:
        if value not in search_spaces.SPACES:
            raise ValueError(f"unknown space {value!r}; choose among {', '.join(search_spaces.SPACES)}")
        return value

    @field_validator("algorithm")
    @classmethod
    def _algorithm(cls, value: str) -> str:
        if value not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {value!r}; choose among {', '.join(ALGORITHMS)}")
        return value

    @model_validator(mode="after")
    def _resources_on_disk(self, info: ValidationInfo) -> SearchSpec:
        try:
            options = search_spaces.options_model(self.space)(**self.space_options).model_dump()
        except ValidationError as exc:
            raise ValueError(f"space_options for {self.space}: {joined_errors(exc)}") from None
        self._check_pruning(options)
        if info.context and info.context.get("stored"):
            return self  # checked when it was stored; its files are only needed to run it
        curve_epochs = None
        table = options.get("table")
        if table is not None:
            path = Path(table).expanduser()
            if not path.is_file():
                raise ValueError(f"table {table!r} does not exist")
            options["table"] = str(path.resolve())
            try:
                curve_epochs = search_spaces.make_space(self.space, options).table.curve_epochs
            except ValueError as exc:
                raise ValueError(f"table {table!r} cannot be used: {exc}") from None
            extra = [o for o in self.objectives if o not in TABLE_OBJECTIVES]
            if extra:
                raise ValueError(
                    f"objective {', '.join(extra)} is not in the table; a table search can use "
                    f"{', '.join(TABLE_OBJECTIVES)}"
                )
            unusable = [c for c in self.constraints if CONSTRAINTS[c][0] not in TABLE_OBJECTIVES]
            if unusable:
                raise ValueError(f"constraint {', '.join(unusable)} needs a measure the table does not have; "
                                 f"a table search can constrain {', '.join(TABLE_OBJECTIVES)}")
        else:
            try:
                data.check_source(self.dataset)
            except DatasetError as exc:
                raise ValueError(str(exc)) from None
            if self.dataset != "digits":
                self.dataset = str(Path(self.dataset).expanduser().resolve())
        self.space_options = options
        self._check_early_stopping(curve_epochs)
        return self

    def _check_pruning(self, options: dict[str, Any]) -> None:
        fixed = self.space in search_spaces.FIXED_SPACES
        if self.pruning is None:
            if fixed:
                raise ValueError(f"space {self.space} is one fixed network, so only its pruning can be searched: "
                                 f"name a pruning method (--prune METHOD, or pruning.methods)")
            return
        if options.get("table") is not None:
            raise ValueError("a table search looks accuracies up and trains nothing, so it cannot be pruned: "
                             "drop the table or the pruning")
        for method in self.pruning.methods:
            if methods_registry.METHODS[method].structured and not fixed:
                raise ValueError(f"{method} pruning removes conv filters of a fixed backbone "
                                 f"({', '.join(search_spaces.FIXED_SPACES)}); {self.space} cells join branches "
                                 "whose filters it cannot remove: use an unstructured method")
            if fixed:
                _check_backbone(method, self.space)

    def search_space(self, structure: bool = False) -> search_spaces.SearchSpace:
        """The space candidates are drawn from: the named space, with the pruning genome when there is one.

        ``structure``: without its results table (enough to build, describe or canonicalise a genome)."""
        make = search_spaces.structure_space if structure else search_spaces.make_space
        base = make(self.space, self.space_options)
        if self.pruning is None:
            return base
        takes = frozenset(n for n, m in methods_registry.METHODS.items() if m.takes_budget)
        return search_spaces.PrunedSpace(base, self.pruning.choices(), tuple(self.pruning.budgets), takes)

    @property
    def table_mode(self) -> bool:
        return self.space_options.get("table") is not None

    @property
    def overlapped(self) -> bool:
        return (not self.table_mode) if self.overlap is None else self.overlap

    @classmethod
    def from_stored(cls, values: dict[str, Any]) -> SearchSpec:
        """A spec read back from the store: valid when stored, even if its files have moved since."""
        # Searches stored before `overlap` existed ran without it; resumed, they must replay the same way.
        return cls.model_validate({"overlap": False} | values, context={"stored": True})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SearchSpec:
        """Validate, turning pydantic's report into one line that names the field."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SpecError(describe_validation_error(exc)) from None


@lru_cache(maxsize=64)
def _check_backbone(method: str, backbone: str) -> None:
    """What a method needs of the network depends only on its layers, not on the input size."""
    from search_spaces.backbones import build_backbone

    from .pruning.applicable import check

    try:
        check(method, build_backbone(backbone, (1, 8, 8), 10))
    except methods_registry.PruningError as exc:
        raise ValueError(str(exc)) from None


def _span(epochs: tuple[int, ...]) -> str:
    return ", ".join(map(str, epochs)) if len(epochs) <= 6 else f"{epochs[0]}, {epochs[1]}, ... {epochs[-1]}"


def describe_validation_error(exc: ValidationError) -> str:
    return "invalid search: " + joined_errors(exc)
