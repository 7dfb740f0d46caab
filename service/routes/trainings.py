"""Final trainings: queue retrainings of a search's candidates (or of a reference architecture), list and read
them, cancel and resume them, download their trained networks, and how the proxy ranking survived. Nothing
here trains: runners claim queued trainings from the store."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from dvolver.errors import DatasetError, SpecError
from dvolver.export import TRAINING_FORMATS
from dvolver.final_spec import FinalTraining
from dvolver.rank_survival import survival as rank_survival
from dvolver.store import Store, Training
from dvolver.store_trainings import TRAINING_STATUSES
from dvolver.trainings import create_reference, create_trainings

from ..auth import Caller, reader, visible_search, visible_training, writer
from ..paths import confine
from ..responses import READ, WRITE, errors
from ..schemas import MAX_ID, SearchId, Survival, TrainingDetail, TrainingOut, TrainingPage, TrainingRequest
from ..settings import Settings

router = APIRouter(tags=["trainings"])

TrainingId = Annotated[int, Path(ge=1, le=MAX_ID, description="the training's id")]
TrainingStatus = Literal[TRAINING_STATUSES]  # type: ignore[valid-type]
TrainingFormat = Literal[TRAINING_FORMATS]  # type: ignore[valid-type]


def _refused(loc: tuple[str | int, ...], message: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", *loc), "msg": message, "type": kind}])


def _checked_recipe(body: TrainingRequest, request: Request) -> dict:
    """The recipe with its dataset confined to the data roots; one over this service's limits is refused
    before anything is stored."""
    settings: Settings = request.app.state.settings
    recipe = dict(body.recipe)
    dataset = recipe.get("dataset")
    if isinstance(dataset, str) and dataset != "digits":
        try:
            recipe["dataset"] = confine(dataset, request.app.state.data_roots)
        except ValueError as exc:
            raise _refused(("recipe", "dataset"), f"recipe.dataset: {exc}", "path_refused") from None
    try:
        epochs = FinalTraining.from_dict(recipe).epochs
    except SpecError as exc:
        raise _refused(("recipe",), str(exc), "value_error") from None
    if epochs > settings.max_final_epochs:
        raise _refused(("recipe", "epochs"), f"recipe.epochs = {epochs} is over this service's limit "
                                             f"max_final_epochs = {settings.max_final_epochs}", "limit_exceeded")
    return recipe


def _field(message: str) -> tuple[str, ...]:
    """Where in the body a refusal of the trainings' checks points: each message leads with its field."""
    for field in ("candidates", "genome"):
        if message.startswith(field):
            return (field,)
    return ("recipe", "dataset") if message.startswith("dataset") else ("recipe",)


def _check_active(store: Store, owner: str | None, adding: int, settings: Settings) -> None:
    active = sum(t.status in ("queued", "running") for t in store.list_trainings(owner=owner))
    if active + adding > settings.max_trainings:
        raise HTTPException(429, f"{owner} has {active} trainings queued or running and asks for {adding} more, "
                                 f"over this service's limit max_trainings = {settings.max_trainings}; wait for "
                                 "some or cancel some")


def _out(training: Training, request: Request, model: type[TrainingOut] = TrainingOut) -> TrainingOut:
    exports = {}
    if training.status == "finished":
        base = str(request.url_for("export_training", training_id=training.id))
        exports = {f: f"{base}?format={f}" for f in TRAINING_FORMATS}
    fields = {name: getattr(training, name) for name in model.model_fields if hasattr(training, name)}
    return model(**fields | {"genome": list(training.genome), "exports": exports})


@router.post("/searches/{search_id}/trainings", status_code=201, response_model=list[TrainingOut],
             responses=errors(400, *WRITE, 413, 429))
