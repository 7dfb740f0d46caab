"""The search loop's side of early stopping: candidates sent up the rungs, each rung result recorded, and
the decisions of dvolver.halving carried out.

Every result is recorded as it arrives from its worker, before its turn to be handed back comes (with
two workers a rung may finish while one sent before it still trains). A rung below the last keeps the
candidate's row `pending`, holding the rungs so far (metrics["rungs"], [epochs, accuracy] each) and the
state that continues its training, in one transaction with its journal event. The last rung, or a
failure, is final whatever the halving decides, so its final row is written then too. The decisions
wait for the result's turn. A resumed search answers every rung the store holds from it, in the order
the results were first handed back, so the halving takes the same decisions again; only a rung that
was in flight is trained again, from the checkpoint of the rung before.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from .dispatch import Dispatcher, Work, costliest_first
from .evaluation import CHECKPOINT, WEIGHTS
from .executors import Outcome
from .halving import Decision, Halving
from .objectives import OBJECTIVES
from .spec import SearchSpec
from .store import FINAL_STATUSES, Candidate, Store

STORED = "store"  # the worker of a result answered from the store


def pack(weights: bytes, checkpoint: bytes) -> bytes:
    """A pending candidate's stored blob: its weights at the rung (exportable) and the training state."""
    return struct.pack("<Q", len(weights)) + weights + checkpoint


def unpack(blob: bytes) -> tuple[bytes, bytes]:
    (n,) = struct.unpack_from("<Q", blob)
    return blob[8 : 8 + n], blob[8 + n :]


