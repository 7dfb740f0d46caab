"""Final trainings as jobs in the store (issue 19): the candidates of a search chosen for retraining at final
scale, every one checked before anything is stored.

`create_trainings` refuses, creating nothing, a candidate that is not in the search or has not finished, a
recipe at a scale the candidate's space cannot build, and a dataset whose images or classes differ from the
search's. Running them is dvolver.training_runs's part: in a `dvolver train` process, or on a runner that
claims them.

`create_reference` queues a reference architecture instead (NASNet-A, or any genome of the search's space): a
training of the search with no candidate, held to the same checks, to compare the found networks with under
the same recipe.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from search_spaces.nasnet import NASNET_A

from . import data
from .errors import ConflictError, DatasetError, NotFoundError, SpecError
from .final_spec import FinalTraining
from .final_training import final_space
from .front import minimised, pareto_front
from .pareto import knee_point
from .run_stats import RunStats
from .spec import SearchSpec
from .store import Candidate, Search, Store

Choice = Sequence[int] | Literal["front", "knee"]
# The named reference architectures, with the space each belongs to.
REFERENCES: dict[str, tuple[str, tuple[int, ...]]] = {"nasnet-a": ("nasnet", NASNET_A)}


def create_trainings(store: Store, search_id: int, candidates: Choice,
                     recipe: FinalTraining | dict[str, Any] | None = None) -> list[int]:
    """Queues a final training of each candidate named (ids of the search's finished candidates), of the
    search's front ("front"), or of its knee ("knee", pareto.knee_point); returns their ids. The recipe's
    dataset is the search's unless it names one. Raises a DvolverError naming the field at fault, having
    created nothing, when any candidate or the recipe cannot be trained."""
    spec, final, dataset = _prepared(store, search_id, recipe, "candidates")
    entries = [_entry(c.id, c.genome, f"candidate {c.id}'s", spec, final, dataset)
               for c in _chosen(store, search_id, spec, candidates)]
    return store.create_trainings(search_id, entries)


def create_reference(store: Store, search_id: int, genome: str | Sequence[int],
                     recipe: FinalTraining | dict[str, Any] | None = None) -> int:
    """Queues a final training of a reference architecture beside the search's candidates: a name in
    REFERENCES, a genome of the search's space, or one as a JSON list. It has no candidate; the checks, and
    the recipe's defaults, are those of `create_trainings`. Returns its id."""
    spec, final, dataset = _prepared(store, search_id, recipe, "genome")
    genome = _reference_genome(genome, spec.space)
    [training_id] = store.create_trainings(search_id, [_entry(None, genome, "the reference", spec, final, dataset)])
    return training_id


def _prepared(store: Store, search_id: int, recipe: FinalTraining | dict[str, Any] | None,
              field: str) -> tuple[SearchSpec, FinalTraining, data.Dataset]:
    """The search's spec, the recipe validated, and its dataset checked against the search's shape."""
    search = store.get_search(search_id)
    spec = SearchSpec.from_stored(search.spec)
    if spec.pruning is not None:
        raise SpecError(f"{field}: search {search_id} searched pruned networks; final training retrains "
                        "unpruned architectures only")
    final = _recipe(recipe, spec)
    dataset = data.load(final.dataset)
    _check_shape(search, final.dataset, dataset)
    return spec, final, dataset


def _reference_genome(genome: str | Sequence[int], space: str) -> tuple[int, ...]:
    if isinstance(genome, str) and genome.lower() in REFERENCES:
        own, named = REFERENCES[genome.lower()]
        if own != space:
            raise SpecError(f"genome: {genome} is a {own} architecture, and this search searched {space}")
        return named
    if isinstance(genome, str):
        try:
            genome = json.loads(genome)
        except ValueError:
            genome = None  # neither a name nor JSON: refused below
        if not isinstance(genome, list):
            raise SpecError(f"genome: give a reference's name ({', '.join(REFERENCES)}) or a JSON list of integers")
    if not all(isinstance(g, int) and not isinstance(g, bool) for g in genome):
        raise SpecError("genome: every gene must be an integer")
    return tuple(genome)


def _recipe(recipe: FinalTraining | dict[str, Any] | None, spec: SearchSpec) -> FinalTraining:
    values = recipe.model_dump(exclude_unset=True) if isinstance(recipe, FinalTraining) else dict(recipe or {})
    values.setdefault("dataset", spec.dataset)  # retrained on what it was found on, unless told otherwise
    return FinalTraining.from_dict(values)


def _check_shape(search: Search, source: str, dataset: data.Dataset) -> None:
    stats = RunStats.from_dict(search.stats)
    if stats.input_shape is None:  # a table search trained nothing: there is no shape to hold the data to
        return
    found, ran = (dataset.input_shape, dataset.num_classes), (tuple(stats.input_shape), stats.num_classes)
    if found != ran:
        raise DatasetError(f"dataset: {source} holds {_shape(*found)}, and search {search.id} ran on "
                           f"{_shape(*ran)}: retrain on data of the search's shape")


def _shape(input_shape: tuple[int, ...], num_classes: int | None) -> str:
    return f"{'x'.join(map(str, input_shape))} images in {num_classes} classes"


def _chosen(store: Store, search_id: int, spec: SearchSpec, candidates: Choice) -> list[Candidate]:
    if candidates in ("front", "knee"):
        front = pareto_front(store.candidates(search_id, ("finished",)), spec)
        if not front:
            raise ConflictError(f"candidates: search {search_id} has no front yet: no candidate has finished "
                                "within its constraints")
        if candidates == "knee":
            front = [front[knee_point(np.array([minimised(c, spec.objectives) for c in front]))]]
        return front
    if isinstance(candidates, str):
        raise SpecError(f"candidates: give candidate ids, 'front' or 'knee', not {candidates!r}")
    chosen = []
    for candidate_id in dict.fromkeys(int(i) for i in candidates):
        try:
            candidate = store.candidate(search_id, candidate_id)
        except NotFoundError:
            raise NotFoundError(f"candidates: search {search_id} has no candidate {candidate_id}; "
                                f"`dvolver front {search_id}` lists its front") from None
        if candidate.status != "finished":
            raise ConflictError(f"candidates: candidate {candidate_id} of search {search_id} is {candidate.status}, "
                                "not finished: only a finished candidate can be retrained")
        chosen.append(candidate)
    if not chosen:
        raise SpecError("candidates: name at least one candidate, or choose the search's front or its knee")
    return chosen


def _entry(candidate_id: int | None, genome: tuple[int, ...], whose: str, spec: SearchSpec, final: FinalTraining,
           dataset: data.Dataset) -> dict[str, Any]:
    """The training to store, with the recipe as the genome's space fills it in, once its network is built at
    the recipe's scale; `whose` names the network in the error when it cannot be."""
    filled = final.for_space(spec.space)
    space = final_space(spec.space, filled.space_options(spec.space, spec.space_options), genome)
    aux = {"aux_head": True} if filled.aux_weight else {}
    try:
        space.build(genome, dataset.input_shape, dataset.num_classes, **aux)
    except Exception as exc:  # whatever a space raises while building, this scale does not build
        raise SpecError(f"invalid final training: scale: {whose} {spec.space} network cannot "
                        f"be built at {filled.scale.model_dump()}: {exc}") from None
    return {"candidate_id": candidate_id, "genome": genome, "space": spec.space,
            "recipe": filled.model_dump(mode="json"), "epochs": filled.epochs}