def create(search_id: SearchId, body: TrainingRequest, request: Request,
           who: Caller = Depends(writer)) -> list[TrainingOut]:
    """Queue final trainings of the search's finished candidates (ids, its front or its knee), or of one
    reference architecture, all with one recipe; runners train them. Every one is checked first (a candidate
    not finished or not in the search, a scale the space cannot build, a dataset of another shape): one bad,
    none created."""
    store = request.app.state.store
    visible_search(store, search_id, who)
    if (body.candidates is None) == (body.genome is None):
        raise _refused(("candidates",), "give candidates (ids, 'front' or 'knee') or a reference genome, "
                                        "not both and not neither", "value_error")
    recipe = _checked_recipe(body, request)
    adding = len(body.candidates) if isinstance(body.candidates, list) else 1
    _check_active(store, who.owner, adding, request.app.state.settings)
    try:
        if body.genome is not None:
            ids = [create_reference(store, search_id, body.genome, recipe)]
        else:
            ids = create_trainings(store, search_id, body.candidates, recipe)
    except (SpecError, DatasetError) as exc:
        raise _refused(_field(str(exc)), str(exc), "value_error") from None
    return [_out(store.get_training(i), request) for i in ids]


@router.get("/trainings", response_model=TrainingPage, responses=errors(401, 404, 422, 503))
def list_trainings(request: Request, search_id: int | None = Query(None, ge=1, le=MAX_ID),
                   status: TrainingStatus | None = None, limit: int = Query(100, ge=1, le=1000),
                   offset: int = Query(0, ge=0, le=2**31), who: Caller = Depends(reader)) -> TrainingPage:
    """The caller's trainings (every one, for an anonymous reader of an open service), in id order."""
    store = request.app.state.store
    if search_id is not None:
        visible_search(store, search_id, who)
    chosen = [t for t in store.list_trainings(search_id, who.owner) if status is None or t.status == status]
    limit = min(limit, request.app.state.settings.max_page)
    return TrainingPage(items=[_out(t, request) for t in chosen[offset:offset + limit]], total=len(chosen),
                        limit=limit, offset=offset)


@router.get("/trainings/{training_id}", response_model=TrainingDetail, responses=errors(*READ))
def get_training(training_id: TrainingId, request: Request, who: Caller = Depends(reader)) -> TrainingOut:
    """One training with its recipe and every epoch's metrics."""
    return _out(visible_training(request.app.state.store, training_id, who), request, TrainingDetail)


@router.post("/trainings/{training_id}/cancel", response_model=TrainingOut, responses=errors(*WRITE))
def cancel(training_id: TrainingId, request: Request, who: Caller = Depends(writer)) -> TrainingOut:
    """A queued training is cancelled at once; a running one at the end of its epoch, keeping its checkpoint."""
    store = request.app.state.store
    visible_training(store, training_id, who)
    return _out(store.request_training_cancel(training_id), request)


@router.post("/trainings/{training_id}/resume", response_model=TrainingOut, responses=errors(*WRITE, 429))
def resume(training_id: TrainingId, request: Request, who: Caller = Depends(writer)) -> TrainingOut:
    """Queue a failed or cancelled training again; a runner continues it from its last checkpointed epoch."""
    store = request.app.state.store
    visible_training(store, training_id, who)
    _check_active(store, who.owner, 1, request.app.state.settings)
    return _out(store.requeue_training(training_id), request)


@router.get("/trainings/{training_id}/export", name="export_training", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}} | errors(400, *READ, 409))
def export(training_id: TrainingId, request: Request, fmt: TrainingFormat = Query("state_dict", alias="format"),
           who: Caller = Depends(reader)) -> Response:
    """The trained network at its final scale as a file (its final weights), loaded back and held to the
    outputs the training recorded before it is sent."""
    training = visible_training(request.app.state.store, training_id, who)
    out = request.app.state.exports.training(training, fmt)
    return Response(out.data, media_type=out.media_type,
                    headers={"Content-Disposition": f'attachment; filename="{out.filename}"'})


@router.get("/searches/{search_id}/survival", response_model=Survival, responses=errors(*READ))
def survival(search_id: SearchId, request: Request, who: Caller = Depends(reader)) -> Survival:
    """How the proxy ranking survived final training: Kendall tau-b and Spearman rho between proxy and final
    accuracy, the final front against the proxy front, and who fell off it."""
    store = request.app.state.store
    visible_search(store, search_id, who)
    return Survival(**vars(rank_survival(store, search_id)))
