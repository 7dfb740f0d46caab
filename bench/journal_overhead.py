"""What the store costs a search (issue 6): NAS-Bench-201 table searches, where an evaluation is a look-up
and so the journal's share of the wall time is as large as it ever gets.

Each search runs four ways, same spec and seed:
- no store: the algorithm asked and told directly, the table looked up, nothing written;
- the engine on SQLite in memory (every transaction, no disk);
- the engine on a SQLite file (WAL, the default store);
- the engine on PostgreSQL, with --postgres URL.
The engine runs must evaluate exactly what the storeless loop evaluates; the script checks it.

    python bench/journal_overhead.py [TABLE] [--evaluations 300] [--algorithms nsga2,surrogate] [--repeats 3]
                                     [--postgres postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from dvolver.algorithms import make_algorithm
from dvolver.api import run_search
from dvolver.ask_tell import Told
from dvolver.cheap import CheapCounts
from dvolver.evaluation import evaluate
from dvolver.objectives import OBJECTIVES
from dvolver.spec import SearchSpec
from search_spaces import genome_key

DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201_cifar10.csv"


def storeless(spec: SearchSpec) -> list[str]:
    """The engine's loop without the engine: ask, skip what was asked before, look up, tell in ask order."""
    import numpy as np

    space = spec.search_space()

    def key(genome):
        return genome_key(space.name, space.canonical(genome))

    def minimised(values: dict) -> list[float]:
        return [OBJECTIVES[o].minimised(float(values[o])) for o in spec.objectives]

    counts = CheapCounts(spec, key, None, None)
    algorithm = make_algorithm(spec.algorithm, space, key, spec.population, len(spec.objectives), spec.seed,
                               cheap=counts.values, batch=spec.batch)
    results: dict[str, dict] = {}
    while len(results) < spec.evaluations:
        genomes = algorithm.ask()
        if not genomes:
            break
        for genome in genomes:
            k = key(genome)
            if k not in results and len(results) < spec.evaluations:
                results[k] = counts.metrics(genome) | evaluate(genome, spec, 0)
        if any(key(g) not in results for g in genomes):
            break
        F = np.array([minimised(results[key(g)]) for g in genomes])
        algorithm.tell(genomes, Told.finished(F))
    return list(results)


def engine(spec: SearchSpec, db: str) -> list[str]:
    result = run_search(spec.model_dump(mode="json"), db=db, executor="inline")
    return [c.key for c in sorted(result.candidates, key=lambda c: c.id)]


def timed(run, repeats: int) -> tuple[float, list[str]]:
    times, keys = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        keys = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", type=Path, nargs="?", default=DEFAULT_TABLE)
    parser.add_argument("--evaluations", type=int, default=300)
    parser.add_argument("--algorithms", default="nsga2,surrogate")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres", help="a SQLAlchemy URL of an empty PostgreSQL database")
    args = parser.parse_args()
    print(f"# {date.today()}  {platform.machine()}  {os.cpu_count()} cores  python {platform.python_version()}; "
          f"{args.table.name}, acc+flops, {args.evaluations} evaluations, population 20, seed 0, "
          f"median of {args.repeats}")
    print("| algorithm | store | wall s | ms per evaluation | store's ms per evaluation |")
    print("|---|---|---|---|---|")
    for name in args.algorithms.split(","):
        spec = SearchSpec.from_dict({"space": "nb201", "space_options": {"table": str(args.table)},
                                     "objectives": ["acc", "flops"], "population": 20,
                                     "evaluations": args.evaluations, "algorithm": name, "seed": 0})
        storeless(spec)  # warm-up: the table is read and its look-ups cached once per process
        base, expected = timed(lambda spec=spec: storeless(spec), args.repeats)
        rows = [("none", base)]
        with tempfile.TemporaryDirectory() as tmp:
            stores = {"SQLite in memory": lambda: "sqlite://",
                      "SQLite file (WAL)": lambda: os.path.join(tmp, f"{time.perf_counter_ns()}.db")}
            if args.postgres:
                stores["PostgreSQL"] = lambda: args.postgres
            for label, url in stores.items():
                wall, keys = timed(lambda spec=spec, url=url: engine(spec, url()), args.repeats)
                if keys != expected:
                    raise SystemExit(f"{name} on {label} evaluated other candidates than the storeless loop")
                rows.append((label, wall))
        for label, wall in rows:
            extra = "" if label == "none" else f"{(wall - base) / args.evaluations * 1000:.2f}"
            print(f"| {name} | {label} | {wall:.2f} | {wall / args.evaluations * 1000:.2f} | {extra} |")


if __name__ == "__main__":
    main()
