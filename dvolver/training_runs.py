"""Final trainings carried out: several at once on an executor's workers (Ray, local processes or inline), each
an epoch at a time, every epoch committed by this process with the checkpoint after it (issue 19).

A worker trains one epoch of one training from the checkpoint it is sent (`train_epoch`) and sends back the
epoch's metrics with the checkpoint after it; the last epoch also measures the deployed network. This process
records each epoch as it arrives (`Store.record_epoch`), then sends the training's next epoch, so a worker
lost or killed costs at most the epoch it was on, and a process killed at any point leaves the last whole
epoch in the store. An epoch continued from a checkpoint computes what a straight run computes (on the CPU,
at the same torch threads), so where each epoch ran changes no weight. Between epochs a training whose cancel
was requested stops, keeping its checkpoint.

Workers on other machines need neither the store nor the dataset's files: the data go to them through the
executor once (`share`), and the checkpoints travel with the tasks.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from . import costs, data, output_check
from .errors import LeaseLost, StoreError
from .evaluation import torch_threads
from .executors import Executor, Outcome
from .final_spec import FinalTraining
from .final_training import EpochMetrics, FinalResult, final_space, train_final
from .spec import SearchSpec
from .store import Store, Training
from .store_trainings import CHECKPOINT, sha256

log = logging.getLogger(__name__)


class Stopped(Exception):
    """The run was told to stop (`should_stop` gave a reason): the trainings in flight went back to the queue,
    or to whoever holds them now."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def train_epoch(genome: tuple[int, ...], space: str, recipe: dict[str, Any], space_options: dict[str, Any],
                checkpoint: bytes | None, epoch: int, dataset: data.Dataset, threads: int,
                latency_repeats: int) -> dict[str, Any]:
    """In a worker: trains epoch `epoch` (1-based) of the recipe from `checkpoint` (None for the first), at
    `threads` torch threads. Returns the epochs trained, each as (metrics, checkpoint after it), and, once the
    last epoch is done, what the deployed network measures and its weights."""
    trained: list[tuple[dict[str, Any], bytes]] = []
    with torch_threads(threads):
        result = train_final(genome, space, FinalTraining.from_dict(recipe), dataset, space_options=space_options,
                             until_epoch=epoch, resume_state=checkpoint,
                             on_epoch=lambda metrics, checkpoint_of: trained.append((asdict(metrics), checkpoint_of())))
        measured = _measure(result, genome, space, latency_repeats) if result.finished else None
    return {"epochs": trained, "results": measured, "weights": result.weights}


def _measure(result: FinalResult, genome: tuple[int, ...], space_name: str, latency_repeats: int) -> dict[str, Any]:
    """The deployed network, built from its weights at the final scale, counted and timed as the search
    counts and times its candidates."""
    assert result.weights is not None and result.test_acc is not None
    net = final_space(space_name, result.space_options, genome).build(genome, result.input_shape, result.num_classes)
    net.load_state_dict(torch.load(io.BytesIO(result.weights), weights_only=True))
    counted = costs.count(net, result.input_shape)
    return {"val_acc": result.val_acc, "test_acc": result.test_acc, "macs": counted.macs, "flops": counted.flops,
            "params": counted.params, "latency_ms": costs.latency_ms(net, result.input_shape, latency_repeats),
            "check_outputs": output_check.record(net, result.input_shape)}


@dataclass
class _Job:
    training: Training
    spec: SearchSpec
    dataset: Any  # as the executor shares it
    epoch: int
    checkpoint: bytes | None


