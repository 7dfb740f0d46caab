"""Times `dvolver search --space nb201 --table ... --evaluations 300` and scores its front.

Acceptance: under 30 s (issue 2), under 15 s with the default algorithm (issue 15). NSGA-II and random
search run beside it on the same table and seeds as peers. Fronts are scored against the table's true
front: hypervolume ratio with test error and FLOPs each normalised so the true front spans [0, 1],
reference point (1.1, 1.1).

    python bench/table_search.py [--table ../shared/data/nb201_cifar10.csv] [--seeds 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import header

from dvolver.pareto import hypervolume, non_dominated

HERE = Path(__file__).resolve().parent
DEFAULT_TABLE = HERE.parent.parent / "shared" / "data" / "nb201_cifar10.csv"


def true_front(table: Path) -> np.ndarray:
    with table.open() as fh:
        points = np.array([[100 - float(r["test_acc"]), float(r["flops_m"])] for r in csv.DictReader(fh)])
    return np.unique(points[non_dominated(points)], axis=0)


def hv_ratio(found: np.ndarray, front: np.ndarray) -> float:
    lo, hi = front.min(axis=0), front.max(axis=0)
    ref = np.array([1.1, 1.1])
    return hypervolume((found - lo) / (hi - lo), ref) / hypervolume((front - lo) / (hi - lo), ref)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evaluations", type=int, default=300)
    args = parser.parse_args()
    front = true_front(args.table)
    print(header())
    print(f"# true front: {len(front)} points; {args.evaluations} evaluations; seeds 0..{args.seeds - 1}")
    # The product's default as a user runs it (no algorithm or population named), then the two baselines.
    runs = {"default (surrogate)": [], "nsga2": ["--population", "20", "--algorithm", "nsga2"],
            "random": ["--population", "20", "--algorithm", "random"]}
    for algorithm, flags in runs.items():
        walls, ratios = [], []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                db = os.path.join(tmp, "bench.db")
                cmd = [sys.executable, "-m", "dvolver", "search", "--space", "nb201", "--table", str(args.table),
                       "--evaluations", str(args.evaluations), *flags, "--seed", str(seed), "--db", db]
                start = time.perf_counter()
                subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=True)
                walls.append(time.perf_counter() - start)
                rows = json.loads(subprocess.run([sys.executable, "-m", "dvolver", "front", "1", "--format", "json",
                                                  "--db", db], capture_output=True, text=True, check=True).stdout)
            found = np.array([[100 - r["acc_pct"], r["flops"] / 1e6] for r in rows])
            ratios.append(hv_ratio(found, front))
        print(f"{algorithm:19s} wall mean {statistics.mean(walls):5.1f} s  max {max(walls):5.1f} s  "
              f"HV ratio mean {statistics.mean(ratios):.3f}  worst {min(ratios):.3f}")


if __name__ == "__main__":
    main()
