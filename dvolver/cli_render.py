"""What the command line prints: the front as a table, JSON or CSV, the live progress bar, a run's summary.

Nothing here reads the store or runs anything; the commands in dvolver.cli hand it results.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .run_stats import Progress as RunProgress
from .run_stats import RunStats

if TYPE_CHECKING:  # the engine imports torch; printing must not
    from .engine import SearchResult
    from .spec import SearchSpec
    from .store import Candidate

console = Console()
err = Console(stderr=True, soft_wrap=True)


def print_error(message: str) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)


class LiveProgress:
    """A rich progress bar fed by the engine: evaluations / budget, front size, hypervolume."""

    def __init__(self, budget: int) -> None:
        self.bar = Progress(TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("evaluations  front {task.fields[front]}  HV {task.fields[hv]}"
                                       "{task.fields[epochs]}"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err)
        self.task = self.bar.add_task("search", total=budget, front=0, hv="-", epochs="")

    def __call__(self, p: RunProgress) -> None:
        hv = "-" if p.hypervolume is None else f"{p.hypervolume:.4f}"
        self.bar.update(self.task, completed=p.evaluations, front=p.front_size, hv=hv, epochs=epochs_line(p))


def epochs_line(p: RunProgress | RunStats) -> str:
    """With early stopping: the epochs trained against what full training of the same candidates costs."""
    if not p.stopped and p.training_epochs >= p.full_fidelity_epochs:
        return ""
    return (f"  epochs {p.training_epochs}/{p.full_fidelity_epochs} "
            f"({p.training_epochs / max(1, p.full_fidelity_epochs):.0%}, {p.stopped} stopped early)")


def write_plot(res: SearchResult, plot: Path | None) -> None:
    from .plotting import plot_front

    path = plot_front(res.candidates, res.front, res.objectives, plot or Path(f"dvolver_front_{res.search_id}.png"),
                      f"search {res.search_id}: {res.spec.space}, {len(res.front)} on the front", res.spec.table_mode)
    err.print(f"front plot: {path}", highlight=False)


def front_rows(res: SearchResult) -> list[dict[str, Any]]:
    order = "acc" if "acc" in res.objectives else res.objectives[0]
    front = sorted(res.front, key=lambda c: c.objectives[order], reverse=order == "acc")
    rows = []
    for c in front:
        m = c.metrics
        row: dict[str, Any] = {"id": c.id, "acc_pct": m.get("acc")}
        if not res.spec.table_mode:
            row["test_acc_pct"] = m.get("test_acc")
            row["macs"] = m.get("macs")
        row["flops"] = m.get("flops")
        row["params"] = m.get("params")
        if "latency" in m:
            row["latency_ms"] = m.get("latency")
        if res.spec.pruning is not None:
            pruning = m.get("pruning")
            row["pruning"] = "none" if not pruning else pruning_label(c, res.spec)
            row["kept_pct"] = 100.0 * pruning["kept_fraction"] if pruning else 100.0
            row["costs"] = m.get("cost_kind", "dense")
        row["genome"] = list(c.genome)
        rows.append(row)
    return rows


def pruning_label(candidate: Candidate, spec: SearchSpec) -> str:
    choice = spec.search_space(structure=True).split(candidate.genome)[1]
    return choice.method if choice.budget is None else f"{choice.method} {choice.budget:g}"


def human(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 1000:
        return f"{value:.2f}"
    value = float(value)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


HEADERS = {"id": "id", "acc_pct": "val acc %", "test_acc_pct": "test acc %", "macs": "MACs", "flops": "FLOPs",
           "params": "params", "latency_ms": "latency ms", "pruning": "pruning", "kept_pct": "kept %", "costs": "costs"}


def print_front(res: SearchResult, fmt: str) -> None:
    rows = front_rows(res)
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if fmt == "csv":
        buffer = io.StringIO()
        fields = [k for k in HEADERS if rows and k in rows[0]] + ["genome"]
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow(row | {"genome": " ".join(map(str, row["genome"]))})
        sys.stdout.write(buffer.getvalue())
        return
    headers = dict(HEADERS)
    if res.spec.table_mode:
        source = next((c.metrics.get("acc_source") for c in res.front), "table")
        headers |= {"acc_pct": f"acc % ({source})", "flops": "FLOPs (table's count)", "params": "params (table)"}
    title = (f"Pareto front of search {res.search_id} ({len(rows)} candidates; "
             f"objectives {', '.join(res.objectives)})")
    table = Table(title=title)
    keys = [k for k in headers if rows and k in rows[0]]
    for k in keys:
        table.add_column(headers[k], justify="right")
    for row in rows:
        table.add_row(*[str(row[k]) if k == "id" or isinstance(row[k], str) else human(row[k]) for k in keys])
    console.print(table)
    if any(row.get("costs") == "sparse" for row in rows):
        console.print("costs counted sparse: a masked network's MACs, FLOPs and params are each layer's dense figure "
                      "times the fraction of its weights kept (dense kernels still run the zeros)", highlight=False)


CHECKED = {"evaluation": "those recorded when it was evaluated",
           "training": "those recorded when its training finished",
           "stored weights": "the network built from its stored weights (no outputs were recorded at evaluation)"}


def print_run_summary(stats: RunStats) -> None:
    """How a finished run went: the counts, the time, the workers' utilisation, the driver's own CPU."""
    util = stats.utilisation
    if stats.stopped_early:
        err.print(f"stopped before the budget: {stats.stopped_early}", highlight=False)
    err.print(f"{stats.evaluations} evaluations ({stats.trained} run now, {stats.reused} reused from the "
              f"store, {stats.infeasible} rejected on cheap constraints, {stats.failed} failed) in "
              f"{stats.wall_seconds or 0:.1f} s; worker utilisation "
              f"{'-' if util is None else f'{util:.0%}'} over {stats.workers} worker(s); driver CPU "
              f"{stats.driver_cpu_seconds_per_evaluation:.3f} s per evaluation{epochs_line(stats)}", highlight=False)
