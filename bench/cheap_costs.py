"""Cheap costs from cached unit counts against fvcore on the whole network (issue 15).

    OMP_NUM_THREADS=1 python bench/cheap_costs.py [--genomes 1000] [--warmup 200] [--whole 30] [--seed 0]

The default search space (`SearchSpec()`: NASNet on digits). After `--warmup` genomes (their own
draw) have filled the unit cache, times `cheap_metrics`, the driver's call, on `--genomes` random
genomes, and `costs.count` on the whole built network (what `cheap_metrics` did before) on the
first `--whole` of them, checking that both give the same figures. The last line is
`median_ms_per_genome X` (the cached path).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # measure this source tree, whatever copy of dvolver is installed
    sys.path.insert(0, str(ROOT))

from dvolver import SearchSpec, costs, data, unit_costs  # noqa: E402
from dvolver.evaluation import cheap_metrics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--genomes", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--whole", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    spec = SearchSpec()
    space = spec.search_space()
    dataset = data.load(spec.dataset)
    shape, classes = dataset.input_shape, dataset.num_classes
    cpu = platform.processor() or platform.machine()
    print(f"space {spec.space} {spec.space_options} on {spec.dataset} {shape}, {classes} classes; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {cpu}")

    warm_rng = np.random.default_rng(args.seed + 1)
    start = time.perf_counter()
    for _ in range(args.warmup):
        cheap_metrics(space.sample(warm_rng), spec, shape, classes)
    warm = unit_costs.CACHE.info()
    print(f"warm-up: {args.warmup} genomes in {time.perf_counter() - start:.2f} s, {warm.counted} units counted")

    rng = np.random.default_rng(args.seed)
    genomes = [space.sample(rng) for _ in range(args.genomes)]
    times = []
    results = []
    start = time.perf_counter()
    for genome in genomes:
        t0 = time.perf_counter()
        results.append(cheap_metrics(genome, spec, shape, classes))
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    after = unit_costs.CACHE.info()
    median_ms = statistics.median(times) * 1000
    print(f"cached: {args.genomes} genomes in {total:.3f} s, median {median_ms:.3f} ms, "
          f"p90 {np.percentile(times, 90) * 1000:.3f} ms, max {max(times) * 1000:.1f} ms; "
          f"{after.counted - warm.counted} new units counted, {after.units} held")

    whole_times = []
    for genome, cached in zip(genomes[: args.whole], results):
        t0 = time.perf_counter()
        counted = costs.count(space.build(genome, shape, classes), shape)
        whole_times.append(time.perf_counter() - t0)
        assert counted.as_metrics() | {"cost_source": "fvcore"} == cached, genome
    whole_ms = statistics.median(whole_times) * 1000
    print(f"whole network: {len(whole_times)} genomes, median {whole_ms:.1f} ms (build + fvcore trace), "
          f"same figures as cached; {whole_ms / median_ms:.0f}x the cached median; "
          f"{args.genomes} genomes would take ~{whole_ms * args.genomes / 1000:.0f} s")
    print(f"median_ms_per_genome {median_ms:.3f}")


if __name__ == "__main__":
    main()
