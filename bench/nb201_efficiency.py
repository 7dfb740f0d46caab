"""Evaluations to reach the true front on a NAS-Bench-201 table (issues 5, 20): Dvolver's default search
against its NSGA-II and random search, Optuna's TPESampler (its defaults, and multivariate), GPSampler (up to
efficiency.GP_MOST evaluations) and NSGAIISampler, and pymoo's NSGA2, in one run on the same table, seeds and
budgets. Prints HV ratio (mean +- standard error, worst), IGD and recall, scored de-noised and raw (see
dvolver/efficiency.py for the rules and definitions). Needs `pip install 'dvolver[bench]'`.

    python bench/nb201_efficiency.py [TABLE] [--seeds 10] [--budgets 50,100,200,300,1000] [--objectives acc,flops]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

from dvolver import efficiency, efficiency_peers

DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201_cifar10.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", type=Path, nargs="?", default=DEFAULT_TABLE)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", default=",".join(map(str, efficiency.BUDGETS)))
    parser.add_argument("--objectives", default="acc,flops")
    parser.add_argument("--searches", default=",".join(efficiency.SEARCHES), help="comma-separated subset")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    problem = efficiency.load_problem(args.table, args.objectives.split(","))
    print(f"# {date.today()}  {platform.machine()}  {os.cpu_count()} cores  python {platform.python_version()}")
    print(f"# table {args.table.name}; objectives {args.objectives}; true front {len(problem.front)} points raw, "
          f"{len(problem.denoised.front)} de-noised; seeds 0..{args.seeds - 1}; Dvolver at its defaults, "
          f"the NSGA-II peers at population {efficiency_peers.POPULATION}, the other Optuna samplers at theirs")
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
