"""`evaluate(genome, spec, seed) -> metrics`: build, train, measure. Runs inside a worker.

A pure function of its arguments. The driver loads the dataset once and sends it (through Ray's
object store, or to each local worker process when it starts), so a worker on any node needs none of
the driver's files; called without it, it loads the spec's dataset itself.
"""

from __future__ import annotations

import hashlib
import io
from contextlib import contextmanager
from typing import Any

import torch

import search_spaces
from search_spaces import UNPRUNED, Genome, PrunedSpace, PruningChoice

from . import costs, data, output_check, unit_costs
from .cpu_forms import restore_plain
from .pruning import methods
from .spec import SearchSpec
from .training import Rung, autocast_dtype, train

WEIGHTS = "weights"  # the key of the trained state_dict (torch.save bytes) in evaluate's result
CHECKPOINT = "checkpoint"  # below the last rung: the training state that continues the run (torch.save bytes)


def candidate_seed(search_seed: int, key: str) -> int:
    """A candidate's training seed depends on the search seed and on what the candidate is, never
    on when it ran: results then do not depend on the executor or on resumes."""
    digest = hashlib.sha256(f"{search_seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def needs_latency(spec: SearchSpec) -> bool:
    return "latency" in spec.objectives or "max_latency_ms" in spec.constraints


def pruning_choice(space: search_spaces.SearchSpace, genome: Genome) -> PruningChoice | None:
    """The candidate's pruning genome; None when it is not pruned."""
    if not isinstance(space, PrunedSpace):
        return None
    choice = space.split(genome)[1]
    return None if choice.method == UNPRUNED else choice


def cheap_metrics(genome: Genome, spec: SearchSpec, input_shape: tuple[int, int, int] | None,
                  num_classes: int | None) -> dict[str, Any]:
    """Costs known without training; in table mode, the table's own figures.

    A pruned candidate's costs are only known once the method has run (the sparsity is learned, or
    spread over layers by training): before that it reports its unpruned costs, as dense_*, and no
    cost objective, so no cheap constraint rejects it on the unpruned network's costs."""
    space = spec.search_space()
    table = getattr(space, "table", None)
    if table is not None:
        row = table.lookup(genome)
        return {"flops": row.flops, "params": row.params, "cost_source": "table"}
    assert input_shape is not None and num_classes is not None
    # fvcore's counts of the network's distinct units, each counted once per process; the whole
    # network's count where the space does not list its units.
    counted = unit_costs.count_genome(space, genome, input_shape, num_classes)
    if counted is None:
        counted = costs.count(space.build(genome, input_shape, num_classes), input_shape)
    dense = counted.as_metrics() | {"cost_source": "fvcore"}
    if pruning_choice(space, genome) is None:
        return dense
    return {"dense_macs": dense["macs"], "dense_flops": dense["flops"], "dense_params": dense["params"],
            "cost_source": "fvcore, after pruning"}


def pruned_costs(model: torch.nn.Module, input_shape: tuple[int, int, int], structured: bool) -> dict[str, Any]:
    """A pruned network's cost objectives, labelled with how they were counted.

    Filters removed: the narrower network's own MACs. Unstructured: fvcore's dense MACs of each layer
    times the fraction of its weights kept (what sparse kernels could reach; dense kernels still run
    the zeros), params the non-zero ones."""
    counted = costs.count(model, input_shape)
    metrics = counted.as_metrics()
    if structured or counted.sparse_macs is None:
        return metrics | {"cost_kind": "dense"}
    return metrics | {"macs": counted.sparse_macs, "flops": 2 * counted.sparse_macs,
                      "params": counted.nonzero_params, "masked_macs": counted.macs, "cost_kind": "sparse"}


def evaluate(genome: Genome, spec: SearchSpec, seed: int, dataset: data.Dataset | None = None,
             rung: int | None = None, checkpoint: bytes | None = None) -> dict[str, Any]:
    """Trains (or looks up) one candidate. `dataset`: the search's data, when the caller sends it;
    otherwise it is loaded from the spec's source here.

    With early stopping, `rung` is the epochs to train up to and `checkpoint` what the rung before
    returned (None at the first). Below the last rung the result also holds CHECKPOINT, and no
    latency: that is measured at full fidelity only."""
    space = spec.search_space()
    table = getattr(space, "table", None)
    if table is not None:
        if rung is not None:
            return {"acc": table.acc_at(genome, rung), "epochs": rung, "acc_source": f"table column acc_epoch_{rung}"}
        return {"acc": table.lookup(genome).acc, "acc_source": f"table column {table.acc_column}"}
    if dataset is None:
        dataset = data.load(spec.dataset)
    device = _device(spec)
    choice = pruning_choice(space, genome)
    with torch_threads(spec.resources.cpus_per_eval):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        torch.manual_seed(seed)
        model = space.build(genome, dataset.input_shape, dataset.num_classes)
        extra: dict[str, Any] = {}
        if choice is None:
            result = train(model, dataset, spec.training, seed, device, _rung(spec, rung, checkpoint))
        else:
            assert spec.pruning is not None
            pruned = methods.prune(model, dataset, choice.method, choice.budget, spec.pruning.options[choice.method],
                                   spec.training, seed, device)
            model, result = pruned.model, pruned.result
        restore_plain(model)  # counted and timed as the plain network users deploy, not its CPU forms
        if choice is not None:
            extra = pruned_costs(model, dataset.input_shape, pruned.structured) | {"pruning": pruned.metrics()}
        metrics: dict[str, Any] = extra | {
            "acc": result.val_acc,
            "test_acc": result.test_acc,
            "train_loss": result.train_loss,
            "epochs": result.epochs,
            "train_seconds": result.train_seconds,
            "device": str(device),
            "precision": str(autocast_dtype(spec.training, device) or torch.float32).removeprefix("torch."),
            "dataset_fingerprint": dataset.fingerprint,
        }
        if device.type == "cuda":
            # This process's own allocator: what this evaluation needed, whoever else shares the GPU.
            metrics["gpu"] = torch.cuda.get_device_name(device)
            metrics["gpu_memory_peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        model = model.cpu()
        if result.state is not None:
            buffer = io.BytesIO()
            torch.save(result.state, buffer)
            metrics[CHECKPOINT] = buffer.getvalue()
        elif needs_latency(spec):
            metrics["latency"] = costs.latency_ms(model, dataset.input_shape, spec.training.latency_repeats)
        if spec.training.keep_weights:
            metrics[output_check.METRIC] = output_check.record(model, dataset.input_shape)
            buffer = io.BytesIO()
            torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, buffer)
            metrics[WEIGHTS] = buffer.getvalue()
    return metrics


def _rung(spec: SearchSpec, epochs: int | None, checkpoint: bytes | None) -> Rung | None:
    if epochs is None:
        return None
    assert spec.early_stopping is not None and spec.early_stopping.max_epochs is not None
    state = None if checkpoint is None else torch.load(io.BytesIO(checkpoint), weights_only=True)
    return Rung(epochs, spec.early_stopping.max_epochs, state)


def _device(spec: SearchSpec) -> torch.device:
    if spec.resources.gpus_per_eval > 0 and torch.cuda.is_available():
        # Same spec and seed, same front: cuDNN must not pick kernels by timing.
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        return torch.device("cuda")
    return torch.device("cpu")


@contextmanager
def torch_threads(n: int):
    """Fixing the thread count keeps float reductions, and so results, the same on every executor."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
