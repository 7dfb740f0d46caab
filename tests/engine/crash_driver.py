"""Runs the real `dvolver` CLI in this process and kills it with SIGKILL at a chosen moment.

    CRASH_AT=<moment>:<n> TRAINING_LOG=<file> python tests/engine/crash_driver.py search --db ...

The moments are observed from outside Dvolver's code: the evaluation function the engine hands to
its executor is wrapped, the optimiser step of a final training too, and SQLAlchemy's session events
see each transaction. Nothing in Dvolver
is changed; the process is simply killed, as `kill -9` would.

- evaluate:n   as the n-th training starts (before its result exists)
- store:n      inside the transaction that records the n-th finished result, flushed, not committed
- committed:n  just after the n-th finished result is committed
- reused:n     as a resume answers the n-th finished candidate from the store (during the replay)
- rung:n       just after the n-th rung result below the last is committed (early stopping: a candidate
               is between two rungs, its checkpoint in the store)

Final trainings (`dvolver train`):
- step:n         as the n-th optimiser step starts (mid-epoch, between two checkpoints)
- epoch_store:n  inside the transaction that records the n-th epoch and its checkpoint, flushed, not committed
- epoch:n        just after the n-th epoch and its checkpoint are committed

Each training that completes appends its genome to TRAINING_LOG, so a test can count trainings; each epoch of
a final training that is committed appends {"epoch": n}, so a test can tell which epochs a process trained.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from sqlalchemy import event
from sqlalchemy.orm import Session

import dvolver.dispatch as dispatch
import dvolver.engine as engine
import dvolver.final_training as final_training
from dvolver.cli import main
from dvolver.store import CandidateRow, Store, TrainingBlobRow

MOMENT, _, NTH = os.environ.get("CRASH_AT", "").partition(":")
# Read here, not in the evaluation: a Ray worker runs a copy of the evaluation without this environment.
TRAINING_LOG = os.environ["TRAINING_LOG"]
counts = {"evaluate": 0, "store": 0, "committed": 0, "reused": 0, "rung": 0, "step": 0, "epoch_store": 0, "epoch": 0}


def _reached(moment: str) -> None:
    counts[moment] += 1
    if moment == MOMENT and counts[moment] == int(NTH):
        os.kill(os.getpid(), signal.SIGKILL)


_evaluate = dispatch.evaluate


def _counted_evaluate(genome, spec, seed, *data):
    _reached("evaluate")
    value = _evaluate(genome, spec, seed, *data)
    with open(TRAINING_LOG, "a") as log:
        log.write(json.dumps(list(genome)) + "\n")
    return value


dispatch.evaluate = _counted_evaluate

_accept = engine.SearchLoop._accept


def _counted_accept(self, record, reused=False):
    if reused:
        _reached("reused")
    return _accept(self, record, reused)


engine.SearchLoop._accept = _counted_accept

_optimizer_step = final_training.optimizer_step


def _counted_step(*args, **kwargs):
    _reached("step")
    return _optimizer_step(*args, **kwargs)


final_training.optimizer_step = _counted_step

_record_epoch = Store.record_epoch


def _counted_record_epoch(self, training_id, metrics, checkpoint, holder=None):
    _record_epoch(self, training_id, metrics, checkpoint, holder)
    with open(TRAINING_LOG, "a") as log:
        log.write(json.dumps({"epoch": metrics["epoch"]}) + "\n")
    _reached("epoch")


Store.record_epoch = _counted_record_epoch


@event.listens_for(Session, "before_flush")
def _before_flush(session, _context, _instances):
    rows = [o for o in (*session.new, *session.dirty) if isinstance(o, CandidateRow)]
    if any(o.status == "finished" for o in rows):
        session.info["records_result"] = "flushing"
    if any(o.status == "pending" and (o.metrics or {}).get("rungs") for o in rows):
        session.info["records_rung"] = True
    if any(isinstance(o, TrainingBlobRow) and o.kind == "checkpoint" for o in (*session.new, *session.dirty)):
        session.info["records_epoch"] = True


@event.listens_for(Session, "after_flush")
def _after_flush(session, _context):
    if session.info.get("records_result") == "flushing":  # the result's row is written, not committed
        session.info["records_result"] = "flushed"
        _reached("store")
    if session.info.pop("records_epoch", False):  # the epoch and its checkpoint are written, not committed
        _reached("epoch_store")


@event.listens_for(Session, "after_commit")
def _after_commit(session):
    if session.info.pop("records_result", False):
        _reached("committed")
    if session.info.pop("records_rung", False):
        _reached("rung")


if __name__ == "__main__":
    sys.argv = ["dvolver", *sys.argv[1:]]
    main()
