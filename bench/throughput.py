"""How busy the workers are kept (issue 7): the executor's own cost per evaluation, worker utilisation
on candidates of mixed cost, and the speed-up from 1 to 2 workers on the same search.

    python bench/throughput.py [--evaluations 24] [--population 8] [--batch 4] [--epochs 2] [--skip-search]

- overhead: an evaluation that does nothing, submitted and collected through the executor, one at a
  time (round trip) and 200 at once (throughput): inline, 2 local worker processes, a local Ray with
  2 workers;
- utilisation: busy seconds / (wall seconds x workers) over the evaluation phase of a digits NASNet
  search (candidates of mixed cost: their MACs differ several-fold), from the engine's own stats;
- speed-up: the same spec and seed on 1 and on 2 workers (the fronts are checked equal);
- the peer: the same search with overlap off (each batch told before the next is asked).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from machine import header

from dvolver import run_search
from dvolver.executors import InlineExecutor, ProcessExecutor, RayExecutor


def _nothing() -> None:
    return None


def overhead(executor, label: str) -> None:
    trips = []
    for _ in range(50):
        start = time.perf_counter()
        [(_, outcome)] = list(executor.as_completed([executor.submit(_nothing)]))
        trips.append(time.perf_counter() - start)
        assert outcome.error is None
    start = time.perf_counter()
    handles = [executor.submit(_nothing) for _ in range(200)]
    done = sum(1 for _ in executor.as_completed(handles))
    wall = time.perf_counter() - start
    assert done == 200
    print(f"| {label} | {statistics.median(trips) * 1000:.2f} | {wall / 200 * 1000:.2f} |")


def search(spec: dict, workers: int):
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = run_search(spec, db=os.path.join(tmp, "bench.db"), executor="ray", workers=workers)
        wall = time.perf_counter() - start
    return wall, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluations", type=int, default=24)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--skip-search", action="store_true")
    args = parser.parse_args()
    print(header())
    print("| executor | round trip, ms | per evaluation at 200 in flight, ms |")
    print("|---|---|---|")
    overhead(InlineExecutor(), "inline")
    processes = ProcessExecutor(workers=2)
    overhead(processes, "local processes, 2 workers")
    processes.shutdown()
    ray = RayExecutor(workers=2)
    overhead(ray, "Ray, local, 2 workers")
    ray.shutdown()
    if args.skip_search:
        return
    spec = {"objectives": ["acc", "flops"], "population": args.population, "batch": args.batch,
            "evaluations": args.evaluations, "training": {"epochs": args.epochs}, "seed": 0}
    print(f"\n# digits NASNet search: population {args.population}, batch {args.batch}, {args.evaluations} "
          f"evaluations, {args.epochs} epochs, seed 0")
    print("| workers | overlap | wall s | evaluation phase s | busy s | utilisation | seconds per candidate, min-max |")
    print("|---|---|---|---|---|---|---|")
    fronts, walls = {}, {}
    # The default (asks overlap training), and the same search told at once after each batch, the
    # engine's behaviour before overlap, as the peer.
    for workers, overlap in ((1, True), (2, True), (2, False)):
        wall, result = search(spec | {"overlap": overlap}, workers)
        walls[workers, overlap], fronts[workers, overlap] = wall, sorted(c.key for c in result.front)
        stats = result.stats
        seconds = [c.seconds for c in result.candidates if c.seconds]
        print(f"| {workers} | {'on' if overlap else 'off'} | {wall:.1f} | {stats.evaluation_wall_seconds:.1f} | "
              f"{sum(stats.busy_seconds.values()):.1f} | {stats.utilisation:.2f} | "
              f"{min(seconds):.1f}-{max(seconds):.1f} |")
    assert fronts[1, True] == fronts[2, True], "1 and 2 workers gave different fronts"
    print(f"\nspeed-up 1 -> 2 workers: {walls[1, True] / walls[2, True]:.2f}x (same front)")


if __name__ == "__main__":
    main()
