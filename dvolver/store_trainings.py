"""The trainings part of a Store: final trainings of finished candidates, their epochs, checkpoints and
weights, and the runners that hold them under leases (StoreCore's state)."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import delete, func, select, update

from .errors import ConflictError, LeaseLost, NotFoundError
from .store_core import EventRow, SearchRow, StoreCore, Training, TrainingBlobRow, TrainingRow, _now, _training

CHECKPOINT, WEIGHTS = "checkpoint", "weights"  # the kinds of a training's bytes
RESUMABLE_TRAINING_STATUSES = ("failed", "cancelled")
TRAINING_STATUSES = ("queued", "running", "finished", *RESUMABLE_TRAINING_STATUSES)


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


class Trainings(StoreCore):
    """Final trainings, one row each, with their bytes beside them.

    Its part of the Store's contract: a training is created queued, with the owner of its search; a process
    takes it (`take_training`) to run it, and from then on each epoch's metrics and the checkpoint after it
    are committed in one transaction (`record_epoch`), so a process killed at any point leaves the last
    whole epoch to resume from. Epochs are recorded one after another, each once; a finished training
    never changes. Each change appends a "training" event to its search's journal in the same transaction.

    Who runs it: a `dvolver train` process takes it (`take_training`) with no runner and no lease, or a
    runner claims it (`claim_training`) under a lease that it renews (`renew_training_leases`); a runner whose
    lease ran out loses the training to the next claim, which resumes it from its last checkpoint. Every write
    of a running training names its `holder` (the runner, or None in-process) and raises LeaseLost, writing
    nothing, once another holds it.
    """

    def create_trainings(self, search_id: int, entries: list[dict[str, Any]]) -> list[int]:
        """Stores queued trainings of the search, all or none; each entry holds candidate_id, genome, space,
        recipe (JSON) and epochs. Returns their ids, in order. Raises NotFoundError for no search."""
        with self._session.begin() as s:
            search = s.get(SearchRow, search_id)
            if search is None:
                raise NotFoundError(f"no search {search_id}")
            rows = [TrainingRow(search_id=search_id, candidate_id=e["candidate_id"], genome=list(e["genome"]),
                                space=e["space"], recipe=e["recipe"], status="queued", epoch=0, epochs=e["epochs"],
                                history=[], owner=search.owner) for e in entries]
            s.add_all(rows)
            s.flush()
            for row in rows:
                s.add(_event(row))
            return [row.id for row in rows]

    def get_training(self, training_id: int) -> Training:
        """The training as now stored. Raises NotFoundError if there is none."""
        with self._session() as s:
            row = s.get(TrainingRow, training_id)
            if row is None:
                raise NotFoundError(f"no training {training_id} in {self.display_url}; `dvolver training list` "
                                    "shows the trainings there")
            return _training(row)

    def list_trainings(self, search_id: int | None = None, owner: str | None = None) -> list[Training]:
        """The trainings (of a search, of an owner) in id order."""
        with self._session() as s:
            query = select(TrainingRow).order_by(TrainingRow.id)
            if search_id is not None:
                query = query.where(TrainingRow.search_id == search_id)
            if owner is not None:
                query = query.where(TrainingRow.owner == owner)
            return [_training(r) for r in s.scalars(query)]

    def take_training(self, training_id: int) -> Training:
        """Marks the training running in this process (no runner, no lease) and returns it: a queued one, or
        one that stopped (failed, cancelled, or running in a process that died) to resume. Raises
        NotFoundError for no training, ConflictError for a finished one or one a live runner holds."""
        with self._session.begin() as s:
            now = _now()
            held = (TrainingRow.runner.is_not(None)) & (TrainingRow.lease_until >= now)
            taken = s.execute(update(TrainingRow).where(TrainingRow.id == training_id, TrainingRow.status != "finished",
                                                        ~(held & (TrainingRow.status == "running")))
                              .values(status="running", error=None, updated_at=now, finished_at=None, runner=None,
                                      lease_until=None, cancel_requested=False,
                                      started_at=func.coalesce(TrainingRow.started_at, now)))
            row = s.get(TrainingRow, training_id)
            if row is None:
                raise NotFoundError(f"no training {training_id}")
            if taken.rowcount != 1:
                if row.status == "finished":
                    raise ConflictError(f"training {training_id} has finished; `dvolver training show {training_id}` "
                                        "shows it")
                raise ConflictError(f"training {training_id} is running on runner {row.runner}; cancel it first "
                                    f"(POST /trainings/{training_id}/cancel) or wait for it")
            s.add(_event(row))
            return _training(row)

    def record_epoch(self, training_id: int, metrics: dict[str, Any], checkpoint: bytes,
                     holder: str | None = None) -> None:
        """Commits the epoch's metrics (its number in metrics["epoch"], the one after the last recorded) with
        the checkpoint after it, in one transaction; the checkpoint before it goes. Raises ConflictError,
        writing nothing, unless the training is running and that epoch is the next, and LeaseLost unless
        `holder` (a runner, or None in-process) holds it."""
        with self._session.begin() as s:
            row = self._running(s, training_id, holder)
            if metrics["epoch"] != row.epoch + 1:
                raise ConflictError(f"training {training_id} has recorded {row.epoch} epochs, not "
                                    f"{metrics['epoch'] - 1}: another process is running it")
            row.epoch, row.history, row.val_acc = metrics["epoch"], [*row.history, metrics], metrics["val_acc"]
            row.checkpoint_sha256, row.updated_at = sha256(checkpoint), _now()
            s.merge(TrainingBlobRow(training_id=training_id, kind=CHECKPOINT, data=checkpoint))
            s.add(_event(row))

    def finish_training(self, training_id: int, results: dict[str, Any], weights: bytes,
                        holder: str | None = None) -> None:
        """Records a training that ran all its epochs: `results` (test_acc, macs, flops, params, latency_ms,
        check_outputs) and its final weights, in one transaction; its checkpoint goes. Raises ConflictError,
        writing nothing, unless it is running with every epoch recorded, and LeaseLost as record_epoch."""
        with self._session.begin() as s:
            row = self._running(s, training_id, holder)
            if row.epoch != row.epochs:
                raise ConflictError(f"training {training_id} has recorded {row.epoch} of {row.epochs} epochs")
            for name, value in results.items():
                setattr(row, name, value)
            row.status, row.weights_sha256, row.checkpoint_sha256 = "finished", sha256(weights), None
            row.runner = row.lease_until = None
            row.updated_at = row.finished_at = _now()
            s.execute(delete(TrainingBlobRow).where(TrainingBlobRow.training_id == training_id))
            s.add(TrainingBlobRow(training_id=training_id, kind=WEIGHTS, data=weights))
            s.add(_event(row))

    def stop_training(self, training_id: int, status: str, error: str, holder: str | None = None) -> None:
        """Moves a running training that `holder` holds to failed or cancelled, saying why; its last checkpoint
        stays, to resume from. Does nothing to a training that is not running, or is another's."""
        with self._session.begin() as s:
            now = _now()
            moved = s.execute(update(TrainingRow).where(TrainingRow.id == training_id, TrainingRow.status == "running",
                                                        _held_by(holder))
                              .values(status=status, error=error, updated_at=now, finished_at=now, runner=None,
                                      lease_until=None, cancel_requested=False))
            if moved.rowcount == 1:
                s.add(_event(s.get(TrainingRow, training_id)))

    def training_bytes(self, training_id: int, kind: str) -> bytes | None:
        """The training's latest checkpoint (CHECKPOINT) or final weights (WEIGHTS), as stored; None when it
        has none."""
        with self._session() as s:
            row = s.get(TrainingBlobRow, (training_id, kind))
            return None if row is None else bytes(row.data)

    def _running(self, s: Any, training_id: int, holder: str | None) -> TrainingRow:
        self._dialect.lock_training(s.connection(), training_id)
        row = s.get(TrainingRow, training_id)
        if row is None:
            raise NotFoundError(f"no training {training_id}")
        if row.status != "running":
            raise ConflictError(f"training {training_id} is {row.status}, not running: resume it with "
                                f"`dvolver train --resume {training_id}`")
        if row.runner != holder:
            raise LeaseLost(f"training {training_id} is held by {row.runner or 'a dvolver train process'}, not by "
                            f"{holder or 'this process'}")
        return row


def _held_by(holder: str | None) -> Any:
    return TrainingRow.runner.is_(None) if holder is None else TrainingRow.runner == holder


def _cannot_training(s: Any, training_id: int, advice: str) -> Exception:
    row = s.get(TrainingRow, training_id)
    if row is None:
        return NotFoundError(f"no training {training_id}")
    return ConflictError(f"training {training_id} is {row.status}: {advice}")


def _event(row: TrainingRow) -> EventRow:
    return EventRow(search_id=row.search_id, kind="training", payload={
        "training": row.id, "candidate": row.candidate_id, "status": row.status, "epoch": row.epoch,
        "epochs": row.epochs, "val_acc": row.val_acc, "test_acc": row.test_acc, "runner": row.runner,
        "cancel_requested": bool(row.cancel_requested)})
