"""Early stopping against full training: the hypervolume of the final front (full-fidelity results only)
against the training epochs spent, from one run.

    python bench/multi_fidelity.py tables [--tables 5] [--seeds 3]   # learning-curve tables, seconds
    python bench/multi_fidelity.py digits [--seeds 3]                # NASNet trained on digits, minutes

`tables` runs the surrogate search on the learning-curve tables of bench/synthetic_tables.py (never on
the real table: the constants are chosen here) with full training (27 epochs each) and with sha and
asha (rungs 1, 3, 9, 27), each tie-break, at the same number of evaluations and at twice as many.
`digits` trains NASNet on digits with the default proxy (5 epochs, rungs 1, 3, 5), the same spec and
seeds with and without early stopping. Hypervolumes of one seed share one box: the range of every
full-fidelity result any of that seed's runs found, with the reference point at 1.1.
"""

from __future__ import annotations

import argparse
import csv
import statistics
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

OBJECTIVES = ["acc", "flops"]


def _run(spec: dict, folder: Path, name: str, tie_break: str = "crowding") -> dict:
    dvolver.rungs.TIE_BREAK = tie_break
    result = run_search(spec, db=str(folder / f"{name}.db"), executor="inline", workers=1)
    full = [c for c in result.candidates if c.status == "finished"]
    return {"name": name, "points": np.array([minimised(c, OBJECTIVES) for c in full]).reshape(-1, 2),
            "epochs": result.stats.training_epochs, "full_epochs": result.stats.full_fidelity_epochs}


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


def tables(n_tables: int, seeds: int, evaluations: int) -> None:
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
                            runs.append(_run(spec | {"evaluations": factor * evaluations,
                                                     "early_stopping": es | {"method": method}},
                                             folder, f"{name}-{t}-{seed}".replace(" ", "_"), tie_break) | {"label": name})
                _score(runs)
                runs[0]["label"] = f"full x1 ({evaluations} evals)"
                for r in runs:
                    by_name.setdefault(r["label"], []).append(r)
    print(f"{n_tables} learning-curve tables x {seeds} seeds, surrogate search, population 20")
    _report(by_name, f"full x1 ({evaluations} evals)")


def digits(seeds: int, evaluations: int) -> None:
    by_name: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for seed in range(seeds):
            spec = {"objectives": OBJECTIVES, "seed": seed, "evaluations": evaluations}
            runs = [_run(spec, folder, f"full-{seed}") | {"label": f"full ({evaluations} evals)"}]
            for method in ("sha", "asha"):
                for factor in (1, 2):
                    name = f"{method} x{factor}"
                    runs.append(_run(spec | {"evaluations": factor * evaluations, "early_stopping": {"method": method}},
                                     folder, f"{method}-{factor}-{seed}") | {"label": name})
            _score(runs)
            for r in runs:
                by_name.setdefault(r["label"], []).append(r)
                print(f"  seed {seed} {r['label']:<22} HV {r['hv']:.4f}  epochs {r['epochs']}/{r['full_epochs']}",
                      flush=True)
    print(f"NASNet on digits (validation split), default proxy, {seeds} seeds")
    _report(by_name, f"full ({evaluations} evals)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["tables", "digits"])
    parser.add_argument("--tables", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evaluations", type=int, default=None, help="[tables: 100, digits: 40]")
    args = parser.parse_args()
    print(header())
    if args.what == "tables":
        tables(args.tables, args.seeds, args.evaluations or 100)
    else:
        digits(args.seeds, args.evaluations or 40)


if __name__ == "__main__":
    main()
