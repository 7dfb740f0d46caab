"""The training-leases part of a Store: runners claiming final trainings, renewing and losing their leases,
and trainings cancelled and queued again (StoreCore's state)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import func, or_, select, update

from .store_core import StoreCore, Training, TrainingRow, _now, _training
from .store_trainings import RESUMABLE_TRAINING_STATUSES, _cannot_training, _event


class TrainingLeases(StoreCore):
    """Its part of the Store's contract: a queued training is run by whichever runner's `claim_training`
    takes it, under a lease that runner renews; one whose lease ran out is taken by the next claim, which
    resumes it from its last checkpoint. Every change is one conditional UPDATE, so the database decides."""

    def claim_training(self, runner: str, lease_seconds: float) -> Training | None:
        """Takes the oldest queued training, or a running one whose runner's lease has run out, for `runner`
        under a lease; None when there is none. Of runners claiming at once, each training goes to one. A
        training run by `dvolver train` has no runner and no lease: nobody takes it over."""
        now = _now()
        takeable = or_(TrainingRow.status == "queued", (TrainingRow.status == "running")
                       & TrainingRow.runner.is_not(None) & (TrainingRow.lease_until < now))
        with self._session.begin() as s:
            for training_id in list(s.scalars(select(TrainingRow.id).where(takeable).order_by(TrainingRow.id)
                                              .limit(20))):
                taken = s.execute(update(TrainingRow).where(TrainingRow.id == training_id, takeable).values(
                    status="running", runner=runner, lease_until=now + timedelta(seconds=lease_seconds), error=None,
                    updated_at=now, finished_at=None, started_at=func.coalesce(TrainingRow.started_at, now)))
                if taken.rowcount == 1:
                    row = s.get(TrainingRow, training_id)
                    assert row is not None
                    s.add(_event(row))
                    return _training(row)
        return None

    def renew_training_leases(self, training_ids: Iterable[int], runner: str, lease_seconds: float) -> set[int]:
        """Extends `runner`'s leases on these trainings to `lease_seconds` from now; returns those it still
        holds running (the others were taken over, cancelled while queued, or deleted)."""
        ids = list(training_ids)
        with self._session.begin() as s:
            mine = (TrainingRow.id.in_(ids), TrainingRow.runner == runner, TrainingRow.status == "running")
            s.execute(update(TrainingRow).where(*mine).values(lease_until=_now() + timedelta(seconds=lease_seconds)))
            return set(s.scalars(select(TrainingRow.id).where(*mine)))

    def release_training(self, training_id: int, runner: str) -> None:
        """A runner that shuts down hands the training back to the queue, to resume from its last checkpoint;
        does nothing if `runner` no longer holds it."""
        with self._session.begin() as s:
            moved = s.execute(update(TrainingRow).where(TrainingRow.id == training_id, TrainingRow.runner == runner,
                                                        TrainingRow.status == "running")
                              .values(status="queued", runner=None, lease_until=None, updated_at=_now()))
            if moved.rowcount == 1:
                s.add(_event(s.get(TrainingRow, training_id)))

    def request_training_cancel(self, training_id: int) -> Training:
        """A queued training is cancelled at once; a running one is flagged, and its holder stops it at the
        next epoch, keeping its checkpoint. Raises NotFoundError for no training, ConflictError for one that
        is neither queued nor running."""
        with self._session.begin() as s:
            now = _now()
            if s.execute(update(TrainingRow).where(TrainingRow.id == training_id, TrainingRow.status == "queued")
                         .values(status="cancelled", error="cancelled while queued", updated_at=now,
                                 finished_at=now)).rowcount != 1:
                flagged = s.execute(update(TrainingRow).where(TrainingRow.id == training_id,
                                                              TrainingRow.status == "running")
                                    .values(cancel_requested=True, updated_at=now))
                if flagged.rowcount != 1:
                    raise _cannot_training(s, training_id, "only queued or running trainings can be cancelled")
            row = s.get(TrainingRow, training_id)
            s.add(_event(row))
            return _training(row)

    def requeue_training(self, training_id: int) -> Training:
        """Puts a failed or cancelled training back in the queue; a runner resumes it from its last checkpoint.
        Raises NotFoundError for no training, ConflictError for one in any other status."""
        with self._session.begin() as s:
            moved = s.execute(update(TrainingRow).where(TrainingRow.id == training_id,
                                                        TrainingRow.status.in_(RESUMABLE_TRAINING_STATUSES))
                              .values(status="queued", error=None, finished_at=None, runner=None, lease_until=None,
                                      cancel_requested=False, updated_at=_now()))
            if moved.rowcount != 1:
                raise _cannot_training(s, training_id, f"only {' or '.join(RESUMABLE_TRAINING_STATUSES)} trainings "
                                                       "can be resumed")
            row = s.get(TrainingRow, training_id)
            s.add(_event(row))
            return _training(row)

