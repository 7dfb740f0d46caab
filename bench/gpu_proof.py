"""Every CUDA claim Dvolver makes, run in one command on one GPU machine, with the papers' mask-learning comparison.

In order, each section writing its figures as soon as it ends (so a run cut short keeps what it measured):
  1. environment: torch, CUDA and cuDNN versions, the GPU and its memory, CPU count, whether Ray is there;
  2. digits NASNet search through the real CLI (`python -m dvolver search`), 4 evaluations sharing the GPU
     (`--gpus-per-eval 0.25`), and the same spec on the CPU: wall time, evaluations/s, the device and precision
     every result recorded, worker utilisation, and the CPU / GPU ratio;
  3. determinism on CUDA: the same GPU search again, same spec and seed; candidate tables and fronts compared;
  4. a CIFAR-10-subset NASNet search at the Dvolver proxy shape (N=2 cells, F=32, 32x32) on fractional GPUs: time
     per candidate, training images/s, GPU memory per evaluation (each worker's own peak);
  5. bfloat16 autocast against float32, one candidate, same seed: speed ratio and accuracy difference;
  6. METHODS.md section 2 at the papers' settings: ASLP (mask lr 50, smart rescale, signed constant), edge-popup
     (keep 0.5 per layer) and Supermask over frozen random weights, Conv2 and Conv4, with and without augmentation,
     batch 256, constant lr, early stopping on validation accuracy with the official code's patience (100 epochs,
     best epoch restored), at least --mask-steps (15,000) steps a run; test accuracy and kept fraction per run.
     The runs go out at once to worker processes that share the GPU; how many seeds fit is decided from a
     timed calibration and printed as a plan before anything long starts.

Without Ray (the GPU machine has none, and its wheel does not fit the 64 MiB a device call may carry) the searches
run with `--executor processes`: local worker processes calling the same `evaluate` Ray workers call.

    python bench/gpu_proof.py --out /tmp/gpu_proof                 # on a CUDA machine (~6 minutes on one H200)
    python bench/gpu_proof.py --smoke --out /tmp/gpu_proof_smoke   # the same, end to end, tiny, on a CPU

Writes OUT/gpu_proof.json and OUT/gpu_proof.md. bench/gpu_carry.sh packs what the GPU machine lacks.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a source tree with nothing installed (the GPU machine)
    sys.path.insert(0, str(ROOT))

from dvolver import data  # noqa: E402
from dvolver.engine import SearchResult, result  # noqa: E402
from dvolver.evaluation import candidate_seed, evaluate  # noqa: E402
from dvolver.pruning import methods  # noqa: E402
from dvolver.spec import SearchSpec, TrainingSpec  # noqa: E402
from dvolver.store import Store  # noqa: E402
from search_spaces.backbones import build_backbone  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10_subset.npz"
MASK_METHODS = {  # METHODS.md section 2, each method's defaults (ASLP: lr 50, smart rescale, signed constant)
    "aslp": ({}, None),
    "edgepopup": ({}, 0.5),
    "supermask": ({}, None),
}


@dataclass(frozen=True)
class Sizes:
    """How big each section runs: the real run, or the smoke test's few steps."""

    digits_evaluations: int
    digits_population: int
    digits_extra: tuple[str, ...]
    cifar_evaluations: int
    cifar_extra: tuple[str, ...]
    precision_epochs: int
    precision_net: dict[str, int]
    calibration_steps: int
    mask_train_limit: int | None
    mask_batch: int
    mask_steps: int | None  # None: --mask-steps
    mask_seeds: int | None  # None: --seeds, as time allows


FULL = Sizes(24, 8, (), 8, ("--cells", "2", "--filters", "32", "--epochs", "2"), 3,
             {"cells_per_stage": 2, "filters": 32}, 20, None, 256, None, None)
SMOKE = Sizes(4, 4, ("--epochs", "1", "--train-limit", "200", "--filters", "4", "--cells", "1"), 2,
              ("--cells", "1", "--filters", "8", "--epochs", "1"), 1, {"cells_per_stage": 1, "filters": 8},
              2, None, 32, 6, 1)
