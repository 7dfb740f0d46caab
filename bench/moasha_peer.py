"""Syne Tune's MOASHA on a NAS-Bench-201 learning-curve table: the peer of Dvolver's early stopping.

MOASHA (multi-objective asynchronous successive halving, Schmucker et al. 2021; Salinas et al. 2021)
samples cells at random and stops each at a rung of epochs (grace period, then times the reduction
factor: 1, 3, 9, .. up to max_t) unless its (error, FLOPs) ranks in the top 1/factor of those seen at
that rung, by Syne Tune's non-dominated sort. Here it runs on a table, not on training: a trial is
one of the 15,625 cells (op0..op5, each categorical over the 5 ops), and reporting epoch E means
reading its `acc_epoch_<E>` column (NB201Table's curve columns; bench/synthetic_tables.py --curves
writes such tables). The loop is sequential, one trial at a time, as Syne Tune's Tuner would drive
it with one worker and no waiting: on_trial_add, on_trial_result per epoch while the scheduler says
continue, then on_trial_remove when it stops the trial (on_trial_complete if the curve ends first).

The objectives are accuracy (maximised; the scheduler is given error = 100 - accuracy) and FLOPs
(minimised; given in millions, so that neither dominates the distances of Syne Tune's epsilon-net
tie-break within a front). max_t is the table's last curve epoch.

Two priorities (--priority), because the one Syne Tune ships does not rank the trial it decides on
(syne-tune 0.10.0 to 0.16.0 alike): its rung code (Bracket.on_result) wants a priority per trial,
but NonDominatedPriority returns nondominated_sort's order, the trials' indices best first; so the
decision reads the index of the worst trial, not the new trial's place (a trial that dominates all
the others at its rung is stopped about 2 times in 3), and within a front the epsilon-net's ranks
are used as an order. `shipped` (the default) runs MOASHA as installed; `ranked` gives it, through
its own multiobjective_priority argument, each trial's place in that same sort (front by front, each
front by its epsilon-net from the trial best in error), which is MOASHA as its papers describe:
continue while in the top 1/reduction_factor of the rung.

It runs in its own environment, with only numpy and syne-tune (no torch, no dvolver; the table is
read with the csv module, by NB201Table's column rules), and prints one JSON object on stdout:

    /work/st-venv/bin/python bench/moasha_peer.py TABLE [--trials 100] [--seed 0]
        [--grace-period 1] [--reduction-factor 3] [--priority shipped|ranked]

    {"peer": "syne-tune MOASHA", "syne_tune": VERSION, "table": PATH, "fingerprint": SHA256[:16],
     "seed": S, "budget_trials": N, "max_t": T, "grace_period": 1, "reduction_factor": 3,
     "priority": "shipped" or "ranked",
     "epochs_total": SUM OF EPOCHS REACHED,
     "trials": [{"trial": I, "genome": [op0, .., op5], "epochs": E reached, "acc": acc_epoch_E,
                 "flops": FLOPs as NB201Table counts them (flops_m times 1e6), "table_acc": the
                 table's full-fidelity accuracy, for scoring only: the scheduler never sees it}, ..]}

Another script calls it with subprocess.run([python, "bench/moasha_peer.py", table, ...],
capture_output=True, text=True, check=True) and json.loads(stdout); anything Syne Tune prints goes
to stderr. The fingerprint is NB201Table's, so the caller can check both read the same file.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import itertools
import json
import re
import sys
from datetime import datetime
from pathlib import Path

import numpy as np

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from): op0..op5, the benchmark's order
ACC_COLUMNS = ("val_acc", "valid_acc", "accuracy", "acc", "test_acc")  # NB201Table's preference order
CURVE_COLUMN = re.compile(r"acc_epoch_([1-9][0-9]*)")
N_CELLS = len(OPS) ** len(EDGES)


class CurveTable:
    """A learning-curve table as the peer needs it: per cell, (epoch -> accuracy), flops, full accuracy."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.fingerprint = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        with self.path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            acc = next((c for c in ACC_COLUMNS if c in columns), None)
            flops, scale = ("flops", 1.0) if "flops" in columns else ("flops_m", 1e6)
            curve = sorted((int(m.group(1)), c) for c in columns if (m := CURVE_COLUMN.fullmatch(c)))
            by_ops = all(f"op{i}" in columns for i in range(len(EDGES)))
            missing = [what for what, absent in (
                (f"an accuracy column ({' or '.join(ACC_COLUMNS)})", acc is None),
                ("flops or flops_m", flops not in columns),
                ("learning-curve columns acc_epoch_<E>", not curve),
                ("arch_str or op0..op5", not by_ops and "arch_str" not in columns)) if absent]
            if missing:
                raise ValueError(f"{self.path} lacks the column(s) " + ", ".join(missing))
            self.epochs = tuple(e for e, _ in curve)
            self.curve: dict[tuple[int, ...], dict[int, float]] = {}
            self.flops: dict[tuple[int, ...], float] = {}
            self.acc: dict[tuple[int, ...], float] = {}
            for line, row in enumerate(reader, start=2):
                try:
                    genome = (tuple(int(row[f"op{i}"]) for i in range(len(EDGES))) if by_ops
                              else parse_arch_str(row["arch_str"]))
                    self.curve[genome] = {e: float(row[c]) for e, c in curve}
                    self.flops[genome] = float(row[flops]) * scale
                    self.acc[genome] = float(row[acc])
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(f"{self.path} line {line}: {exc}") from exc
        absent = [g for g in itertools.product(range(len(OPS)), repeat=len(EDGES)) if g not in self.curve]
        if absent:
            raise ValueError(f"{self.path} lacks {len(absent)} of the {N_CELLS} cells, e.g. {absent[0]}")


