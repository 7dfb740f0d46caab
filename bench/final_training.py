"""From a proxy front to final models (issue 19): does the proxy ranking survive final training, and does the
found front beat NASNet-A trained the same way? Dvolver's claim, at CPU scale.

    python bench/final_training.py [--workers 2] [--seed 0] [--db PATH]      # CPU, CIFAR-10 subset
    python bench/final_training.py --quick                                   # a minute, for the test
    python bench/final_training.py --device cuda                             # the papers' scale, on a GPU

1. A NASNet proxy search (accuracy and FLOPs) on the CIFAR-10 subset at a small scale.
2. Four to six of its best networks and NASNet-A retrained with one recipe at a larger scale, side by side
   on the workers (`dvolver.training_runs`): the front, spread along FLOPs when it has more than six members,
   and filled from the next non-dominated layers when it has fewer than four (those rows say their layer).
3. Proxy accuracy (validation split, proxy scale) beside final validation and test accuracy (final scale),
   FLOPs (fvcore, FLOPs = 2 x MACs) and params at final scale; Kendall tau-b and Spearman rho between proxy
   and final accuracy; whether some found network reaches NASNet-A's test accuracy at fewer FLOPs.

Sizes on the CPU (a 2-core machine, 15 minutes in all on an AMD EPYC): the proxy trains F=4, N=1 for 6 epochs on 1,000
images, 32 evaluations; the final recipe F=8, N=2 (twice the filters and twice the cells per stage), 8 epochs
on 2,000 images, drop-path 0.2 rising, the auxiliary head at weight 0.4, cutout, crop and flip. An epoch of
2,000 images at F=8, N=2 takes about 40 s a worker on a 2-core Xeon, so the papers' 600 epochs are out of
reach here. `--device cuda` uses Dvolver's proxy (F=32, N=2, the whole subset, one GPU an evaluation) and a
final N=6, F=32 for 60 epochs: meant for when a GPU is lent, not a reproduction of the papers' 600 epochs on
all of CIFAR-10. The workers are local processes (`--executor processes`, which needs no Ray and works on a
GPU machine without it) or Ray (`--executor ray`).

Splits: proxy accuracy is the search's validation split at proxy scale; final validation and test accuracy
come from the final recipe's split of the same subset, and test is never optimised by either.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import header  # noqa: E402
from dvolver.api import make_training_executor, run_search  # noqa: E402
from dvolver.executors import ProcessExecutor  # noqa: E402
from dvolver.front import feasible, minimised  # noqa: E402
from dvolver.rank_survival import survival  # noqa: E402
from dvolver.rungs import fronts  # noqa: E402
from dvolver.spec import SearchSpec  # noqa: E402
from dvolver.store import Store  # noqa: E402
from dvolver.training_runs import run_trainings  # noqa: E402
from dvolver.trainings import create_reference, create_trainings  # noqa: E402

CIFAR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10_subset.npz"
LEAST_RETRAINED, MOST_RETRAINED = 4, 6

SIZES = {
    "cpu": {"proxy": {"space_options": {"filters": 4, "cells_per_stage": 1}, "evaluations": 32, "population": 8,
                      "training": {"epochs": 6, "train_limit": 1000, "latency_repeats": 3}},
            "final": {"epochs": 8, "train_limit": 2000, "batch_size": 64, "drop_path": 0.2, "aux_weight": 0.4,
                      "scale": {"nasnet": {"cells": 2, "filters": 8}}}},
    "quick": {"proxy": {"space_options": {"filters": 4, "cells_per_stage": 1}, "evaluations": 6, "population": 3,
                        "training": {"epochs": 1, "train_limit": 200, "latency_repeats": 1}},
              "final": {"epochs": 1, "train_limit": 200, "batch_size": 64,
                        "scale": {"nasnet": {"cells": 1, "filters": 6}}}},
    "cuda": {"proxy": {"space_options": {"filters": 32, "cells_per_stage": 2}, "evaluations": 60, "population": 12,
                       "training": {"epochs": 20}, "resources": {"gpus_per_eval": 1}},
             "final": {"epochs": 60, "batch_size": 96, "drop_path": 0.2, "aux_weight": 0.4, "device": "cuda",
                       "scale": {"nasnet": {"cells": 6, "filters": 32}}}},
}


def spread(members: list, most: int) -> list:
    """At most `most` members, evenly spaced along FLOPs, the cheapest and the costliest kept."""
    members = sorted(members, key=lambda c: c.objectives["flops"])
    if len(members) <= most:
        return members
    if most == 1:
        return members[:1]
    return [members[round(i * (len(members) - 1) / (most - 1))] for i in range(most)]


def choose(result, spec: SearchSpec) -> list[tuple[object, int]]:
    """(candidate, layer) for the networks to retrain: whole non-dominated layers, best first, until there
    are at least LEAST_RETRAINED, a layer that would overflow MOST_RETRAINED spread along FLOPs. Layer 1 is
    the proxy front."""
    pool = [c for c in result.candidates if feasible(c, spec)]
    layers = fronts(np.array([minimised(c, spec.objectives) for c in pool])) if pool else []
    chosen: list[tuple[object, int]] = []
    for number, rows in enumerate(layers, start=1):
        chosen += [(c, number) for c in spread([pool[i] for i in rows], MOST_RETRAINED - len(chosen))]
        if len(chosen) >= LEAST_RETRAINED:
            break
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, about a minute: for the test")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--executor", choices=["processes", "ray"], default="processes",
                        help="local worker processes (no Ray needed) or Ray [processes]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", default=None, help="SQLite file to keep (default: a temporary one)")
    parser.add_argument("--data", default=str(CIFAR), help="the CIFAR-10 subset (.npz)")
    args = parser.parse_args()
    sizes = SIZES["quick" if args.quick else args.device]
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or str(Path(tmp) / "final.db")
        report(*_run(sizes, args, db), args)


def _run(sizes: dict, args: argparse.Namespace, db: str) -> tuple:
    spec = {"space": "nasnet", "objectives": ["acc", "flops"], "dataset": args.data, "seed": args.seed} | sizes["proxy"]
    start = time.perf_counter()
    result = run_search(spec, db=db, executor=args.executor, workers=args.workers)
    proxy_seconds = time.perf_counter() - start
    store = Store(db)
    chosen = choose(result, SearchSpec.from_dict(spec))
    layer = {c.id: number for c, number in chosen}
    recipe = sizes["final"] | {"seed": args.seed}
    ids = create_trainings(store, result.search_id, [c.id for c, _ in chosen], recipe)
    ids.append(create_reference(store, result.search_id, "nasnet-a", recipe))
    if args.executor == "processes":
        pool = ProcessExecutor(workers=args.workers)
    else:
        pool = make_training_executor(SearchSpec.from_dict(spec), len(ids), "ray", args.workers)
    start = time.perf_counter()
    try:
        ended = run_trainings(store, ids, pool)
    finally:
        pool.shutdown()
    final_seconds = time.perf_counter() - start
    return store, result, ids, ended, proxy_seconds, final_seconds, layer


def report(store: Store, result, ids: list[int], ended: dict, proxy_seconds: float, final_seconds: float,
           layer: dict[int, int], args: argparse.Namespace) -> None:
    proxy = {c.id: c for c in result.candidates}
    trainings = [store.get_training(i) for i in ids]
    found = [t for t in trainings if t.candidate_id is not None and t.status == "finished"]
    reference = next(t for t in trainings if t.candidate_id is None)
    s = survival(store, result.search_id)
    print(header())
    print(f"python bench/final_training.py{' --quick' if args.quick else ''} --device {args.device} "
          f"--executor {args.executor} --workers {args.workers} --seed {args.seed}")
    recipe = trainings[0].recipe
    print(f"proxy search: {len(result.candidates)} evaluations, front {len(result.front)}, {proxy_seconds:.0f} s; "
          f"final recipe: {recipe['epochs']} epochs, scale {recipe['scale']['nasnet']}, train_limit "
          f"{recipe.get('train_limit')}; {len(trainings)} trainings on {args.workers} workers in {final_seconds:.0f} s")
    print(f"statuses: {ended}")
    print("\n| network | proxy layer | proxy val acc % (proxy scale) | final val acc % | final test acc % "
          "| MFLOPs (final) | params (final) |\n|---|---|---|---|---|---|---|")
    for t in trainings:
        name = f"candidate {t.candidate_id}" if t.candidate_id is not None else "NASNet-A (reference)"
        where = ("front" if layer[t.candidate_id] == 1 else f"layer {layer[t.candidate_id]}") \
            if t.candidate_id is not None else "-"
        proxy_acc = f"{proxy[t.candidate_id].objectives['acc']:.2f}" if t.candidate_id is not None else "-"
        print(f"| {name} | {where} | {proxy_acc} | {_pct(t.val_acc)} | {_pct(t.test_acc)} | "
              f"{(t.flops or 0) / 1e6:.2f} | {t.params or 0:,} |")
    print(f"\nKendall tau-b proxy vs final: validation {_num(s.kendall_tau_val)}, test {_num(s.kendall_tau_test)}; "
          f"Spearman rho: validation {_num(s.spearman_rho_val)}, test {_num(s.spearman_rho_test)} "
          f"(over {len(s.pairs)} retrained candidates)")
    print(f"proxy-front members off the final front: {s.fell_off or 'none'}")
    beats = [t for t in found if reference.test_acc is not None and t.test_acc >= reference.test_acc
             and t.flops <= reference.flops and (t.test_acc > reference.test_acc or t.flops < reference.flops)]
    verdict = (f"yes: candidate(s) {', '.join(str(t.candidate_id) for t in beats)} reach NASNet-A's test accuracy "
               "at no more FLOPs" if beats else "no: no retrained found network dominates NASNet-A")
    print(f"final front dominates NASNet-A (test split, FLOPs at final scale): {verdict}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _num(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
