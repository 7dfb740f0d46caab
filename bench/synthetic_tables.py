"""Tables of the NAS-Bench-201 shape whose accuracies come from a random model, not from training.

Issue 5 forbids tuning the search to the one real table we have: its defaults will be scored on
other tables of the same shape (other datasets, other costs, three objectives). These tables stand
in for those: the search's constants are chosen on them, and the real table is then scored as
held out. Nothing here reads the real table.

A table's model, drawn from its seed:
- the network a cell computes is what matters (isomorphic cells share it; dead edges add nothing);
- each (edge, op) on a live edge adds a random effect whose mean per op is itself random (convolutions
  help on average, by a random amount; skips and pooling may help or hurt); random pairwise effects between live
  (edge, op) pairs make the landscape non-additive;
- a cell whose output is always zero scores chance (10 %);
- quality maps to accuracy through a sigmoid between a random floor and ceiling, plus per-cell
  training noise of a random size (isomorphic cells differ by it, as in the real benchmark);
- costs are closed forms of the genome: `flops` counts convolutions (3x3 nine times 1x1, dead
  ones too, as the benchmark counts them), `params` adds a random per-op overhead, so its front
  differs from the FLOPs front.

    python bench/synthetic_tables.py OUT_DIR [--tables 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from search_spaces.nb201 import ALL_GENOMES, EDGES, OPS, arch_str, functional_key, live_edges

CONV1, CONV3 = 2, 3


def synthetic_table(seed: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    n_edges, n_ops = len(EDGES), len(OPS)
    # Learned layers usually help and parameter-free ones less so, but by how much is drawn per table.
    op_mean = np.array([0.0, rng.normal(0.3, 0.5), rng.uniform(0.5, 1.5), rng.uniform(1.0, 2.5),
                        rng.normal(-0.3, 0.5)])  # none (never on a live edge), skip, conv 1x1, conv 3x3, pool
    effect = op_mean[None, :] + rng.normal(0.0, 0.6, (n_edges, n_ops))
    pairs = rng.normal(0.0, 0.4, (n_edges * n_ops, n_edges * n_ops)) * (rng.random((n_edges * n_ops,) * 2) < 0.15)
    floor, ceiling = rng.uniform(30, 60), rng.uniform(85, 97)
    noise = rng.uniform(0.05, 0.4)
    op_overhead = rng.uniform(0.0, 3.0, n_ops)
    op_overhead[:2] = 0.0  # none and skip hold nothing

    quality: dict[str, float] = {}
    rows = []
    for index, genome in enumerate(ALL_GENOMES):
        key = functional_key(genome)
        if key not in quality:
            quality[key] = _quality(genome, effect, pairs) if key != "zero" else -np.inf
        q = quality[key]
        acc = 10.0 if q == -np.inf else floor + (ceiling - floor) / (1.0 + np.exp(-q / 2.0))
        acc = float(np.clip(acc + rng.normal(0.0, noise), 0.0, 100.0))
        n1, n3 = genome.count(CONV1), genome.count(CONV3)
        flops = 5.0 + n1 * 2.0 + n3 * 18.0
        params = 0.1 + n1 * 0.02 + n3 * 0.18 + 0.01 * sum(op_overhead[op] for op in genome)
        rows.append({"index": index, "arch_str": arch_str(genome),
                     **{f"op{i}": op for i, op in enumerate(genome)},
                     "test_acc": round(acc, 4), "flops_m": round(flops, 5), "params_m": round(params, 6)})
    return rows


def _quality(genome: tuple[int, ...], effect: np.ndarray, pairs: np.ndarray) -> float:
    live = [e for e, alive in enumerate(live_edges(genome)) if alive]
    idx = [e * len(OPS) + genome[e] for e in live]
    return float(sum(effect[e, genome[e]] for e in live) + sum(pairs[a, b] for a in idx for b in idx if a < b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tables", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for t in range(args.tables):
        rows = synthetic_table(args.seed + t)
        path = args.out / f"synthetic_{args.seed + t}.csv"
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(path)


if __name__ == "__main__":
    main()
