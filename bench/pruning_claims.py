"""Reproduces, as a short CPU proxy, the claims of the three pruning papers in ../shared/METHODS.md (sections 2-4).

(a) ASLP vs edge-popup vs Supermask on Conv2 and Conv4: masks learned over frozen random signed-constant
    weights (each method's default options: lr 50 for ASLP's logits and Supermask's scores, 0.1 for
    edge-popup's). ASLP learns its sparsity; edge-popup then keeps, per layer, the fraction ASLP kept in the
    same run (equal sparsity; ``--edgepopup-keep 0.5`` fixes it instead). Supermask learns its own.
    ``--supermask-lr`` adds a clearly labelled Supermask run at that lower lr.
(b) Budget-aware reparametrization vs magnitude pruning on Conv4 at 90 / 95 / 97 % pruned: one dense Conv4
    trained ``--epochs-reparam`` epochs, cut at each budget without and with ``--finetune-epochs`` of masked
    fine-tuning; reparam trained from scratch the same epochs with the budget in the loss (lam ``--lam``).
(c) Joint search-and-training filter pruning of ResNet-20 (keep ratios 0.60 ... 0.85) vs the dense ResNet-20
    trained as many epochs as joint used in all (its iterations plus its fine-tune). Both without
    augmentation (the measured run predates joint honouring the spec's augmentation; kept for comparability).

Within a part every method gets the same epochs, batch size, seed and data; accuracies are percent, MACs are
multiply-accumulates of one 32x32 image (FLOPs = 2 x MACs); sparse MACs count each layer's MACs times the
fraction of its weights kept.

Defaults: the 10,000-image CIFAR-10 subset (9,000 train, 1,000 validation, 2,000 test), batch 64 (~140 steps an
epoch), 8 epochs for the masks (ASLP and Supermask at lr 50 sit at chance for the first ~150-300 steps), 6 for
Conv4 dense / reparam (+ 2 fine-tune), 16 for joint, peak lr 0.1 with the one-cycle schedule: about 40 minutes
on 2 otherwise idle CPU cores (per-epoch costs: ~25 s a mask method, ~20 s dense Conv4, ~30 s reparam, ~11 s
dense ResNet-20, ~12 s joint); 59 min measured with a test suite sharing the cores. The papers train ~100-300
epochs on the full 50,000 images, so expect far lower accuracies here: the proxy shows the ordering of the
methods, not the papers' numbers.

    python bench/pruning_claims.py [--parts a,b,c] [--out bench/pruning_claims.json]
    python bench/pruning_claims.py --train-limit 640 --epochs-masks 1 --epochs-reparam 1 --epochs-joint 4  # smoke

Longer, on a GPU, with the full CIFAR-10 (a python-format folder: data_batch_1..5, test_batch):

    python bench/pruning_claims.py --data /path/to/cifar-10-batches-py --device cuda --batch-size 256 \\
        --epochs-masks 100 --epochs-reparam 100 --finetune-epochs 20 --epochs-joint 160

(joint keeps its full network and alpha step on the CPU and trains its sub-networks on the device.)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from dvolver import costs, data
from dvolver.pruning import methods
from dvolver.spec import TrainingSpec
from dvolver.training import fit, measure
from search_spaces.backbones import build_backbone

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10_subset.npz"
BUDGETS = (0.1, 0.05, 0.03)  # kept fractions: 90, 95 and 97 % pruned, the reparam paper's table
JOINT_CENTRE = 0.725  # keep ratios 0.60 ... 0.85, the paper's set

warnings.filterwarnings("ignore", category=DeprecationWarning)


@dataclass
class Row:
    part: str
    network: str
    method: str
    label: str
    val_acc: float
    test_acc: float
    kept_fraction: float
    macs: int
    sparse_macs: int | None
    params: int
    nonzero_params: int | None
    epochs: int
    wall_s: float
    details: dict[str, Any] = field(default_factory=dict)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="an .npz or a CIFAR-10 python-format folder")
    p.add_argument("--parts", default="a,b,c", help="comma-separated subset of a, b, c")
    p.add_argument("--epochs-masks", type=int, default=8, help="part a: epochs of every mask method")
    p.add_argument("--epochs-reparam", type=int, default=6, help="part b: epochs of dense and reparam training")
    p.add_argument("--finetune-epochs", type=int, default=2, help="part b: fine-tune epochs after magnitude cut")
    p.add_argument("--epochs-joint", type=int, default=16, help="part c: joint's epoch budget (iterations + tune)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1, help="parts b and c: peak SGD lr of the weights")
    p.add_argument("--lam", type=float, default=10.0, help="part b: reparam's budget-loss weight")
    p.add_argument("--edgepopup-keep", default="aslp", help="'aslp' (ASLP's learned kept fraction) or a fraction")
    p.add_argument("--supermask-lr", type=float, default=None, help="part a: add a Supermask run at this lr")
    p.add_argument("--train-limit", type=int, default=None, help="train on the first N training images (smoke tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "pruning_claims.json")
    args = p.parse_args()
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    if unknown := set(args.parts) - {"a", "b", "c"}:
        p.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose among a, b, c")
    if not args.data.exists():
        p.error(f"dataset {args.data} does not exist: give --data an .npz (x_train, y_train, x_test, y_test) "
                "or a CIFAR-10 python-format folder")
    return args


# ------------------------------------------------------------------------------------------------ helpers


def fresh(name: str, ds: data.Dataset, seed: int) -> torch.nn.Module:
    # Seeded per network so every method of a part starts from the same initial weights.
    torch.manual_seed(seed)
    return build_backbone(name, ds.input_shape, ds.num_classes)


def row_of(part: str, network: str, pruned: methods.Pruned, label: str, wall: float, ds: data.Dataset,
           details: dict[str, Any] | None = None) -> Row:
    c = costs.count(pruned.model, ds.input_shape)
    return Row(part, network, pruned.method, label, pruned.result.val_acc, pruned.result.test_acc,
               pruned.kept_fraction, c.macs, c.sparse_macs, c.params, c.nonzero_params, pruned.result.epochs,
               wall, details or {})


def run_prune(part: str, network: str, label: str, ds: data.Dataset, method: str, budget: float | None,
              options: dict[str, Any], spec: TrainingSpec, args: argparse.Namespace) -> tuple[Row, methods.Pruned]:
    start = time.perf_counter()
    pruned = methods.prune(fresh(network, ds, args.seed), ds, method, budget, options, spec, args.seed,
                           torch.device(args.device))
    row = row_of(part, network, pruned, label, time.perf_counter() - start, ds, dict(pruned.details))
    progress(row)
    return row, pruned


def progress(row: Row) -> None:
    print(f"  done {row.network} {row.label}: test {row.test_acc:.2f} %, val {row.val_acc:.2f} %, "
          f"kept {row.kept_fraction:.4f}, {row.wall_s:.0f} s", flush=True)


def mmacs(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}"


def table(rows: list[Row], title: str) -> str:
    head = ("| network | method | test acc % | val acc % | kept | dense MMACs | sparse MMACs | params (non-zero) "
            "| epochs | wall s |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [f"| {r.network} | {r.label} | {r.test_acc:.2f} | {r.val_acc:.2f} | {r.kept_fraction:.4f} "
             f"| {mmacs(r.macs)} | {mmacs(r.sparse_macs)} | {r.nonzero_params or r.params:,} | {r.epochs} "
             f"| {r.wall_s:.0f} |" for r in rows]
    return "\n".join([f"\n### {title}\n", head, *lines, ""])


def emit(rows: list[Row], title: str) -> None:
    print(table(rows, title), flush=True)


# ------------------------------------------------------------------------------------------------ parts


def part_a(ds: data.Dataset, args: argparse.Namespace) -> list[Row]:
    spec = TrainingSpec(epochs=args.epochs_masks, batch_size=args.batch_size, train_limit=args.train_limit)
    rows: list[Row] = []
    for network in ("conv2", "conv4"):
        print(f"part a, {network}: {args.epochs_masks} epochs, batch {args.batch_size}", flush=True)
        aslp, _ = run_prune("a", network, "ASLP (lr 50)", ds, "aslp", None, {}, spec, args)
        keep = aslp.kept_fraction if args.edgepopup_keep == "aslp" else float(args.edgepopup_keep)
        ep, _ = run_prune("a", network, f"edge-popup (k {keep:.3f})", ds, "edgepopup", keep, {}, spec, args)
        sm, _ = run_prune("a", network, "Supermask (lr 50)", ds, "supermask", None, {}, spec, args)
        rows += [aslp, ep, sm]
        if args.supermask_lr is not None:
            extra, _ = run_prune("a", network, f"Supermask (lr {args.supermask_lr:g}, extra)", ds, "supermask", None,
                                 {"lr": args.supermask_lr}, spec, args)
            rows.append(extra)
    emit(rows, f"(a) masks over frozen random weights, {args.epochs_masks} epochs, batch {args.batch_size}")
    return rows


def part_b(ds: data.Dataset, args: argparse.Namespace) -> list[Row]:
    spec = TrainingSpec(epochs=args.epochs_reparam, batch_size=args.batch_size, lr=args.lr,
                        train_limit=args.train_limit)
    device = torch.device(args.device)
    print(f"part b, conv4: {args.epochs_reparam} epochs, batch {args.batch_size}, lr {args.lr}", flush=True)
    start = time.perf_counter()
    dense_model = fresh("conv4", ds, args.seed)
    fitted = fit(dense_model, ds, spec, args.seed, device)
    dense = measure(dense_model, ds, spec, device, fitted.train_loss, fitted.epochs, start)
    c = costs.count(dense_model, ds.input_shape)
    rows = [Row("b", "conv4", "dense", "dense (no pruning)", dense.val_acc, dense.test_acc, 1.0, c.macs, None,
                c.params, None, dense.epochs, time.perf_counter() - start)]
    progress(rows[0])
    for budget in BUDGETS:
        rows += magnitude_rows(dense_model, dense, budget, spec, ds, args)
        row, pruned = run_prune("b", "conv4", f"reparam {pct(budget)} (lam {args.lam:g})", ds, "reparam", budget,
                                {"lam": args.lam}, spec, args)
        row.details["budget"] = budget
        rows.append(row)
    emit(rows, f"(b) Conv4, {args.epochs_reparam} epochs (+{args.finetune_epochs} fine-tune), batch "
               f"{args.batch_size}, lr {args.lr}")
    return rows


def pct(budget: float) -> str:
    return f"{round(100 * (1 - budget))} % pruned"


def magnitude_rows(trained: torch.nn.Module, dense: Any, budget: float, spec: TrainingSpec, ds: data.Dataset,
                   args: argparse.Namespace) -> list[Row]:
    rows = []
    for finetune in sorted({0, args.finetune_epochs}):
        start = time.perf_counter()
        opts = methods.MagnitudeOptions(finetune_epochs=finetune)
        # A copy per cut: magnitude_prune_trained zeroes weights in place.
        pruned = methods.magnitude_prune_trained(copy.deepcopy(trained), ds, budget, opts, spec, args.seed,
                                                 torch.device(args.device), dense)
        label = f"magnitude {pct(budget)}, " + (f"{finetune} ep fine-tune" if finetune else "no fine-tune")
        row = row_of("b", "conv4", pruned, label, time.perf_counter() - start, ds, {"budget": budget})
        progress(row)
        rows.append(row)
    return rows


def part_c(ds: data.Dataset, args: argparse.Namespace) -> list[Row]:
    # Both without augmentation, as in the recorded run (joint now follows the spec: augment="none" applies to both).
    spec = TrainingSpec(epochs=args.epochs_joint, batch_size=args.batch_size, lr=args.lr, augment="none",
                        train_limit=args.train_limit)
    print(f"part c, resnet20: joint budget {args.epochs_joint} epochs, batch {args.batch_size}, lr {args.lr}",
          flush=True)
    joint, pruned = run_prune("c", "resnet20", "joint (keep 0.60-0.85)", ds, "joint", JOINT_CENTRE, {}, spec, args)
    dense_spec = spec.model_copy(update={"epochs": pruned.result.epochs})
    start = time.perf_counter()
    model = fresh("resnet20", ds, args.seed)
    device = torch.device(args.device)
    result = measure(model, ds, dense_spec, device, fit(model, ds, dense_spec, args.seed, device).train_loss,
                     dense_spec.epochs, start)
    c = costs.count(model, ds.input_shape)
    dense = Row("c", "resnet20", "dense", "dense (no pruning)", result.val_acc, result.test_acc, 1.0, c.macs, None,
                c.params, None, result.epochs, time.perf_counter() - start)
    progress(dense)
    joint.details["flops_removed"] = 1 - joint.macs / dense.macs
    joint.details["params_removed"] = 1 - joint.params / dense.params
    rows = [dense, joint]
    d = pruned.details
    emit(rows, f"(c) ResNet-20, {pruned.result.epochs} epochs each (joint: {d['iterations']} iterations, epochs per "
               f"iteration by stage {d['stage_epochs']}, then {d['finetune_epochs']} fine-tune), batch "
               f"{args.batch_size}, no augmentation")
    print(f"joint: FLOPs removed {100 * joint.details['flops_removed']:.1f} %, params removed "
          f"{100 * joint.details['params_removed']:.1f} %, test acc {joint.test_acc - dense.test_acc:+.2f} points "
          "vs dense", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ main


def machine() -> dict[str, Any]:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")),
                     platform.processor())
    except OSError:
        model = platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    ds = data.load(str(args.data))
    info = machine()
    print(f"# {started:%Y-%m-%d %H:%M} UTC  {info['cpu']}  {info['cores']} cores  torch {info['torch']}  "
          f"device {args.device}  data {args.data} ({len(ds.x_train)} train / {len(ds.x_val)} val / "
          f"{len(ds.x_test)} test)", flush=True)
    rows: list[Row] = []
    for name, run in (("a", part_a), ("b", part_b), ("c", part_c)):
        if name in args.parts:
            rows += run(ds, args)
            write(args, started, info, rows, time.perf_counter() - t0)  # partial results survive a later failure
    wall = time.perf_counter() - t0
    write(args, started, info, rows, wall)
    print(f"total wall {wall:.0f} s ({wall / 60:.1f} min); numbers in {args.out}", flush=True)


def write(args: argparse.Namespace, started: datetime, info: dict[str, Any], rows: list[Row], wall: float) -> None:
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    out = {"started_utc": started.isoformat(timespec="seconds"), "wall_s": wall, "machine": info, "config": config,
           "rows": [asdict(r) for r in rows]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