class Climbs:
    def __init__(self, store: Store, search_id: int, spec: SearchSpec, dispatcher: Dispatcher,
                 accept: Callable[[Candidate, bool], None], stored: list[Candidate]) -> None:
        assert spec.early_stopping is not None
        self.store, self.search_id, self.spec, self.dispatcher = store, search_id, spec, dispatcher
        self.accept = accept
        self.halving = Halving(spec.early_stopping)
        self.stored = {c.key: c for c in stored}  # this search's rows from earlier passes, pending ones too
        self.rungs: dict[str, list[list[float]]] = {}  # per key: [epochs, accuracy] of each rung trained
        self._work: dict[str, Work] = {}
        self._latest: dict[str, tuple[dict[str, Any], dict[str, Any], int]] = {}  # objectives, metrics, row id
        self._arrived: dict[str, Candidate] = {}  # final rows recorded on arrival, not yet handed back

    def use_model(self, algorithm: object) -> None:
        """The surrogate tie-break asks the algorithm's model, where it has one (SurrogateSearch)."""
        probability = getattr(algorithm, "front_probability", None)
        if probability is not None:
            self.halving.chance = lambda keys: probability([self._work[k].genome for k in keys])

    def __contains__(self, key: str) -> bool:
        return key in self.halving.climbing

    def __len__(self) -> int:
        return len(self.halving.climbing)

    def start(self, batch: list[tuple[Work, dict[str, float]]], bracket: int) -> None:
        """Candidates of one ask (with their cheap objective values) start at the first rung."""
        for work, cheap_values in batch:
            self.halving.start(work.key, bracket, _costs(cheap_values, self.spec))
            self.rungs[work.key] = []
            self._work[work.key] = work
            self._latest[work.key] = (dict(cheap_values), dict(work.cheap), -1)
        self._train([Decision(w.key, "go", 0) for w, _ in batch])

    def on_arrival(self, work: Work, outcome: Outcome) -> None:
        """Records a worker's result as it arrives (the dispatcher calls this before its turn)."""
        key = work.key
        if outcome.error:
            self._arrived[key] = self._final_row(key, "failed", outcome.error, outcome)
            return
        value = dict(outcome.value)
        self.rungs[key].append([int(value["epochs"]), float(value["acc"])])
        if len(self.rungs[key]) == len(self.halving.epochs):  # the last rung: finished, whatever its turn
            self._arrived[key] = self._final_row(key, "finished", outcome=outcome)
            return
        objectives, metrics, _ = self._latest[key]
        weights, checkpoint = value.pop(WEIGHTS, b""), value.pop(CHECKPOINT, None)  # a table has neither
        metrics = metrics | value | self._rung_metrics(key)
        objectives = objectives | {"acc": float(value["acc"])}
        row = self.store.record(self.search_id, key, work.genome, "pending", objectives, metrics,
                                worker=outcome.worker, seconds=outcome.seconds,
                                weights=None if checkpoint is None else pack(weights, checkpoint))
        self._latest[key] = (objectives, metrics, row.id)

    def on_result(self, work: Work, outcome: Outcome) -> None:
        """A result in its turn (recorded on arrival, or answered from the store): the decisions it allows."""
        key = work.key
        if outcome.error:
            self._finish(key, "failed", error=outcome.error)
            self._carry_out(self.halving.drop(key))
            return
        acc = float(outcome.value["acc"])
        if outcome.worker == STORED:
            self.rungs[key].append([int(outcome.value["epochs"]), acc])
        decisions = self.halving.result(key, acc)
        if decisions and decisions[0].key == key and decisions[0].verdict == "done":
            self._finish(key, "finished")
            decisions = decisions[1:]
        self._carry_out(decisions)

    # --- carrying out decisions ----------------------------------------------------------------

    def _carry_out(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if d.verdict == "stop":
                self._finish(d.key, "stopped")
        self._train([d for d in decisions if d.verdict == "go"])

    def _train(self, goes: list[Decision]) -> None:
        """Sends each candidate's next rung, or answers it from the store where the store holds it, in the
        order a batch goes out in either way: the order results are handed back in is then the same
        on a resume."""
        rungs = {d.key: d.rung for d in goes}
        for base in costliest_first([self._work[d.key] for d in goes]):
            rung = rungs[base.key]
            work = Work(base.key, base.genome, base.cheap, self.halving.epochs[rung])
            answer = self._stored_answer(base.key, rung)
            if answer is not None:
                self.dispatcher.answer(work, answer)
                continue
            if rung and not self.spec.table_mode:
                work = replace(work, checkpoint=self._checkpoint(base.key))
            self.dispatcher.send([work])

    def _stored_answer(self, key: str, rung: int) -> Outcome | None:
        stored = self.stored.get(key)
        if stored is None:
            return None
        rungs = stored.metrics.get("rungs", [])
        if stored.status == "pending" and rung == len(rungs) - 1:
            self._latest[key] = (stored.objectives, stored.metrics, stored.id)  # where its training goes on from
        if rung < len(rungs):
            return Outcome({"epochs": rungs[rung][0], "acc": rungs[rung][1]}, None, STORED, 0.0)
        if stored.status == "failed" and rung == len(rungs):
            return Outcome(None, stored.error, STORED, 0.0)
        return None

    def _checkpoint(self, key: str) -> bytes:
        """The state the candidate's last rung ended in, from the store (written as that rung came in)."""
        blob = self.store.weights(self._latest[key][2])
        assert blob is not None, f"candidate {key}: its rung's checkpoint is not in the store"
        return unpack(blob)[1]

    def _rung_metrics(self, key: str) -> dict[str, Any]:
        return {"rungs": self.rungs[key], "rung": len(self.rungs[key]), "rungs_total": len(self.halving.epochs)}

    def _finish(self, key: str, status: str, error: str | None = None) -> None:
        """The candidate's final result, in its turn: stopped at its rung, failed, or at full fidelity."""
        stored = self.stored.get(key)
        if stored is not None and stored.status in FINAL_STATUSES:  # infeasible rows never climb
            self.accept(stored, True)  # its final row is kept as first recorded
        elif key in self._arrived:
            self.accept(self._arrived.pop(key), False)
        else:
            self.accept(self._final_row(key, status, error), False)

    def _final_row(self, key: str, status: str, error: str | None = None, outcome: Outcome | None = None
                   ) -> Candidate:
        work = self._work[key]
        objectives, metrics, row_id = self._latest[key]
        metrics = metrics | self._rung_metrics(key)
        weights = None
        if status == "finished":
            assert outcome is not None
            value = dict(outcome.value)
            weights = value.pop(WEIGHTS, None)
            metrics |= value
            objectives = objectives | {k: float(v) for k, v in value.items() if k in OBJECTIVES}
        elif status == "stopped":
            blob = self.store.weights(row_id) if self.spec.training.keep_weights else None
            weights = None if blob is None else unpack(blob)[0] or None
        else:  # failed: no accuracy of a rung below stands for it
            objectives = {k: v for k, v in objectives.items() if k != "acc"}
        if outcome is not None:
            metrics |= outcome.worker_metrics()
        worker, seconds = (outcome.worker, outcome.seconds) if outcome is not None else (None, None)
        return self.store.record(self.search_id, key, work.genome, status, objectives, metrics, error, worker,
                                 seconds, weights)


def _costs(cheap_values: dict[str, float], spec: SearchSpec) -> np.ndarray:
    """The cheap objectives a candidate is ranked on beside its accuracy, minimised."""
    return np.array([OBJECTIVES[o].minimised(cheap_values[o]) for o in spec.objectives
                     if o != "acc" and o in cheap_values])
