"""A candidate network out as a file: its genotype, its weights, a torch.export program or ONNX.

Every file that holds a model is loaded back the way its user would load it (torch.load,
torch.export.load, onnxruntime) and must reproduce the outputs the candidate's evaluation recorded
from the network it trained (`output_check`), so a broken export, or stored weights that are not the
ones evaluated, fail here rather than on the user's machine. Candidates evaluated before outputs were
recorded can only be checked against the eager model built from their stored weights; `Exported`
says which check was made. A finished final training exports the same way, built at its final scale and
held to the outputs its training recorded at the end.
"""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

import search_spaces

from . import data, output_check
from .errors import ConflictError, DvolverError
from .final_spec import FinalTraining
from .jsonable import finite
from .pruning.shrink import shrink
from .spec import SearchSpec
from .store import Search, Store
from .store_trainings import WEIGHTS

FORMATS = ("genotype", "state_dict", "sparse", "torch_export", "onnx")
TRAINING_FORMATS = tuple(f for f in FORMATS if f != "sparse")  # a final training retrains unpruned networks
TOLERANCE = 1e-4  # max abs difference in logits between the file and what it is checked against
_SUFFIXES = {"state_dict": "pt", "sparse": "pt", "torch_export": "pt2", "onnx": "onnx"}
_METADATA_KEY = "dvolver.json"  # the genotype, embedded in .pt2 and .onnx files so they describe themselves

log = logging.getLogger(__name__)


class ExportError(DvolverError):
    """A candidate cannot be exported in the format asked for."""


@dataclass(frozen=True)
class Exported:
    data: bytes
    media_type: str
    filename: str
    # "evaluation": outputs match those recorded when the candidate was evaluated; "training": those its final
    # training recorded; "stored weights": only the eager model built from the stored weights was there to
    # compare with; None: no model in the file.
    checked_against: str | None = None


def formats(metrics: Mapping[str, Any], has_weights: bool) -> tuple[str, ...]:
    """The formats a candidate can be exported in: a sparse file only where a mask left zeros."""
    if not has_weights:
        return ("genotype",)
    return tuple(f for f in FORMATS if f != "sparse" or metrics.get("cost_kind") == "sparse")