class TrainingRuns:
    """Runs the trainings a source hands out, as many at once as the executor has slots, until the source has
    none left and every one has ended. `holder` is the runner that holds them (None in a `dvolver train`
    process); `should_stop`, asked about once a second on executors that wait (not inline), stops the run
    with its reason: the trainings in flight are cancelled on the workers and handed back to the queue."""

    def __init__(self, store: Store, executor: Executor, holder: str | None = None,
                 on_epoch: Callable[[int, EpochMetrics], None] | None = None,
                 should_stop: Callable[[], str | None] | None = None) -> None:
        self.store, self.executor, self.holder = store, executor, holder
        self.on_epoch, self.should_stop = on_epoch, should_stop
        self.in_flight: dict[Any, _Job] = {}
        self.ended: dict[int, str] = {}  # training id -> finished, failed, cancelled or lost
        self._shared: dict[str, Any] = {}  # dataset source -> the executor's shared copy

    def held(self) -> list[int]:
        """The trainings in flight now (for their lease to be renewed)."""
        return [job.training.id for job in list(self.in_flight.values())]

    def run(self, source: Callable[[], Training | None]) -> dict[int, str]:
        """Returns how each training it ran ended. A KeyboardInterrupt (inline) marks those in flight
        cancelled, each keeping its last checkpoint, and is raised again."""
        handles: list[Any] = []
        try:
            self._fill(source, handles)
            for task, outcome in self.executor.as_completed(handles, self._tick if self.should_stop else None):
                job = self.in_flight.pop(task)
                try:
                    self._arrived(job, outcome, handles)
                except LeaseLost as exc:  # another runner took it over, and resumes it from the last checkpoint
                    log.warning("%s", exc)
                    self.ended[job.training.id] = "lost"
                self._fill(source, handles)
        except KeyboardInterrupt:
            for job in self.in_flight.values():
                self.store.stop_training(job.training.id, "cancelled", "interrupted; `dvolver train --resume "
                                         f"{job.training.id}` continues from its last epoch", self.holder)
                self.ended[job.training.id] = "cancelled"
            raise
        return self.ended

    def _fill(self, source: Callable[[], Training | None], handles: list[Any]) -> None:
        while len(self.in_flight) < self.executor.slots:
            training = source()
            if training is None:
                return
            try:
                job = self._job(training)
            except Exception as exc:  # its search or checkpoint cannot be read: it fails, the others go on
                self._stop(training.id, "failed", f"{type(exc).__name__}: {exc}")
                continue
            self._send(job, handles)

    def _job(self, training: Training) -> _Job:
        checkpoint = self.store.training_bytes(training.id, CHECKPOINT)
        if checkpoint is not None and sha256(checkpoint) != training.checkpoint_sha256:
            raise StoreError(f"training {training.id}'s checkpoint does not match its SHA-256 in the store: it was "
                             "changed outside Dvolver; start a new training")
        spec = SearchSpec.from_stored(self.store.get_search(training.search_id).spec)
        source = FinalTraining.from_dict(training.recipe).dataset
        if source not in self._shared:
            # This process loads the data once and hands them to the workers: one on another machine may
            # not have the file.
            self._shared[source] = self.executor.share(data.load(source))
        return _Job(training, spec, self._shared[source], training.epoch, checkpoint)

    def _send(self, job: _Job, handles: list[Any]) -> None:
        t, spec = job.training, job.spec
        task = self.executor.submit(train_epoch, t.genome, t.space, t.recipe, spec.space_options, job.checkpoint,
                                    job.epoch + 1, job.dataset, spec.resources.cpus_per_eval,
                                    spec.training.latency_repeats)
        self.in_flight[task] = job
        handles.append(task)

    def _arrived(self, job: _Job, outcome: Outcome, handles: list[Any]) -> None:
        training_id = job.training.id
        if outcome.error is not None:
            self._stop(training_id, "failed", outcome.error)
            return
        for metrics, checkpoint in outcome.value["epochs"]:
            # Where each epoch ran is kept with it: on a cluster, the first thing to ask of a slow epoch.
            self.store.record_epoch(training_id, metrics | {"worker": outcome.worker} | outcome.worker_metrics(),
                                    checkpoint, self.holder)
            job.epoch, job.checkpoint = metrics["epoch"], checkpoint
            if self.on_epoch is not None:
                self.on_epoch(training_id, EpochMetrics(**metrics))
        if outcome.value["results"] is not None:
            self.store.finish_training(training_id, outcome.value["results"], outcome.value["weights"], self.holder)
            self.ended[training_id] = "finished"
        elif self.store.get_training(training_id).cancel_requested:
            self._stop(training_id, "cancelled", f"cancelled on request after epoch {job.epoch}; resuming it "
                       "continues from there")
        else:
            self._send(job, handles)

    def _stop(self, training_id: int, status: str, error: str) -> None:
        self.store.stop_training(training_id, status, error, self.holder)
        self.ended[training_id] = status

    def _tick(self) -> None:
        assert self.should_stop is not None
        reason = self.should_stop()
        if reason is None:
            return
        self.executor.cancel(list(self.in_flight))
        for job in self.in_flight.values():
            if reason == "shutdown" and self.holder is not None:
                self.store.release_training(job.training.id, self.holder)
            self.ended[job.training.id] = reason
        self.in_flight.clear()
        raise Stopped(reason)


def run_trainings(store: Store, training_ids: list[int], executor: Executor,
                  on_epoch: Callable[[int, EpochMetrics], None] | None = None) -> dict[int, str]:
    """Takes the trainings for this process (`Store.take_training`, no runner) as slots free up and runs them
    all; returns how each ended. One that cannot be taken when its turn comes (finished, or held by a live
    runner) raises ConflictError."""
    waiting = list(training_ids)

    def source() -> Training | None:
        return store.take_training(waiting.pop(0)) if waiting else None

    return TrainingRuns(store, executor, on_epoch=on_epoch).run(source)
