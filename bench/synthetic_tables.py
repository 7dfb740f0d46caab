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

With --curves (`learning_curve_table`), each row also holds a learning curve: `acc_epoch_<E>`, the
accuracy in % after E = 1..27 epochs (NB201Table.curve_epochs), for early stopping in table mode.
The table above is drawn first, unchanged; the curves come from a second generator of the same
seed, so `synthetic_table` and its files stay the same. A curve's model, drawn from that seed:
- every network starts at chance (10 % at epoch 0) and saturates at the row's full-fidelity
  accuracy (`test_acc`, what NB201Table reads), reached exactly at the last epoch T:
  acc(e) = final - (final - 10) * (exp(-e / tau) - exp(-T / tau)) / (1 - exp(-T / tau));
- tau, the network's speed in epochs, is drawn once per network (isomorphic cells share it):
  log tau = log tau0 + slow * (live 3x3 convolutions) + spread * N(0, 1), with tau0 in 1.5-3
  epochs, slow in 0.02-0.05 and spread in 0.04-0.1 drawn per table, so larger networks tend to
  start slower and curves cross: a network that learns fast can lead early and end below one that
  learns slowly;
- each epoch but the last adds its own Gaussian training noise (sd drawn per table in 0.1-0.4 %),
  so curves are saturating but not monotone;
- `curve_kendall_tau` measures the crossing: the Kendall tau between the ranks at an early epoch
  and at the last one. Over seeds 0-4 it averages 0.58 at epoch 1 (0.47-0.64), 0.71 at epoch 3
  and 0.92 at epoch 9: early ranks only partly predict final ones, as on real benchmarks.

    python bench/synthetic_tables.py OUT_DIR [--tables 5] [--seed 0] [--curves]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from dvolver.rank_survival import kendall_tau_b
from search_spaces.nb201 import ALL_GENOMES, EDGES, OPS, arch_str, functional_key, live_edges

CONV1, CONV3 = 2, 3
CURVE_EPOCHS = tuple(range(1, 28))  # all of 1..27: the rungs 1, 3, 9, 27 of successive halving at eta 3
CHANCE = 10.0  # accuracy in % of an untrained network (CIFAR-10's 10 classes)


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


def learning_curve_table(seed: int, epochs: tuple[int, ...] = CURVE_EPOCHS) -> list[dict[str, object]]:
    """`synthetic_table(seed)`'s rows, each with `acc_epoch_<E>` for E in `epochs` (see the module's
    docstring); the last epoch's value is the row's `test_acc`."""
    epochs = tuple(sorted(set(int(e) for e in epochs)))
    if not epochs or epochs[0] < 1:
        raise ValueError(f"epochs must be positive integers, not {epochs}")
    rows = synthetic_table(seed)
    rng = np.random.default_rng([seed, 1])  # apart from synthetic_table's stream, which stays as it was
    tau0, slow, spread = rng.uniform(1.5, 3.0), rng.uniform(0.02, 0.05), rng.uniform(0.04, 0.1)
    noise = rng.uniform(0.1, 0.4)
    last = epochs[-1]
    at = np.array(epochs, dtype=float)
    tau_of: dict[str, float] = {}
    for row, genome in zip(rows, ALL_GENOMES, strict=True):
        key = functional_key(genome)
        if key not in tau_of:
            n3 = sum(1 for e, alive in enumerate(live_edges(genome)) if alive and genome[e] == CONV3)
            tau_of[key] = float(tau0 * np.exp(slow * n3 + spread * rng.normal()))
        tau = tau_of[key]
        final = float(row["test_acc"])  # type: ignore[arg-type]
        left = (np.exp(-at / tau) - np.exp(-last / tau)) / (1.0 - np.exp(-last / tau))
        curve = final - (final - CHANCE) * left + rng.normal(0.0, noise, len(epochs))
        curve = np.clip(curve, 0.0, 100.0)
        for epoch, acc in zip(epochs[:-1], curve[:-1], strict=True):
            row[f"acc_epoch_{epoch}"] = round(float(acc), 4)
        row[f"acc_epoch_{last}"] = row["test_acc"]  # the full-fidelity accuracy, exactly
    return rows


def curve_kendall_tau(rows: list[dict[str, object]], epoch: int = 1, final: str | None = None) -> float:
    """Kendall's tau-b between the rows' accuracies after `epoch` epochs and at the last curve epoch
    (or the column `final`): 1 where the early ranking is the final one, lower as curves cross."""
    last = final or max((c for c in rows[0] if c.startswith("acc_epoch_")), key=lambda c: int(c.rsplit("_", 1)[1]))
    tau = kendall_tau_b([float(r[f"acc_epoch_{epoch}"]) for r in rows], [float(r[last]) for r in rows])
    return float("nan") if tau is None else tau


def _quality(genome: tuple[int, ...], effect: np.ndarray, pairs: np.ndarray) -> float:
    live = [e for e, alive in enumerate(live_edges(genome)) if alive]
    idx = [e * len(OPS) + genome[e] for e in live]
    return float(sum(effect[e, genome[e]] for e in live) + sum(pairs[a, b] for a in idx for b in idx if a < b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tables", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--curves", action="store_true",
                        help="add learning curves acc_epoch_1..27 (files synthetic_curves_SEED.csv)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for t in range(args.tables):
        if args.curves:
            rows = learning_curve_table(args.seed + t)
            path = args.out / f"synthetic_curves_{args.seed + t}.csv"
        else:
            rows = synthetic_table(args.seed + t)
            path = args.out / f"synthetic_{args.seed + t}.csv"
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(path)


if __name__ == "__main__":
    main()