SMOKE_IMAGES = (300, 100)  # train, test images of the CIFAR subset the rehearsal uses: evaluation costs most there


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_proof.json and gpu_proof.md")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, on the CPU when there is no GPU: a rehearsal")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the CIFAR-10 subset .npz")
    p.add_argument("--budget-s", type=float, default=360.0, help="wall-clock budget of the whole script")
    p.add_argument("--workers", type=int, default=4, help="evaluations sharing the GPU in the searches")
    p.add_argument("--executor", choices=("auto", "ray", "processes"), default="auto",
                   help="auto: Ray where it is installed (not with --smoke), local worker processes otherwise")
    p.add_argument("--mask-steps", type=int, default=15_000, help="step budget of each mask-learning run")
    p.add_argument("--patience", type=int, default=100, help="epochs without a new best validation accuracy "
                   "before a mask run stops (the official ASLP code: 100)")
    p.add_argument("--seeds", type=int, default=3, help="most seeds per mask configuration, if time allows")
    p.add_argument("--mask-procs", type=int, default=None, help="mask runs at once [all, up to CPU count - 2]")
    args = p.parse_args()
    if not args.data.is_file():
        p.error(f"{args.data} does not exist: give --data the CIFAR-10 subset (.npz with x_train, y_train, "
                "x_test, y_test), e.g. ../shared/data/cifar10_subset.npz")
    if not torch.cuda.is_available() and not args.smoke:
        p.error("no CUDA device: this script proves the GPU path; rehearse it on a CPU with --smoke")
    if args.executor == "auto":  # the rehearsal runs as the GPU machine, which has no Ray, will
        args.executor = "ray" if importlib.util.find_spec("ray") and not args.smoke else "processes"
    return args


class Report:
    """The figures so far; both files are rewritten after every section."""

    def __init__(self, out: Path, smoke: bool) -> None:
        self.out, self.data = out, {"smoke": smoke, "started": datetime.now(UTC).isoformat(timespec="seconds"),
                                    "sections": {}}
        out.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def add(self, name: str, figures: dict[str, Any]) -> None:
        figures["section_wall_s"] = round(figures.get("section_wall_s", 0.0), 2)
        self.data["sections"][name] = figures
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        (self.out / "gpu_proof.json").write_text(json.dumps(self.data, indent=2, default=str))
        (self.out / "gpu_proof.md").write_text(markdown(self.data))
        print(f"[{self.elapsed():6.1f} s] {name} done in {figures['section_wall_s']:.1f} s", flush=True)


# ------------------------------------------------------------------------------------------------ sections


def environment(args: argparse.Namespace) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_count": os.cpu_count(), "cpu_model": _cpu_model(), "executor": args.executor,
        "ray": importlib.util.find_spec("ray") is not None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                "gpu_multiprocessors": props.multi_processor_count, "bf16": torch.cuda.is_bf16_supported()}
    else:
        env["gpu"] = None
    return env


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cli_search(args: argparse.Namespace, workdir: Path, name: str, flags: list[str]) -> tuple[SearchResult, float]:
    """One `dvolver search` through the real CLI in a subprocess: its result read back from its store, and
    the seconds the CLI took in all."""
    db = workdir / f"{name}.db"
    cmd = [sys.executable, "-m", "dvolver", "search", "--executor", args.executor, "--workers", str(args.workers),
           "--db", str(db), "--plot", str(workdir / f"{name}.png"), "--seed", "0", *flags]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return result(Store(f"sqlite:///{db}"), 1), wall


def search_figures(found: SearchResult, cli_wall: float) -> dict[str, Any]:
    done = [c for c in found.candidates if c.status == "finished"]
    wall = found.stats.evaluation_wall_seconds
    return {
        "evaluations": len(found.candidates), "finished": len(done),
        "failed": [c.error for c in found.candidates if c.status == "failed"],
        "cli_wall_s": round(cli_wall, 2), "search_wall_s": found.stats.wall_seconds,
        "evaluation_wall_s": wall, "evaluations_per_s": round(len(done) / wall, 3) if wall else None,
        "utilisation": found.stats.utilisation, "workers": found.stats.workers,
        "devices": sorted({str(c.metrics.get("device")) for c in done}),
        "precisions": sorted({str(c.metrics.get("precision")) for c in done}),
        "gpus": sorted({str(c.metrics["gpu"]) for c in done if "gpu" in c.metrics}),
        "seconds_per_candidate": _quantiles([c.metrics["train_seconds"] for c in done]),
        "gpu_memory_peak_mib": _quantiles([c.metrics["gpu_memory_peak_mib"] for c in done
                                           if "gpu_memory_peak_mib" in c.metrics]),
        "front": [{"id": c.id, "acc": c.objectives.get("acc"), "test_acc": c.metrics.get("test_acc"),
                   "flops": c.objectives.get("flops")} for c in found.front],
    }