def export(spec: SearchSpec, genome: tuple[int, ...], fmt: str, *, weights: bytes | None,
           input_shape: tuple[int, int, int] | None, num_classes: int | None, name: str,
           info: dict | None = None, pruning: Mapping[str, Any] | None = None,
           recorded: list[list[float]] | None = None, recorded_by: str = "evaluation") -> Exported:
    """Export one candidate. `weights` is its trained state_dict as `torch.save` bytes, or None.

    `pruning`: the candidate's pruning record (its metrics' "pruning"); filters it removed are removed
    from the network built here too, so the weights of the narrower network fit it. `recorded`: the
    logits its evaluation recorded (`output_check`), which every model format must reproduce; `recorded_by`
    says what recorded them ("evaluation" or "training")."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose among {', '.join(FORMATS)}")
    genome = tuple(int(g) for g in genome)
    options = search_spaces.options_model(spec.space)(**spec.space_options).model_dump()
    space = spec.model_copy(update={"space_options": options}).search_space(structure=True)
    try:
        space.codec().check(genome)
    except ValueError as exc:
        raise ExportError(f"genome does not belong to the {spec.space} space: {exc}") from None
    genotype = _genotype_json(spec.space, options, genome, space.describe(genome), input_shape, num_classes, info)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "candidate"
    if fmt == "genotype":
        return Exported(genotype, "application/json", f"{stem}.json")
    if weights is None:
        raise ExportError("candidate has no trained weights (it failed, was infeasible, or came from a table "
                          "look-up); only 'genotype' can be exported")

    def fresh_model() -> nn.Module:
        # Seeded and forked so that building (whose init is then overwritten) leaves the caller's RNG alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = space.build(genome, input_shape, num_classes)
        if pruning and pruning.get("keep"):
            model = shrink(model, pruning["keep"], torch.zeros(1, *input_shape))
        load_weights(model, weights)
        return model.eval()

    model = fresh_model()
    x = output_check.check_input(input_shape)
    if recorded is not None:
        expected, checked_against = torch.tensor(recorded, dtype=torch.float32), recorded_by
    else:
        with torch.no_grad():
            expected, checked_against = model(x), "stored weights"
        log.warning("candidate %s has no outputs recorded at evaluation: its %s export is checked against the "
                    "network built from its stored weights only", name, fmt)
    if fmt == "state_dict":
        data, run = weights, lambda xb: fresh_model()(xb)
    elif fmt == "sparse":
        data, run = _sparse(model), lambda xb: _load_sparse(fresh_model(), data)(xb)
    elif fmt == "torch_export":
        data, run = _torch_export(model, x, genotype)
    else:
        data, run = _onnx(model, x, genotype)
    with torch.no_grad():
        _check(fmt, expected, run(x), checked_against)
    log.info("exported %s as %s (%d bytes), checked against the %s", name, fmt, len(data), checked_against)
    return Exported(data, "application/octet-stream", f"{stem}.{_SUFFIXES[fmt]}", checked_against)


def load_weights(model: nn.Module, weights: bytes) -> None:
    """Load `torch.save(state_dict)` bytes into `model` on CPU; weights of another network raise ExportError.

    Parameters keep the model's own memory format, so weights saved from a channels-last model
    load into a contiguous one unchanged in value.
    """
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for bytes that are not a state_dict
        raise ExportError(f"the stored weights cannot be read as a state_dict: {exc}") from None
    if not isinstance(state, Mapping):
        raise ExportError(f"the stored weights are a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ExportError(f"the stored weights do not fit this architecture: {exc}") from None


def _sparse(model: nn.Module) -> bytes:
    """The state_dict with every weight that has zeros as a sparse COO tensor: the masked network in the size
    of what it keeps. `torch.load`, then `.to_dense()` each sparse tensor, gives back the state_dict."""
    state = {}
    for key, tensor in model.state_dict().items():
        if key.endswith("weight") and tensor.dim() > 1 and bool((tensor == 0).any()):
            tensor = tensor.to_sparse()
        state[key] = tensor
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _load_sparse(model: nn.Module, data: bytes) -> nn.Module:
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.to_dense() if v.is_sparse else v for k, v in state.items()})
    return model


def _genotype_json(space: str, options: dict[str, Any], genome: tuple[int, ...], architecture: dict[str, Any],
                   input_shape: tuple[int, int, int] | None, num_classes: int | None, info: dict | None) -> bytes:
    doc = {
        "format": "dvolver-genotype",
        "format_version": 1,
        "space": space,
        "space_options": options,
        "genome": list(genome),
        "architecture": architecture,
        "input_shape": list(input_shape) if input_shape else None,  # None: a table search trained nothing
        "num_classes": num_classes,
        "info": info or {},
    }
    return json.dumps(finite(doc), indent=2, allow_nan=False).encode()


def _torch_export(model: nn.Module, x: torch.Tensor,
                  genotype: bytes) -> tuple[bytes, Callable[[torch.Tensor], torch.Tensor]]:
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={_METADATA_KEY: genotype.decode()})
    data = buffer.getvalue()
    return data, torch.export.load(io.BytesIO(data)).module()


def _onnx(model: nn.Module, x: torch.Tensor, genotype: bytes) -> tuple[bytes, Callable[[torch.Tensor], torch.Tensor]]:
    try:
        import onnx  # noqa: F401  (the exporter needs these three; import them to fail with our message)
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"ONNX export needs onnx, onnxscript and onnxruntime ({exc.name} is missing): "
                          "pip install 'dvolver[onnx]'") from None
    # Noise a user cannot act on: a warning per torchvision op the exporter cannot register (these
    # networks use none) and a deprecation inside torch's own pytree code.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
    program = torch.onnx.export(model, (x,), dynamo=True, verbose=False, input_names=["input"],
                                output_names=["logits"], dynamic_shapes=({0: "batch"},))
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = _METADATA_KEY, genotype.decode()
    data = proto.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])

    def run(xb: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(session.run(None, {"input": xb.numpy()})[0]))

    return data, run


def _check(fmt: str, expected: torch.Tensor, got: torch.Tensor, against: str = "stored weights") -> None:
    what = {"evaluation": "the network as evaluated", "training": "the network as trained"}.get(against, "the model")
    if got.shape != expected.shape:
        raise ExportError(f"the {fmt} export gives outputs of shape {tuple(got.shape)}, "
                          f"{what} {tuple(expected.shape)}")
    # Equal infinities and NaN in both count as agreement; NaN in one only makes `worst` NaN and fails.
    same = (got == expected) | (got.isnan() & expected.isnan())
    worst = torch.where(same, 0.0, (got - expected).abs()).max().item()
    if not worst <= TOLERANCE:
        raise ExportError(f"the {fmt} export does not reproduce {what}: max abs difference in outputs "
                          f"{worst:.3g} > {TOLERANCE:g}")


def export_candidate(store: Store, search_id: int, candidate_id: int, fmt: str) -> Exported:
    """A stored candidate out as `fmt`, with the input shape and class count its search trained on."""
    search = store.get_search(search_id)
    spec = SearchSpec.from_stored(search.spec)
    found = store.candidate(search_id, candidate_id)
    shape, classes = _trained_shape(search, None if spec.table_mode else spec.dataset)
    with _failures_as_export_errors(f"candidate {candidate_id}", fmt):
        if fmt == "sparse" and fmt not in formats(found.metrics, True):
            raise ExportError(f"candidate {candidate_id} has no masked weights to store sparse (it was not pruned by "
                              "an unstructured method); export it as state_dict")
        return export(spec, found.genome, fmt, weights=store.weights(candidate_id), input_shape=shape,
                      num_classes=classes, name=f"search{search_id}-candidate{candidate_id}",
                      info={"key": found.key, "objectives": found.objectives, "metrics": found.metrics},
                      pruning=found.metrics.get("pruning"), recorded=found.metrics.get(output_check.METRIC))


def export_training(store: Store, training_id: int, fmt: str) -> Exported:
    """A finished final training's network out as `fmt`, built at its final scale, its outputs held to those
    its training recorded. Raises ConflictError, writing nothing, for a training that has not finished."""
    training = store.get_training(training_id)
    if training.status != "finished":
        raise ConflictError(f"training {training_id} is {training.status}, not finished: only a finished training "
                            f"can be exported (`dvolver train --resume {training_id}` finishes it)")
    if fmt not in TRAINING_FORMATS:
        raise ExportError(f"format: a training exports as {', '.join(TRAINING_FORMATS)}, not {fmt!r}")
    search = store.get_search(training.search_id)
    recipe = FinalTraining.from_dict(training.recipe)
    spec = SearchSpec.from_stored(search.spec)
    # The search's space at the recipe's scale: the network the training built and deployed.
    at_scale = spec.model_copy(update={"space_options": recipe.space_options(training.space, spec.space_options)})
    shape, classes = _trained_shape(search, recipe.dataset)
    with _failures_as_export_errors(f"training {training_id}", fmt):
        return export(at_scale, training.genome, fmt, weights=store.training_bytes(training_id, WEIGHTS),
                      input_shape=shape, num_classes=classes, name=f"training{training_id}",
                      info={"training": training_id, "search": training.search_id, "candidate": training.candidate_id,
                            "recipe": training.recipe, "val_acc": training.val_acc, "test_acc": training.test_acc},
                      recorded=training.check_outputs, recorded_by="training")


def _trained_shape(search: Search, dataset: str | None) -> tuple[tuple[int, int, int] | None, int | None]:
    """The input shape and class count the search trained on; read from `dataset` for a search stored before
    these stats, and None for a table search, which trained nothing (`dataset` None)."""
    shape, classes = search.stats.get("input_shape"), search.stats.get("num_classes")
    if (shape is None or classes is None) and dataset is not None:
        loaded = data.load(dataset)
        shape, classes = loaded.input_shape, loaded.num_classes
    return (tuple(shape) if shape else None), classes


@contextmanager
def _failures_as_export_errors(what: str, fmt: str) -> Iterator[None]:
    try:
        yield
    except DvolverError:
        raise
    except Exception as exc:  # a tracer or exporter failing on this network: a user error, not a crash
        raise ExportError(f"exporting {what} as {fmt} failed: {type(exc).__name__}: {exc}") from exc