def parse_arch_str(text: str) -> tuple[int, ...]:
    """|op~0|+|op~0|op~1|+|op~0|op~1|op~2| to op codes in EDGES order (as search_spaces.nb201 does)."""
    ops: dict[tuple[int, int], int] = {}
    for to, node in enumerate(text.strip().split("+"), start=1):
        for item in filter(None, node.split("|")):
            name, src = item.split("~")
            ops[(to, int(src))] = OPS.index(name)
    if set(ops) != set(EDGES):
        raise ValueError(f"{text!r} is not a NAS-Bench-201 cell")
    return tuple(ops[edge] for edge in EDGES)


def _moasha_class():
    try:
        from syne_tune.optimizer.schedulers.multiobjective import MOASHA
    except ImportError:
        from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA
    return MOASHA


def ranked_priority():
    """A MOPriority giving each trial its place in Syne Tune's non-dominated sort (0 best), as Bracket
    expects; built from Syne Tune's own pareto_efficient and compute_epsilon_net (which returns ranks)."""
    from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import MOPriority
    from syne_tune.optimizer.schedulers.multiobjective.non_dominated_priority import (
        compute_epsilon_net,
        pareto_efficient,
    )

    class RankedNonDominatedPriority(MOPriority):
        def priority_unsafe(self, objectives: np.ndarray) -> np.ndarray:
            place = np.empty(len(objectives), dtype=int)
            remaining, ahead = np.arange(len(objectives)), 0
            while remaining.size:
                efficient = pareto_efficient(objectives[remaining])
                front = remaining[efficient]
                place[front] = ahead + compute_epsilon_net(objectives[front], dim=0)
                ahead += len(front)
                remaining = remaining[~efficient]
            return place

    return RankedNonDominatedPriority()


PRIORITIES = ("shipped", "ranked")


def run(table: CurveTable, trials: int, seed: int, grace_period: int = 1, reduction_factor: float = 3,
        priority: str = "shipped") -> dict:
    """MOASHA for `trials` trials on `table`; the JSON object the module's docstring describes."""
    from importlib.metadata import version

    from syne_tune.backend.trial_status import Trial
    from syne_tune.config_space import choice
    from syne_tune.optimizer.scheduler import SchedulerDecision

    # MOASHA samples configurations (and breaks ties) with numpy's global generator, whatever its
    # random_seed: seeding it makes a run a function of the seed.
    np.random.seed(seed)
    if priority not in PRIORITIES:
        raise ValueError(f"priority is one of {PRIORITIES}, not {priority!r}")
    max_t = table.epochs[-1]
    scheduler = _moasha_class()(
        config_space={f"op{i}": choice(list(range(len(OPS)))) for i in range(len(EDGES))},
        metrics=["error", "mflops"], do_minimize=True, time_attr="epoch", max_t=max_t,
        grace_period=grace_period, reduction_factor=reduction_factor, random_seed=seed,
        multiobjective_priority=ranked_priority() if priority == "ranked" else None)
    done = []
    for trial_id in range(trials):
        suggestion = scheduler.suggest()
        genome = tuple(int(suggestion.config[f"op{i}"]) for i in range(len(EDGES)))
        trial = Trial(trial_id=trial_id, config=dict(suggestion.config), creation_time=datetime.now())
        scheduler.on_trial_add(trial)
        curve, mflops = table.curve[genome], table.flops[genome] / 1e6
        for epoch in table.epochs:
            result = {"epoch": epoch, "error": 100.0 - curve[epoch], "mflops": mflops}
            if scheduler.on_trial_result(trial, result) == SchedulerDecision.STOP:
                scheduler.on_trial_remove(trial)  # what the Tuner does when the scheduler stops a trial
                break
        else:
            scheduler.on_trial_complete(trial, result)
        done.append({"trial": trial_id, "genome": list(genome), "epochs": epoch, "acc": curve[epoch],
                     "flops": table.flops[genome], "table_acc": table.acc[genome]})
    return {"peer": "syne-tune MOASHA", "syne_tune": version("syne-tune"), "table": str(table.path),
            "fingerprint": table.fingerprint, "seed": seed, "budget_trials": trials, "max_t": max_t,
            "grace_period": grace_period, "reduction_factor": reduction_factor, "priority": priority,
            "epochs_total": sum(t["epochs"] for t in done), "trials": done}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", type=Path)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grace-period", type=int, default=1)
    parser.add_argument("--reduction-factor", type=float, default=3)
    parser.add_argument("--priority", choices=PRIORITIES, default="shipped",
                        help="shipped: MOASHA as installed; ranked: each trial ranked by its place (see above)")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    table = CurveTable(args.table)
    with contextlib.redirect_stdout(sys.stderr):  # stdout holds the JSON alone
        out = run(table, args.trials, args.seed, args.grace_period, args.reduction_factor, args.priority)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
