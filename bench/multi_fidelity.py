"""Early stopping against full training: the hypervolume of the final front (full-fidelity results only)
against the training epochs spent, from one run.

    python bench/multi_fidelity.py tables [--tables 5] [--seeds 3] [--moasha /work/st-venv/bin/python]
    python bench/multi_fidelity.py digits [--seeds 3] [--epochs 5] [--workers 1]   # NASNet on digits, minutes
    python bench/multi_fidelity.py cifar [--seeds 3] [--epochs 9] [--workers 1]    # on the CIFAR-10 subset

`tables` runs the surrogate search on the learning-curve tables of bench/synthetic_tables.py (never on
the real table: the constants are chosen here) with full training (27 epochs each) and with sha and
asha (rungs 1, 3, 9, 27), each tie-break, at the same number of evaluations and at twice as many; with
--moasha, Syne Tune's MOASHA (bench/moasha_peer.py, run by that interpreter) on the same tables, both
as shipped and with its priority repaired, at as many trials.
`digits` trains NASNet on digits with the default proxy (5 epochs, rungs 1, 3, 5; --epochs 9 gives
rungs 1, 3, 9), the same spec and seeds with and without early stopping, at 1x and 2x the evaluations.
`cifar` trains a small NASNet (4 filters, one cell per stage) on 500 images of the CIFAR-10 subset
(../shared/data), 9 epochs (rungs 1, 3, 9), 12 evaluations, at 1x and 2x the evaluations.
Hypervolumes of one seed share one box: the range of every full-fidelity result any of that seed's
runs found, with the reference point at 1.1.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from machine import header

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dvolver.rungs  # noqa: E402
from bench.synthetic_tables import learning_curve_table  # noqa: E402
from dvolver import run_search  # noqa: E402
from dvolver.front import minimised  # noqa: E402
from dvolver.pareto import hypervolume, non_dominated, normalise  # noqa: E402
from dvolver.spec import EarlyStoppingSpec  # noqa: E402

OBJECTIVES = ["acc", "flops"]


def _run(spec: dict, folder: Path, name: str, workers: int = 1) -> dict:
    result = run_search(spec, db=str(folder / f"{name}.db"), executor="inline" if workers == 1 else "processes",
                        workers=workers)
    full = [c for c in result.candidates if c.status == "finished"]
    return {"name": name, "points": np.array([minimised(c, OBJECTIVES) for c in full]).reshape(-1, 2),
            "epochs": result.stats.training_epochs, "full_epochs": result.stats.full_fidelity_epochs}


def _moasha(python: str, table: Path, trials: int, seed: int, priority: str) -> dict:
    out = subprocess.run([python, str(Path(__file__).with_name("moasha_peer.py")), str(table), "--trials", str(trials),
                          "--seed", str(seed), "--priority", priority], capture_output=True, text=True, check=True)
    peer = json.loads(out.stdout)
    full = [t for t in peer["trials"] if t["epochs"] == peer["max_t"]]
    return {"points": np.array([[-t["acc"], t["flops"]] for t in full]).reshape(-1, 2),
            "epochs": peer["epochs_total"], "full_epochs": trials * peer["max_t"]}


def _score(runs: list[dict]) -> None:
    """Each run's front hypervolume in the runs' shared box, beside its epochs."""
    every = np.vstack([r["points"] for r in runs])
    ideal, nadir = every.min(axis=0), every.max(axis=0)
    for r in runs:
        front = r["points"][non_dominated(r["points"])]
        r["hv"] = hypervolume(normalise(front, ideal, nadir), np.full(2, 1.1))


def _report(by_name: dict[str, list[dict]], baseline: str) -> None:
    base = by_name[baseline]
    print(f"{'run':<28} {'HV mean':>8} {'HV sd':>7} {'HV / full':>10} {'epochs / full':>14}")
    for name, runs in by_name.items():
        hv = [r["hv"] for r in runs]
        ratio = [r["hv"] / b["hv"] for r, b in zip(runs, base)]
        epochs = [r["epochs"] / b["epochs"] for r, b in zip(runs, base)]
        print(f"{name:<28} {statistics.mean(hv):8.4f} {statistics.pstdev(hv):7.4f} {statistics.mean(ratio):10.3f} "
              f"{statistics.mean(epochs):14.3f}")


def tables(n_tables: int, seeds: int, evaluations: int, moasha: str | None) -> None:
    by_name: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for t in range(n_tables):
            path = folder / f"curves_{t}.csv"
            rows = learning_curve_table(100 + t)
            with path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            for seed in range(seeds):
                spec = {"space": "nb201", "space_options": {"table": str(path)}, "objectives": OBJECTIVES,
                        "population": 20, "seed": seed, "evaluations": evaluations}
                es = {"min_epochs": 1, "eta": 3, "max_epochs": 27}
                runs = [_run(spec | {"early_stopping": es | {"method": "none"}}, folder, f"full-{t}-{seed}")]
                for method in ("sha", "asha"):
                    for tie_break in dvolver.rungs.TIE_BREAKS:
                        for factor in (1, 2):
                            name = f"{method} {tie_break} x{factor}"
                            stopping = {"evaluations": factor * evaluations,
                                        "early_stopping": es | {"method": method, "tie_break": tie_break}}
                            run = _run(spec | stopping, folder, f"{name}-{t}-{seed}".replace(" ", "_"))
                            runs.append(run | {"label": name})
                if moasha:
                    for priority in ("shipped", "ranked"):
                        for factor in (1, 2):
                            runs.append(_moasha(moasha, path, factor * evaluations, seed, priority)
                                        | {"label": f"MOASHA {priority} x{factor}"})
                _score(runs)
                runs[0]["label"] = f"full x1 ({evaluations} evals)"
                for r in runs:
                    by_name.setdefault(r["label"], []).append(r)
    print(f"{n_tables} learning-curve tables x {seeds} seeds, surrogate search, population 20")
    _report(by_name, f"full x1 ({evaluations} evals)")


CIFAR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10_subset.npz"
CIFAR_SCALE = {"dataset": str(CIFAR), "space_options": {"filters": 4, "cells_per_stage": 1},
               "training": {"train_limit": 500}, "population": 6}


def trained(what: str, seeds: int, evaluations: int, epochs: int, workers: int) -> None:
    """NASNet trained on digits (the default proxy but for its epochs) or on the CIFAR-10 subset (small)."""
    by_name: dict[str, list[dict]] = {}
    base = CIFAR_SCALE if what == "cifar" else {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for seed in range(seeds):
            spec = base | {"objectives": OBJECTIVES, "seed": seed, "evaluations": evaluations,
                           "training": base.get("training", {}) | {"epochs": epochs, "latency_repeats": 1}}
            runs = [_run(spec, folder, f"full-{seed}", workers=workers) | {"label": f"full ({evaluations} evals)"}]
            for method in ("sha", "asha"):
                for factor in (1, 2):
                    name = f"{method} x{factor}"
                    stopping = {"evaluations": factor * evaluations, "early_stopping": {"method": method}}
                    runs.append(_run(spec | stopping, folder, f"{method}-{factor}-{seed}", workers=workers)
                                | {"label": name})
            _score(runs)
            for r in runs:
                by_name.setdefault(r["label"], []).append(r)
                print(f"  seed {seed} {r['label']:<22} HV {r['hv']:.4f}  epochs {r['epochs']}/{r['full_epochs']}",
                      flush=True)
    print(f"NASNet on {what} (validation split), {epochs} epochs (rungs {', '.join(map(str, _rungs(epochs)))}), "
          f"{seeds} seeds, {workers} worker(s)")
    _report(by_name, f"full ({evaluations} evals)")


def _rungs(epochs: int) -> tuple[int, ...]:
    return dvolver.rungs.rung_epochs(EarlyStoppingSpec(min_epochs=1, eta=3, max_epochs=epochs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["tables", "digits", "cifar"])
    parser.add_argument("--tables", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evaluations", type=int, default=None, help="[tables: 100, digits: 40, cifar: 12]")
    parser.add_argument("--epochs", type=int, default=None, help="digits, cifar: max_epochs [digits 5, cifar 9]")
    parser.add_argument("--workers", type=int, default=1, help="digits, cifar: worker processes [1]")
    parser.add_argument("--moasha", help="tables: a Python with syne-tune installed, to run its MOASHA as a peer")
    args = parser.parse_args()
    print(header())
    if args.what == "tables":
        tables(args.tables, args.seeds, args.evaluations or 100, args.moasha)
    elif args.what == "digits":
        trained("digits", args.seeds, args.evaluations or 40, args.epochs or 5, args.workers)
    else:
        trained("cifar", args.seeds, args.evaluations or 12, args.epochs or 9, args.workers)


if __name__ == "__main__":
    main()
