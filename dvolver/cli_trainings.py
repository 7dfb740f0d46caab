"""What `dvolver train` and `dvolver training` print: a progress bar per training, a finished training's line,
the trainings as a table or JSON.

Nothing here reads the store or runs anything; the commands in dvolver.cli hand it trainings.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .cli_render import console, err, human
from .jsonable import finite

if TYPE_CHECKING:  # the trainings import torch; printing must not
    from .final_training import EpochMetrics
    from .rank_survival import Survival
    from .store import Training

# What a training's JSON leaves out of a list: the recipe and history are in `dvolver training show`.
DETAIL_ONLY = ("recipe", "history")


class TrainingProgress:
    """One bar per training: epochs done of the recipe's, the last loss and validation accuracy, and the ETA
    from this process's mean epoch time (rich's own estimate forgets epochs longer than its window)."""

    def __init__(self, trainings: list[Training]) -> None:
        self.bar = Progress(TextColumn("[bold]training {task.fields[id]}"), BarColumn(),
                            TextColumn("epoch {task.completed:.0f}/{task.total:.0f}  loss {task.fields[loss]}  "
                                       "val acc {task.fields[val]}  ETA {task.fields[eta]}"),
                            TimeElapsedColumn(), console=err)
        self.tasks = {t.id: self.bar.add_task("training", total=t.epochs, completed=t.epoch, id=t.id,
                                              **_fields(t.history[-1] if t.history else None, "-"))
                      for t in trainings}
        self.seconds: dict[int, list[float]] = {t.id: [] for t in trainings}

    def epoch(self, training_id: int, metrics: EpochMetrics) -> None:
        spent = self.seconds[training_id]
        spent.append(metrics.seconds)
        task = self.tasks[training_id]
        left = self.bar.tasks[task].total - metrics.epoch
        eta = str(timedelta(seconds=round(left * sum(spent) / len(spent))))
        self.bar.update(task, completed=metrics.epoch,
                        **_fields({"train_loss": metrics.train_loss, "val_acc": metrics.val_acc}, eta))


def _fields(last: dict[str, Any] | None, eta: str) -> dict[str, str]:
    if last is None:
        return {"loss": "-", "val": "-", "eta": eta}
    return {"loss": f"{last['train_loss']:.4f}", "val": f"{last['val_acc']:.2f} %", "eta": eta}


def training_json(t: Training, detail: bool = True) -> dict[str, Any]:
    """A training as JSON: its status and progress, its measures at the final scale (MACs and FLOPs = 2 x MACs
    counted by fvcore, CPU latency at batch 1), the SHA-256 of its weights; with `detail`, its recipe and the
    metrics of every epoch (`history`)."""
    out: dict[str, Any] = {
        "id": t.id, "search_id": t.search_id, "candidate_id": t.candidate_id, "reference": t.candidate_id is None,
        "space": t.space, "status": t.status,
        "epoch": t.epoch, "epochs": t.epochs, "val_acc": t.val_acc, "test_acc": t.test_acc, "macs": t.macs,
        "flops": t.flops, "params": t.params, "latency_ms": t.latency_ms, "weights_sha256": t.weights_sha256,
        "checkpoint_sha256": t.checkpoint_sha256, "error": t.error, "owner": t.owner, "genome": list(t.genome),
        "created_at": t.created_at.isoformat(), "started_at": t.started_at and t.started_at.isoformat(),
        "finished_at": t.finished_at and t.finished_at.isoformat(), "recipe": t.recipe, "history": t.history,
    }
    return finite(out if detail else {k: v for k, v in out.items() if k not in DETAIL_ONLY})


def print_trainings(trainings: list[Training], fmt: str, title: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps([training_json(t, detail=False) for t in trainings], indent=2) + "\n")
        return
    table = Table(title=title)
    for column in ("id", "search", "candidate", "status", "epoch", "val acc %", "test acc %", "MACs", "FLOPs",
                   "params", "CPU latency ms"):
        table.add_column(column, justify="right")
    for t in trainings:
        table.add_row(str(t.id), str(t.search_id), "reference" if t.candidate_id is None else str(t.candidate_id),
                      t.status, f"{t.epoch}/{t.epochs}",
                      *(human(v) for v in (t.val_acc, t.test_acc, t.macs, t.flops, t.params, t.latency_ms)))
    console.print(table)


def print_training(t: Training, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(training_json(t), indent=2) + "\n")
        return
    print_trainings([t], "table", f"training {t.id}: {_network(t)} of search {t.search_id}, {t.space}")
    if t.error:
        console.print(f"error: {t.error}", highlight=False, markup=False)
    if t.weights_sha256:
        console.print(f"weights sha256 {t.weights_sha256}", highlight=False)
    history = Table(title="epochs")
    for column in ("epoch", "train loss", "val acc %", "lr", "drop-path", "seconds"):
        history.add_column(column, justify="right")
    for m in t.history:
        history.add_row(str(m["epoch"]), f"{m['train_loss']:.4f}", f"{m['val_acc']:.2f}", f"{m['lr']:.3g}",
                        f"{m['drop_path']:.3f}", f"{m['seconds']:.1f}")
    console.print(history)


def _network(t: Training) -> str:
    """What a training retrains: a candidate, or a reference architecture (which has none)."""
    return "reference" if t.candidate_id is None else f"candidate {t.candidate_id}"


def finished_line(t: Training) -> str:
    return (f"training {t.id} ({_network(t)}) finished: val acc {t.val_acc:.2f} %, test acc "
            f"{t.test_acc:.2f} %, {human(t.macs)} MACs ({human(t.flops)} FLOPs), {human(t.params)} params, "
            f"{t.latency_ms:.2f} ms CPU latency; weights sha256 {t.weights_sha256}")


def print_survival(s: Survival, fmt: str) -> None:
    """How the search's proxy ranking survived final training: the rank correlations, then the fronts."""
    if fmt == "json":
        sys.stdout.write(json.dumps(finite(asdict(s)), indent=2) + "\n")
        return
    table = Table(title=f"search {s.search_id}: proxy accuracy against final accuracy")
    for column in ("training", "candidate", "proxy acc %", "final val acc %", "final test acc %"):
        table.add_column(column, justify="right")
    for p in s.pairs:
        table.add_row(*(str(p[k]) for k in ("training", "candidate")),
                      *(f"{p[k]:.2f}" for k in ("proxy_acc", "val_acc", "test_acc")))
    console.print(table)
    for name, value in (("Kendall tau, proxy vs final val", s.kendall_tau_val),
                        ("Spearman rho, proxy vs final val", s.spearman_rho_val),
                        ("Kendall tau, proxy vs final test", s.kendall_tau_test),
                        ("Spearman rho, proxy vs final test", s.spearman_rho_test)):
        console.print(f"{name}: {'-' if value is None else f'{value:.3f}'}", highlight=False)
    console.print(f"proxy front (candidates): {_ids(s.proxy_front)}; final front over "
                  f"{', '.join(s.objectives)} (trainings): {_ids(s.final_front)}; references (trainings): "
                  f"{_ids(s.references)}", highlight=False)
    console.print(f"fell off the final front (candidates): {_ids(s.fell_off)}; not retrained: "
                  f"{_ids(s.not_retrained)}", highlight=False)


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids)) or "none"
