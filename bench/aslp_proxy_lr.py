"""ASLP on a short proxy: how the mask learning rate decides whether the masks move at all.

The papers' mask lr (50) was set for ~100 epochs of 176 steps on CIFAR-10; a search's proxy training is a few
epochs of a few dozen steps. This runs ASLP (lr 50 and 200) and edge-popup (keep 0.5) on one NASNet network on
digits, 5 epochs at batch 32, and prints validation accuracy, kept fraction and wall time.

    python bench/aslp_proxy_lr.py [--epochs 5] [--batch-size 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import search_spaces
from dvolver import data
from dvolver.pruning import methods
from dvolver.spec import TrainingSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # oversubscribed OpenMP threads crawl when other work shares the cores
    dataset = data.load("digits")
    space = search_spaces.make_space("nasnet", {})
    genome = space.sample(np.random.default_rng(1))
    training = TrainingSpec(epochs=args.epochs, batch_size=args.batch_size)
    runs = [("aslp", None, {"mask_lr": 50.0}), ("aslp", None, {"mask_lr": 200.0}), ("edgepopup", 0.5, {})]
    print(f"{'method':10} {'options':20} {'val acc %':>9} {'kept':>6} {'seconds':>8}")
    for method, budget, options in runs:
        torch.manual_seed(args.seed)
        model = space.build(genome, dataset.input_shape, dataset.num_classes)
        start = time.perf_counter()
        out = methods.prune(model, dataset, method, budget, options, training, args.seed, torch.device("cpu"))
        print(f"{method:10} {str(options):20} {out.result.val_acc:9.2f} {out.kept_fraction:6.3f} "
              f"{time.perf_counter() - start:8.1f}", flush=True)


if __name__ == "__main__":
    main()
