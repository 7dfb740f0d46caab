"""Evaluations to reach the true front on a NAS-Bench-201 table (issue 5): Dvolver's surrogate search
against its NSGA-II and random search, Optuna's NSGAIISampler and pymoo's NSGA2, in one run on the same
table, seeds and budgets. Prints HV ratio, IGD and recall, mean and worst over seeds (see
dvolver/efficiency.py for the rules and definitions). Needs `pip install 'dvolver[bench]'`.

    python bench/nb201_efficiency.py [TABLE] [--seeds 10] [--budgets 100,300,1000] [--objectives acc,flops]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

from dvolver import efficiency

DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201_cifar10.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", type=Path, nargs="?", default=DEFAULT_TABLE)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", default="100,300,1000")
    parser.add_argument("--objectives", default="acc,flops")
    parser.add_argument("--searches", default=",".join(efficiency.SEARCHES), help="comma-separated subset")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    problem = efficiency.load_problem(args.table, args.objectives.split(","))
    print(f"# {date.today()}  {platform.machine()}  {os.cpu_count()} cores  python {platform.python_version()}")
    print(f"# table {args.table.name}; objectives {args.objectives}; true front {len(problem.front)} points; "
          f"seeds 0..{args.seeds - 1}; population {efficiency.POPULATION}")
    hv, recall = efficiency.one_look_per_network(problem)
    print(f"# one evaluation of every distinct network (random member of each isomorphic class): "
          f"HV ratio {hv:.4f}, recall {recall:.3f}")
    started = time.perf_counter()
    rows = efficiency.compare(problem, range(args.seeds), budgets, args.searches.split(","),
                              log=lambda line: print("#", line, file=sys.stderr, flush=True))
    print("\n".join(efficiency.table_lines(rows, args.seeds)))
    print(f"# total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