def _quantiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    v = sorted(values)
    return {"min": round(v[0], 3), "median": round(v[len(v) // 2], 3), "max": round(v[-1], 3), "n": len(v)}


def gpu_flag(args: argparse.Namespace) -> str:
    # Fractions pack `workers` evaluations on one GPU. A CPU rehearsal asks for none: Ray would refuse a GPU.
    return f"{1 / args.workers:g}" if torch.cuda.is_available() else "0"


def digits_flags(sizes: Sizes) -> list[str]:
    """The digits search's spec, shared by the GPU run, its CPU counterpart and the determinism rerun."""
    return ["--objectives", "acc,flops", "--evaluations", str(sizes.digits_evaluations),
            "--population", str(sizes.digits_population), *sizes.digits_extra]


def digits_searches(args: argparse.Namespace, sizes: Sizes, workdir: Path) -> tuple[dict[str, Any], SearchResult]:
    start = time.perf_counter()
    common = digits_flags(sizes)
    gpu, gpu_wall = cli_search(args, workdir, "digits_gpu", [*common, "--gpus-per-eval", gpu_flag(args)])
    cpu, cpu_wall = cli_search(args, workdir, "digits_cpu", [*common, "--gpus-per-eval", "0"])
    g, c = search_figures(gpu, gpu_wall), search_figures(cpu, cpu_wall)
    ratio = (c["evaluation_wall_s"] / g["evaluation_wall_s"]) if g["evaluation_wall_s"] else None
    return {"command_flags": [*common, "--gpus-per-eval", gpu_flag(args)], "gpu": g, "cpu": c,
            "cpu_over_gpu_wall": round(ratio, 2) if ratio else None,
            "section_wall_s": time.perf_counter() - start}, gpu


def determinism(args: argparse.Namespace, sizes: Sizes, workdir: Path, first: SearchResult) -> dict[str, Any]:
    start = time.perf_counter()
    again, _ = cli_search(args, workdir, "digits_gpu_again", [*digits_flags(sizes), "--gpus-per-eval", gpu_flag(args)])

    def table(found: SearchResult) -> list[tuple[Any, ...]]:
        return [(c.key, c.status, json.dumps(c.objectives, sort_keys=True)) for c in found.candidates]

    a, b = table(first), table(again)
    differing = [{"first": x, "again": y} for x, y in zip(a, b) if x != y]
    return {"same_candidates": a == b, "same_front": [c.key for c in first.front] == [c.key for c in again.front],
            "candidates": len(a), "differing": differing[:10], "differing_count": len(differing) + abs(len(a) - len(b)),
            "cudnn_deterministic": "set by evaluate on CUDA (no benchmark-chosen kernels)",
            "section_wall_s": time.perf_counter() - start}


def cifar_search(args: argparse.Namespace, sizes: Sizes, workdir: Path) -> dict[str, Any]:
    start = time.perf_counter()
    flags = ["--dataset", str(args.data.resolve()), "--objectives", "acc,flops",
             "--evaluations", str(sizes.cifar_evaluations), "--population", str(sizes.cifar_evaluations),
             "--gpus-per-eval", gpu_flag(args), *sizes.cifar_extra]
    found, cli_wall = cli_search(args, workdir, "cifar_gpu", flags)
    figures = search_figures(found, cli_wall)
    spec = found.spec
    train_images = len(data.load(str(args.data)).x_train)
    if spec.training.train_limit:
        train_images = min(train_images, spec.training.train_limit)
    done = [c for c in found.candidates if c.status == "finished"]
    rates = [train_images * c.metrics["epochs"] / c.metrics["train_seconds"] for c in done]
    figures |= {"command_flags": flags, "train_images": train_images, "epochs": spec.training.epochs,
                "batch_size": spec.training.batch_size, "train_images_per_s": _quantiles(rates),
                "section_wall_s": time.perf_counter() - start}
    return figures


def precision(args: argparse.Namespace, sizes: Sizes) -> dict[str, Any]:
    """One CIFAR proxy candidate trained twice through `evaluate`, autocast on and off, same seed."""
    start = time.perf_counter()
    ds = data.load(str(args.data))
    base = {"dataset": str(args.data), "space_options": sizes.precision_net,
            "resources": {"gpus_per_eval": 1.0 if torch.cuda.is_available() else 0.0},
            "training": {"epochs": sizes.precision_epochs, "keep_weights": False}}
    import numpy as np

    spec = SearchSpec.from_dict(base)
    genome = spec.search_space().sample(np.random.default_rng(0))
    seed = candidate_seed(0, "precision")
    runs = {}
    for amp in ("auto", "off"):
        s = SearchSpec.from_dict(base | {"training": base["training"] | {"amp": amp}})
        m = evaluate(genome, s, seed, ds)
        runs[amp] = {k: m.get(k) for k in ("precision", "device", "acc", "test_acc", "train_loss", "train_seconds",
                                           "gpu_memory_peak_mib")}
    auto, off = runs["auto"], runs["off"]
    return {"runs": {"autocast": auto, "float32": off},
            "speed_ratio_float32_over_autocast": round(off["train_seconds"] / auto["train_seconds"], 3),
            "val_acc_difference": round(auto["acc"] - off["acc"], 2),
            "test_acc_difference": round(auto["test_acc"] - off["test_acc"], 2),
            "note": None if torch.cuda.is_available() else "CPU: autocast never runs there, both runs are float32",
            "section_wall_s": time.perf_counter() - start}


# ------------------------------------------------------------------------------------------- mask learning


def mask_spec(augment: bool, epochs: int, batch: int, patience: int | None, train_limit: int | None) -> TrainingSpec:
    # The official ASLP harness: SGD at a constant lr, the method's own lr per parameter group, amp off (the
    # papers trained in float32), best validation epoch kept, stopped after `patience` epochs without a new best.
    return TrainingSpec(epochs=epochs, batch_size=batch, schedule="constant", patience=patience,
                        augment="crop_flip" if augment else "none", amp="off", train_limit=train_limit,
                        grad_clip=None, keep_weights=False)


def mask_run(job: dict[str, Any]) -> dict[str, Any]:
    """One mask-learning run in a worker process: method, network, augmentation, seed; returns its row."""
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ds = data.load(job["data"])
    options, budget = MASK_METHODS[job["method"]]
    cfg = mask_spec(job["augment"], job["epochs"], job["batch"], job["patience"], job["train_limit"])
    torch.manual_seed(job["seed"])
    model = build_backbone(job["network"], ds.input_shape, ds.num_classes)
    start = time.perf_counter()
    pruned = methods.prune(model, ds, job["method"], budget, options, cfg, job["seed"], device)
    wall = time.perf_counter() - start
    d = pruned.details
    return {**{k: job[k] for k in ("network", "method", "augment", "seed")},
            "test_acc": round(pruned.result.test_acc, 2), "val_acc": round(pruned.result.val_acc, 2),
            "kept_fraction": round(pruned.kept_fraction, 4), "epochs": pruned.result.epochs, "steps": d.get("steps"),
            "best_epoch": d.get("best_epoch"), "stopped_early": d.get("stopped_early"), "wall_s": round(wall, 1),
            "steps_per_s": round(d["steps"] / wall, 1) if d.get("steps") else None,
            "gpu_memory_peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda"
            else None}


def calibrate(args: argparse.Namespace, sizes: Sizes) -> dict[tuple[str, str], float]:
    """Seconds per training step of each (network, method), one process, after a warm-up."""
    timing = {}
    for network in ("conv2", "conv4"):
        for method in MASK_METHODS:
            job = {"data": str(args.data), "method": method, "network": network, "augment": True, "seed": 0,
                   "epochs": 1, "batch": sizes.mask_batch, "patience": None,
                   "train_limit": sizes.mask_batch * sizes.calibration_steps}
            if not timing:
                mask_run(job)  # warm-up: CUDA context, cuDNN handles, allocator
            row = mask_run(job)
            timing[(network, method)] = row["wall_s"] / max(1, row["steps"])
    return timing


# How much of `processes`-fold parallelism the plan counts on: processes sharing one GPU time-slice it, so
# they overlap only while each waits on its own Python and launches; a plan that assumed perfect overlap
# would risk every run being cut at the deadline.
OVERLAP_EFFICIENCY = 0.5


def mask_learning(args: argparse.Namespace, sizes: Sizes, deadline: float) -> dict[str, Any]:
    start = time.perf_counter()
    ds = data.load(str(args.data))
    train = len(ds.x_train) if sizes.mask_train_limit is None else min(len(ds.x_train), sizes.mask_train_limit)
    steps_per_epoch = math.ceil(train / sizes.mask_batch)
    steps = sizes.mask_steps or args.mask_steps
    most_seeds = sizes.mask_seeds or args.seeds
    epochs = max(1, math.ceil(steps / steps_per_epoch))
    timing = calibrate(args, sizes)
    configs = [(n, m, aug) for n in ("conv2", "conv4") for m in MASK_METHODS for aug in (True, False)]
    procs = args.mask_procs or max(1, min(len(configs) * most_seeds, (os.cpu_count() or 2) - 2))
    left = deadline - time.perf_counter() - 15  # the pool's start and the last results
    speedup = max(1.0, OVERLAP_EFFICIENCY * min(procs, len(configs)))
    per_seed = sum(timing[(n, m)] * epochs * steps_per_epoch for n, m, _ in configs)
    if per_seed / speedup > left:  # not even one seed at the full step budget: shorten, and say so below
        epochs = max(1, int(epochs * left * speedup / per_seed))
        per_seed = sum(timing[(n, m)] * epochs * steps_per_epoch for n, m, _ in configs)
    seeds = max(1, min(most_seeds, int(left * speedup / max(per_seed, 1e-9))))
    plan = {"train_images": train, "batch": sizes.mask_batch, "steps_per_epoch": steps_per_epoch,
            "epochs_max": epochs, "steps_max": epochs * steps_per_epoch, "patience_epochs": args.patience,
            "seeds": seeds, "runs": len(configs) * seeds, "processes": procs,
            "calibrated_s_per_step": {f"{n}/{m}": round(t, 5) for (n, m), t in timing.items()},
            "overlap_efficiency_assumed": OVERLAP_EFFICIENCY,
            "estimate_s": round(per_seed * seeds / speedup, 1), "estimate_s_if_serial": round(per_seed * seeds, 1),
            "seconds_left": round(left, 1), "steps_requested": steps,
            "below_requested_steps": epochs * steps_per_epoch < steps}
    print("mask-learning plan: " + json.dumps(plan), flush=True)
    jobs = [{"data": str(args.data), "method": m, "network": n, "augment": aug, "seed": s, "epochs": epochs,
             "batch": sizes.mask_batch, "patience": args.patience, "train_limit": sizes.mask_train_limit}
            for s in range(seeds) for n, m, aug in configs]
    rows, cut = [], []
    pool = cf.ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn"))
    futures = {pool.submit(mask_run, job): job for job in jobs}
    try:
        for future in cf.as_completed(futures, timeout=max(1.0, deadline - time.perf_counter())):
            rows.append(future.result())
            r = rows[-1]
            print(f"  {r['network']} {r['method']} aug={r['augment']} seed {r['seed']}: test {r['test_acc']} %, "
                  f"kept {r['kept_fraction']}, {r['steps']} steps in {r['wall_s']} s", flush=True)
    except cf.TimeoutError:
        cut = [job for future, job in futures.items() if not future.done()]
        print(f"  deadline: {len(cut)} mask run(s) cut before they finished", flush=True)
    finally:
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            p.terminate()
    rows.sort(key=lambda r: (r["network"], not r["augment"], r["method"], r["seed"]))
    return {"plan": plan, "rows": rows, "cut_by_deadline": [{k: j[k] for k in ("network", "method", "augment", "seed")}
                                                           for j in cut],
            "summary": mask_summary(rows, plan["steps_max"]), "section_wall_s": time.perf_counter() - start}


def mask_summary(rows: list[dict[str, Any]], steps_max: int) -> list[dict[str, Any]]:
    """Mean test accuracy and kept fraction per (network, augmentation, method), and whether ASLP won there."""
    out = []
    groups: dict[tuple[str, bool], dict[str, list[dict[str, Any]]]] = {}
    for r in rows:
        groups.setdefault((r["network"], r["augment"]), {}).setdefault(r["method"], []).append(r)
    for (network, augment), by_method in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
        means = {m: sum(r["test_acc"] for r in rs) / len(rs) for m, rs in by_method.items()}
        entry = {"network": network, "augment": augment, "seeds": max(len(rs) for rs in by_method.values()),
                 "test_acc": {m: round(v, 2) for m, v in means.items()},
                 "kept_fraction": {m: round(sum(r["kept_fraction"] for r in rs) / len(rs), 4)
                                   for m, rs in by_method.items()},
                 "min_steps": min(r["steps"] for rs in by_method.values() for r in rs),
                 "stopped_by_patience": sum(bool(r["stopped_early"]) for rs in by_method.values() for r in rs)}
        if "aslp" in means and len(means) > 1:
            rivals = {m: v for m, v in means.items() if m != "aslp"}
            entry["aslp_beats"] = {m: means["aslp"] > v for m, v in rivals.items()}
        entry["full_length"] = all(r["steps"] >= steps_max or r["stopped_early"]
                                   for rs in by_method.values() for r in rs)
        out.append(entry)
    return out


# ----------------------------------------------------------------------------------------------- markdown


def markdown(report: dict[str, Any]) -> str:
    s = report["sections"]
    lines = [f"# GPU proof ({'smoke rehearsal' if report['smoke'] else 'full run'}), {report['started']}", ""]
    if env := s.get("environment"):
        lines += [f"- GPU: {env.get('gpu')} ({env.get('gpu_memory_gib')} GiB); torch {env['torch']}, CUDA "
                  f"{env['cuda']}, cuDNN {env['cudnn']}; {env['cpu_count']} CPUs ({env['cpu_model']}); executor "
                  f"{env['executor']} (Ray installed: {env['ray']})", ""]
    if d := s.get("digits_search"):
        lines += ["## Digits NASNet search, GPU vs CPU, same spec", "",
                  f"`dvolver search {' '.join(d['command_flags'])}` (CPU run: `--gpus-per-eval 0`)", "",
                  "| run | wall s (evaluations) | evaluations/s | utilisation | s per candidate (median) | devices | "
                  "precisions | GPU MiB per evaluation (max) |", "|---|---|---|---|---|---|---|---|"]
        for name in ("gpu", "cpu"):
            r = d[name]
            mem = (r["gpu_memory_peak_mib"] or {}).get("max", "-")
            lines.append(f"| {name} | {r['evaluation_wall_s']} ({r['finished']}/{r['evaluations']}) | "
                         f"{r['evaluations_per_s']} | {r['utilisation']} | "
                         f"{(r['seconds_per_candidate'] or {}).get('median')} | {', '.join(r['devices'])} | "
                         f"{', '.join(r['precisions'])} | {mem} |")
        lines += ["", f"CPU wall / GPU wall: **{d['cpu_over_gpu_wall']}**", ""]
    if det := s.get("determinism"):
        lines += ["## Determinism on CUDA", "", f"Same spec and seed twice: same candidate table "
                  f"**{det['same_candidates']}**, same front **{det['same_front']}** ({det['candidates']} candidates, "
                  f"{det['differing_count']} differing).", ""]
    if c := s.get("cifar_search"):
        lines += ["## CIFAR-10 subset NASNet search (N=2, F=32, 32x32), fractional GPUs", "",
                  f"`dvolver search {' '.join(c['command_flags'])}`", "",
                  f"- {c['finished']}/{c['evaluations']} finished, devices {', '.join(c['devices'])}, precisions "
                  f"{', '.join(c['precisions'])}, utilisation {c['utilisation']}",
                  f"- seconds per candidate: {c['seconds_per_candidate']}",
                  f"- training images/s per evaluation: {c['train_images_per_s']} ({c['train_images']} images x "
                  f"{c['epochs']} epochs, batch {c['batch_size']})",
                  f"- GPU memory per evaluation (MiB, each worker's peak): {c['gpu_memory_peak_mib']}", ""]
    if p := s.get("precision"):
        a, f = p["runs"]["autocast"], p["runs"]["float32"]
        lines += ["## Autocast vs float32, one candidate, same seed", "",
                  "| precision | train s | val acc % | test acc % |", "|---|---|---|---|",
                  f"| {a['precision']} | {a['train_seconds']:.2f} | {a['acc']:.2f} | {a['test_acc']:.2f} |",
                  f"| {f['precision']} | {f['train_seconds']:.2f} | {f['acc']:.2f} | {f['test_acc']:.2f} |", "",
                  f"float32 / autocast time: **{p['speed_ratio_float32_over_autocast']}**; test accuracy difference "
                  f"{p['test_acc_difference']} points" + (f" ({p['note']})" if p["note"] else ""), ""]
    if m := s.get("mask_learning"):
        plan = m["plan"]
        lines += ["## Mask learning over frozen random weights (METHODS.md section 2)", "",
                  f"{plan['train_images']} training images, batch {plan['batch']}, up to {plan['steps_max']} steps "
                  f"({plan['epochs_max']} epochs), patience {plan['patience_epochs']} epochs, constant lr, float32, "
                  f"{plan['seeds']} seed(s), {plan['processes']} processes sharing the device. Test split "
                  "accuracy.", "", "| network | augment | seeds | ASLP test % | edge-popup test % | Supermask test % | "
                  "kept ASLP / EP / SM | ASLP beats | min steps |", "|---|---|---|---|---|---|---|---|---|"]
        for e in m["summary"]:
            t, k = e["test_acc"], e["kept_fraction"]
            beats = ", ".join(f"{r}: {'yes' if v else 'no'}" for r, v in e.get("aslp_beats", {}).items())
            lines.append(f"| {e['network']} | {e['augment']} | {e['seeds']} | {t.get('aslp')} | {t.get('edgepopup')} | "
                         f"{t.get('supermask')} | {k.get('aslp')} / {k.get('edgepopup')} / {k.get('supermask')} | "
                         f"{beats} | {e['min_steps']} |")
        wins = [v for e in m["summary"] for v in e.get("aslp_beats", {}).values()]
        lines += ["", f"ASLP beats its rival in **{sum(wins)} of {len(wins)}** (network, augmentation, rival) "
                  "comparisons. The papers (full CIFAR-10, 50,000 images): with augmentation Conv2 edge-popup 71.7 vs "
                  "ASLP 77.5; without, Conv2 Supermask 66.0 vs ASLP 67.1."]
        if plan["below_requested_steps"]:
            lines.append(f"**Shortened to fit the budget**: {plan['steps_max']} steps a run, below the "
                         f"{plan['steps_requested']} asked for.")
        if m["cut_by_deadline"]:
            lines.append(f"Cut by the deadline before finishing: {len(m['cut_by_deadline'])} run(s).")
        lines.append("")
    lines.append(f"Total wall: {report.get('elapsed_s')} s")
    return "\n".join(lines) + "\n"


def smoke_subset(source: Path, workdir: Path) -> Path:
    """The first images of the CIFAR subset, so that the rehearsal's evaluations take seconds on a CPU."""
    import numpy as np

    n_train, n_test = SMOKE_IMAGES
    with np.load(source) as z:
        arrays = {"x_train": z["x_train"][:n_train], "y_train": z["y_train"][:n_train],
                  "x_test": z["x_test"][:n_test], "y_test": z["y_test"][:n_test]}
    path = workdir / "cifar_smoke.npz"
    np.savez(path, **arrays)
    return path


def main() -> None:
    args = parse_args()
    sizes = SMOKE if args.smoke else FULL
    report = Report(args.out, args.smoke)
    deadline = time.perf_counter() + args.budget_s
    workdir = args.out / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        args.data = smoke_subset(args.data, workdir)
    print(f"plan: environment, digits search GPU + CPU ({sizes.digits_evaluations} evaluations each), determinism "
          f"rerun, CIFAR search ({sizes.cifar_evaluations} evaluations), autocast vs float32, then mask learning "
          f"in what is left of {args.budget_s:.0f} s", flush=True)
    env = environment(args)
    report.add("environment", env | {"section_wall_s": 0.0})
    digits, first = digits_searches(args, sizes, workdir)
    report.add("digits_search", digits)
    report.add("determinism", determinism(args, sizes, workdir, first))
    report.add("cifar_search", cifar_search(args, sizes, workdir))
    report.add("precision", precision(args, sizes))
    report.add("mask_learning", mask_learning(args, sizes, deadline))
    print(markdown(report.data))


if __name__ == "__main__":
    main()
