"""The `dvolver` command line (typer + rich)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import typer
from rich.table import Table
from typer.core import TyperGroup

from .cli_render import CHECKED, LiveProgress, console, err, print_error, print_front, print_run_summary, write_plot
from .errors import ConflictError, DvolverError
from .run_stats import RunStats


class _ErrorBoundary(TyperGroup):
    """The one place a DvolverError becomes what the user sees: its message on one line, and exit 2.
    Sub-commands (token, bench) run inside the top group's invoke, so this covers them too."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DvolverError as exc:
            print_error(str(exc))
            raise typer.Exit(2) from None

app = typer.Typer(cls=_ErrorBoundary, add_completion=False, no_args_is_help=True,
                  help="Multi-objective neural architecture search: Pareto fronts of accuracy against cost.")

# Options several commands share.
DB = typer.Option(None, envvar="DVOLVER_DB",
                  help="SQLite file or SQLAlchemy URL (default: $DVOLVER_DB, else ~/.dvolver/dvolver.db)")
WORKERS = typer.Option(2, help="parallel evaluations on a local Ray (or local processes)")
RAY_ADDRESS = typer.Option(None, envvar="RAY_ADDRESS", help="join an existing Ray cluster")
EXECUTOR = typer.Option("auto", help="auto (Ray; inline for table look-ups), ray, processes (local worker "
                        "processes, no Ray) or inline")
PLOT = typer.Option(None, help="where to write the front plot [dvolver_front_<id>.png]")


# Where each `dvolver search` flag goes in a SearchSpec.
FLAG_FIELDS: dict[str, tuple[str, ...]] = {
    "name": ("name",), "space": ("space",), "dataset": ("dataset",), "algorithm": ("algorithm",),
    "population": ("population",), "batch": ("batch",), "evaluations": ("evaluations",), "seed": ("seed",),
    "epochs": ("training", "epochs"), "batch_size": ("training", "batch_size"), "lr": ("training", "lr"),
    "train_limit": ("training", "train_limit"),
    "cpus_per_eval": ("resources", "cpus_per_eval"), "gpus_per_eval": ("resources", "gpus_per_eval"),
    "max_flops": ("constraints", "max_flops"), "max_macs": ("constraints", "max_macs"),
    "max_params": ("constraints", "max_params"), "max_latency_ms": ("constraints", "max_latency_ms"),
    "min_acc": ("constraints", "min_acc"),
    "table": ("space_options", "table"), "cells": ("space_options", "cells_per_stage"),
    "filters": ("space_options", "filters"), "channels": ("space_options", "channels"),
    "time_limit": ("time_limit_s",),
}


def _floats(flag: str, text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DvolverError(f"--{flag} takes comma-separated numbers, for example 0.1,0.05,0.03; got {text!r}") from None


def _spec_dict(spec_file: Path | None, objectives: str | None, prune: str | None = None,
               budgets: str | None = None, early_stopping: str | None = None, **flags: Any) -> dict[str, Any]:
    """The spec file's fields, overridden by the flags given on the command line."""
    values: dict[str, Any] = {}
    if spec_file is not None:
        values = _read_json(spec_file, "spec")
    if objectives is not None:
        values["objectives"] = [o.strip() for o in objectives.split(",") if o.strip()]
    if prune is not None:
        values.setdefault("pruning", {})["methods"] = [m.strip() for m in prune.split(",") if m.strip()]
    if budgets is not None:
        values.setdefault("pruning", {})["budgets"] = _floats("budgets", budgets)
    if early_stopping is not None:
        values["early_stopping"] = _early_stopping(early_stopping)
    for flag, path in FLAG_FIELDS.items():
        if flags[flag] is not None:
            target = values
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = flags[flag]
    return values


def _early_stopping(text: str) -> dict[str, Any]:
    """--early-stopping METHOD[,min_epochs=N][,eta=N][,max_epochs=N][,tie_break=NAME], e.g. 'asha' or
    'sha,eta=2'. The spec checks the values; this only reads them."""
    method, *rest = [part.strip() for part in text.split(",")]
    values: dict[str, Any] = {"method": method}
    for part in rest:
        name, _, value = (s.strip() for s in part.partition("="))
        number = value.lstrip("-").isdigit()
        if not (name in ("min_epochs", "eta", "max_epochs") and number or name == "tie_break" and value):
            raise DvolverError(f"--early-stopping: cannot read {part!r}; give METHOD then any of min_epochs=N, eta=N, "
                               "max_epochs=N, tie_break=NAME, comma-separated, e.g. 'sha,min_epochs=1,eta=3'")
        values[name] = int(value) if number else value
    return values


@app.command()
def search(
    objectives: str = typer.Option(None, help="comma-separated, among acc, flops, macs, params, latency [acc,flops]"),
    space: str = typer.Option(None, help="nasnet, nb201, or a backbone to prune (conv4, resnet20, ...) [nasnet]"),
    dataset: str = typer.Option(None, help="'digits' (bundled), an .npz file or a CIFAR-10 python folder [digits]"),
    table: str = typer.Option(None, help="nb201: CSV of measured results; candidates are looked up, not trained"),
    algorithm: str = typer.Option(None, help="surrogate, nsga2, random or grid [surrogate]"),
    prune: str = typer.Option(None, help="pruning methods to search beside the unpruned networks, comma-separated: "
                              "aslp, edgepopup, supermask, reparam, magnitude, joint"),
    budgets: str = typer.Option(None, help="with --prune: fractions kept, comma-separated [0.5,0.2,0.1,0.05,0.03]"),
    population: int = typer.Option(None, help="population size / candidates per generation [12]"),
    batch: int = typer.Option(None, help="surrogate: candidates trained at a time after the first population; "
                              "a multiple of --workers keeps them busy [population // 4]"),
    evaluations: int = typer.Option(None, help="budget: candidates trained or looked up [40]"),
    early_stopping: str = typer.Option(None, help="train in rungs and stop the hopeless early: sha or asha, then any "
                                       "of min_epochs=N, eta=N, max_epochs=N, tie_break=crowding|hypervolume|"
                                       "surrogate, e.g. 'asha,eta=3' [off]"),
    time_limit: float = typer.Option(None, help="seconds: once past, ask no new candidate, finish those in flight, "
                                     "and record that the limit was hit (the front then depends on the machine)"),
    epochs: int = typer.Option(None, help="proxy training epochs per candidate [5]"),
    batch_size: int = typer.Option(None, help="training batch size [128]"),
    lr: float = typer.Option(None, help="peak learning rate [0.1]"),
    train_limit: int = typer.Option(None, help="train on a fixed random N of the training images"),
    seed: int = typer.Option(None, help="the same spec and seed give the same front [0]"),
    cells: int = typer.Option(None, help="cells per stage (N)"),
    filters: int = typer.Option(None, help="nasnet: initial filters (F)"),
    channels: int = typer.Option(None, help="nb201: initial channels (C)"),
    max_flops: float = typer.Option(None, help="constraint: at most this many FLOPs"),
    max_macs: float = typer.Option(None, help="constraint: at most this many MACs"),
    max_params: float = typer.Option(None, help="constraint: at most this many parameters"),
    max_latency_ms: float = typer.Option(None, help="constraint: at most this CPU latency (ms, batch 1)"),
    min_acc: float = typer.Option(None, help="constraint: at least this validation accuracy (%)"),
    name: str = typer.Option(None, help="a name to find the search by"),
    spec_file: Path = typer.Option(None, "--spec", help="a JSON SearchSpec; flags override its fields"),
    cpus_per_eval: int = typer.Option(None, help="CPU cores (and torch threads) per evaluation [1]"),
    gpus_per_eval: float = typer.Option(None, help="GPUs per evaluation, fractions allowed [0]"),
    workers: int = WORKERS,
    ray_address: str = RAY_ADDRESS,
    executor: str = EXECUTOR,
    db: str = DB,
    plot: Path = PLOT,
    server: str = typer.Option(None, envvar="DVOLVER_SERVER",
                               help="submit to a Dvolver service at this URL and follow it, instead of running here"),
    token: str = typer.Option(None, envvar="DVOLVER_TOKEN", help="the API token for --server"),
) -> None:
    """Run a search to its budget, then print its Pareto front and write a plot of it."""
    from .spec import SearchSpec

    flags = dict(locals())
    for key in ("workers", "ray_address", "executor", "db", "plot", "server", "token"):
        flags.pop(key)
    if server:
        _search_on_server(server, token, _spec_dict(**flags))
        return
    spec = SearchSpec.from_dict(_spec_dict(**flags))
    _run_local(spec, workers, ray_address, executor, db, plot)


def _run_local(spec: Any, workers: int, ray_address: str | None, executor: str, db: str | None,
               plot: Path | None) -> None:
    from .api import run_search

    live = LiveProgress(spec.evaluations)
    created: list[int] = []

    def announce(search_id: int) -> None:
        created.append(search_id)
        live.bar.start()
        source = f"table {spec.space_options['table']}" if spec.table_mode else spec.dataset
        pruning = f" pruned by {','.join(spec.pruning.methods)}" if spec.pruning else ""
        err.print(f"search {search_id}: {spec.space}{pruning} on {source}, objectives {','.join(spec.objectives)}, "
                  f"{spec.evaluations} evaluations, seed {spec.seed}", highlight=False)

    _run_with_progress(lambda: run_search(spec, db=db, executor=executor, workers=workers, ray_address=ray_address,
                                          on_progress=live, on_created=announce), live, created, db, plot)


@app.command()
def prune(
    backbone: str = typer.Option(..., help="the network: lenet300, conv2, conv4, conv6, vgg11, vgg16, vgg19, "
                                 "resnet20, resnet56 or resnet18"),
    method: str = typer.Option(..., help="aslp, edgepopup, supermask, reparam, magnitude or joint"),
    budgets: str = typer.Option("0.1,0.05,0.03", help="fractions kept, comma-separated; aslp and supermask "
                                "learn their own and ignore this"),
    dataset: str = typer.Option("digits", help="'digits' (bundled), an .npz file or a CIFAR-10 python folder"),
    dense: bool = typer.Option(False, "--dense", help="also train the unpruned network, as a reference on the front"),
    options: str = typer.Option(None, help="the method's hyperparameters as JSON, for example '{\"lam\": 10}'"),
    objectives: str = typer.Option("acc,flops", help="comma-separated, among acc, flops, macs, params, latency"),
    epochs: int = typer.Option(None, help="training epochs of every run [5]"),
    batch_size: int = typer.Option(None, help="training batch size [128]"),
    lr: float = typer.Option(None, help="peak learning rate of the weights [0.1]"),
    train_limit: int = typer.Option(None, help="train on a fixed random N of the training images"),
    seed: int = typer.Option(0, help="the same seed gives the same networks and masks"),
    workers: int = WORKERS,
    ray_address: str = RAY_ADDRESS,
    executor: str = EXECUTOR,
    db: str = DB,
    plot: Path = PLOT,
) -> None:
    """Prune one backbone with one method at several budgets, then print the front of what it kept."""
    from .pruning.registry import METHODS
    from .spec import SearchSpec

    values: dict[str, Any] = {"space": backbone, "dataset": dataset, "algorithm": "grid", "seed": seed,
                              "objectives": [o.strip() for o in objectives.split(",") if o.strip()],
                              "pruning": {"methods": [method], "budgets": _floats("budgets", budgets),
                                          "include_unpruned": dense}}
    if options is not None:
        try:
            values["pruning"]["options"] = {method: json.loads(options)}
        except ValueError as exc:
            raise DvolverError(f"--options must be a JSON object of {method}'s hyperparameters: {exc}") from None
    training = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "train_limit": train_limit}
    values["training"] = {k: v for k, v in training.items() if v is not None}
    runs = len(values["pruning"]["budgets"]) if method in METHODS and METHODS[method].takes_budget else 1
    values["evaluations"], values["population"] = runs + dense, max(2, runs + dense)
    spec = SearchSpec.from_dict(values)
    _run_local(spec, workers, ray_address, executor, db, plot)


def _search_on_server(server: str, token: str | None, spec: dict[str, Any]) -> None:
    """Submits the spec (the service validates it) and follows the search's events to its end."""
    from .client import ServiceClient

    client = ServiceClient(server, token)
    submitted = client.submit(spec)
    search_id = submitted["id"]
    err.print(f"search {search_id} queued on {client.url} (objectives {','.join(submitted['objectives'])}, "
              f"{submitted['progress']['budget']} evaluations)", highlight=False)
    live = LiveProgress(submitted["progress"]["budget"])
    live.bar.start()
    shown = 0.0
    try:
        try:
            for kind, _ in client.events(search_id):
                if kind in ("candidate", "generation", "status", "end") and time.monotonic() - shown > 0.5:
                    shown = time.monotonic()
                    live(client.progress(search_id))
            result = client.result(search_id)
        finally:
            live.bar.stop()
    except KeyboardInterrupt:
        err.print(f"\nstopped following; search {search_id} goes on at {client.url} "
                  f"(cancel it with POST /searches/{search_id}/cancel)")
        raise typer.Exit(130) from None
    if result.status != "finished":
        raise DvolverError(f"search {search_id} {result.status}" + (f": {result.error}" if result.error else ""))
    print_front(result, "table")
    err.print(f"front of search {search_id}: {client.url}/#/searches/{search_id}", highlight=False)


@app.command()
def resume(
    search_id: int = typer.Argument(..., help="the search to continue"),
    workers: int = WORKERS,
    ray_address: str = RAY_ADDRESS,
    executor: str = EXECUTOR,
    db: str = DB,
    plot: Path = PLOT,
) -> None:
    """Continue an interrupted search; finished evaluations are reused, never retrained."""
    from .api import resume_search
    from .store import Store

    budget = Store(db).get_search(search_id).spec["evaluations"]
    live = LiveProgress(budget)
    live.bar.start()
    _run_with_progress(lambda: resume_search(search_id, db=db, executor=executor, workers=workers,
                                             ray_address=ray_address, on_progress=live),
                       live, [search_id], db, plot)


def _run_with_progress(job: Any, live: LiveProgress, created: list[int], db: str | None, plot: Path | None) -> None:
    try:
        try:
            result = job()
        finally:
            live.bar.stop()
    except KeyboardInterrupt:
        if created:
            err.print(f"\nsearch {created[0]} interrupted; its finished evaluations are saved. "
                      f"Continue with: dvolver resume {created[0]}" + (f" --db {db}" if db else ""))
        raise typer.Exit(130) from None
    print_front(result, "table")
    write_plot(result, plot)
    print_run_summary(result.stats)


def _stored_result(search_id: int, db: str | None) -> Any:
    from .engine import result
    from .store import Store

    return result(Store(db), search_id)


@app.command()
def front(
    search_id: int = typer.Argument(..., help="the search"),
    format: str = typer.Option("table", "--format", "-f", help="table, json or csv"),
    db: str = DB,
    plot: Path = typer.Option(None, help="also write the front plot here"),
) -> None:
    """Print a search's Pareto front."""
    if format not in ("table", "json", "csv"):
        raise DvolverError(f"unknown format {format!r}; choose table, json or csv")
    res = _stored_result(search_id, db)
    print_front(res, format)
    if plot is not None:
        write_plot(res, plot)


@app.command("export")
def export_command(
    search_id: int = typer.Argument(..., help="the search"),
    candidate_id: int = typer.Argument(..., help="the candidate (an id from `dvolver front`)"),
    format: str = typer.Option("genotype", "--format", "-f",
                               help="genotype, state_dict, sparse (masked weights as sparse tensors), torch_export "
                               "or onnx"),
    output: Path = typer.Option(None, "--output", "-o", help="where to write it [search<S>-candidate<C>.<ext>]"),
    db: str = DB,
) -> None:
    """Write a candidate out as a file; networks are loaded back and checked against the original."""
    from .export import export_candidate
    from .store import Store

    out = export_candidate(Store(db), search_id, candidate_id, format)
    path = output or Path(out.filename)
    path.write_bytes(out.data)
    checked = f"; its outputs match {CHECKED[out.checked_against]}" if out.checked_against else ""
    err.print(f"{format} of candidate {candidate_id} written to {path} ({len(out.data)} bytes){checked}",
              highlight=False)


@app.command("list")
def list_searches(
    status: str = typer.Option(None, help="only searches with this status"),
    db: str = DB,
) -> None:
    """List the searches in the store."""
    from .store import Store

    store = Store(db)
    table = Table(title=f"searches in {store.display_url}")
    for column in ("id", "name", "status", "space", "objectives", "evaluations", "front", "created"):
        table.add_column(column)
    for s in store.list_searches(status):
        stats = RunStats.from_dict(s.stats)
        table.add_row(str(s.id), s.name or "", s.status, s.spec["space"], ",".join(s.spec["objectives"]),
                      f"{stats.evaluations}/{s.spec['evaluations']}", str(stats.front_size) if s.stats else "-",
                      s.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@app.command()
def show(
    search_id: int = typer.Argument(..., help="the search"),
    db: str = DB,
) -> None:
    """Show a search: its spec, status, progress and timings."""
    from .store import Store

    s = Store(db).get_search(search_id)
    stats = RunStats.from_dict(s.stats).summary()
    console.print_json(json.dumps({
        "id": s.id, "name": s.name, "status": s.status, "error": s.error, "seed": s.seed,
        "created_at": s.created_at.isoformat(), "started_at": s.started_at and s.started_at.isoformat(),
        "finished_at": s.finished_at and s.finished_at.isoformat(), "stats": stats, "spec": s.spec,
        "versions": s.versions,
    }))


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on; beyond loopback, reads need a token"),
    port: int = typer.Option(8000, help="port to listen on"),
    db: str = DB,
    runners: int = typer.Option(1, help="runner processes to start beside the API (0: run them elsewhere)"),
    workers: int = WORKERS,
    ray_address: str = RAY_ADDRESS,
    open_reads: bool = typer.Option(None, "--open-reads/--closed-reads",
                                    help="let requests without a token read [open on loopback, closed otherwise]"),
    max_population: int = typer.Option(256, help="largest population a submitted search may ask for"),
    max_evaluations: int = typer.Option(10_000, help="largest budget a submitted search may ask for"),
    max_epochs: int = typer.Option(200, help="most training epochs a submitted search may ask for"),
    max_concurrent: int = typer.Option(4, help="queued + running searches one owner may have"),
    max_final_epochs: int = typer.Option(600, help="most epochs a final training may ask for"),
    max_trainings: int = typer.Option(8, help="queued + running final trainings one owner may have"),
    data_root: list[Path] = typer.Option(None, "--data-root", help="a folder whose files (datasets, tables) "
                                         "submitted searches may name; repeatable [~/.dvolver/data]"),
) -> None:
    """Serve the REST API and the dashboard, with runner processes that run the submitted searches."""
    import signal
    import subprocess

    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    from .store import resolve_url

    url = resolve_url(db)
    settings = Settings(db=url, open_reads=Settings.default_open_reads(host) if open_reads is None else open_reads,
                        max_population=max_population, max_evaluations=max_evaluations, max_epochs=max_epochs,
                        max_concurrent=max_concurrent, max_final_epochs=max_final_epochs,
                        max_trainings=max_trainings,
                        **({"data_roots": [str(p) for p in data_root]} if data_root else {}))
    application = create_app(settings)
    children = []
    command = [sys.executable, "-m", "dvolver", "runner", "--db", url, "--workers", str(workers)]
    for _ in range(runners):
        children.append(subprocess.Popen(command + (["--ray-address", ray_address] if ray_address else [])))
    err.print(f"Dvolver service on http://{host}:{port} (dashboard /, API docs /docs), store {settings.db}, "
              f"{runners} runner(s), reads {'open' if settings.open_reads else 'need a token'}", highlight=False)
    def stop(*_: Any) -> None:
        raise SystemExit(0)

    # uvicorn re-raises the SIGTERM it shut down on; handled here, the runners below are stopped
    # too instead of being orphaned.
    signal.signal(signal.SIGTERM, stop)
    try:
        uvicorn.run(application, host=host, port=port, log_level="warning")
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:  # stuck in a training step: it would only lose that step
                child.kill()


@app.command()
def runner(
    db: str = DB,
    name: str = typer.Option(None, help="this runner's name in the journal; unique among runners [host:pid]"),
    lease: float = typer.Option(30.0, help="seconds without a heartbeat after which another runner may take over"),
    workers: int = WORKERS,
    ray_address: str = RAY_ADDRESS,
    executor: str = EXECUTOR,
    once: bool = typer.Option(False, help="exit when the queue is empty instead of waiting for more"),
) -> None:
    """Claim queued searches from the store and run them (what `dvolver serve` starts)."""
    import logging
    import signal

    from service.runner import Runner

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    worker = Runner(db, name, lease, workers=workers, ray_address=ray_address, executor=executor)
    # A stopped runner hands its search back to the queue instead of abandoning it mid-lease.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.shutdown.set())
    worker.serve(once=once)


# Where each `dvolver train` flag goes in a FinalTraining; the scale flags depend on the search's space.
RECIPE_FIELDS: dict[str, tuple[str, ...]] = {
    "epochs": ("epochs",), "batch_size": ("batch_size",), "train_limit": ("train_limit",), "seed": ("seed",),
    "dataset": ("dataset",), "device": ("device",),
}
SCALE_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "nasnet": {"cells": ("scale", "nasnet", "cells"), "filters": ("scale", "nasnet", "filters")},
    "nb201": {"cells": ("scale", "nb201", "cells"), "channels": ("scale", "nb201", "channels")},
}


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DvolverError(f"cannot read {what} file {path}: {exc}") from None
    if not isinstance(values, dict):
        raise DvolverError(f"{what} file {path} must hold a JSON object")
    return values


def _recipe_dict(spec_file: Path | None, space: str, **flags: Any) -> dict[str, Any]:
    """The recipe file's fields, overridden by the flags given; --cells, --filters and --channels set the
    scale of the search's space, and are refused where that space has no such dimension."""
    values = _read_json(spec_file, "final training") if spec_file is not None else {}
    fields = RECIPE_FIELDS | SCALE_FIELDS.get(space, {})
    for flag, value in flags.items():
        if value is None:
            continue
        if flag not in fields:
            raise DvolverError(f"--{flag}: the {space} space's networks have no {flag} to set; drop it")
        target = values
        for part in fields[flag][:-1]:
            target = target.setdefault(part, {})
        target[fields[flag][-1]] = value
    return values


@app.command()
def train(
    search_id: int = typer.Argument(None, help="the search whose candidates to retrain"),
    candidate_ids: list[int] = typer.Argument(None, help="candidates to retrain (ids from `dvolver front`)"),
    front: bool = typer.Option(False, "--front", help="retrain every member of the search's front"),
    knee: bool = typer.Option(False, "--knee", help="retrain the front's knee: the member nearest the ideal point "
                              "once each objective spans [0, 1]"),
    genome: str = typer.Option(None, "--genome", help="retrain a reference architecture instead, for comparison: "
                               "nasnet-a, or a genome of the search's space as a JSON list"),
    resume: int = typer.Option(None, "--resume", metavar="TRAINING_ID",
                               help="continue a stored training from its last epoch, with its own recipe"),
    cells: int = typer.Option(None, help="final N: nasnet and nb201 cells per stage (default: nasnet 2, nb201 5)"),
    filters: int = typer.Option(None, help="final F: nasnet filters of the first stage (default: 16)"),
    channels: int = typer.Option(None, help="final C: nb201 channels of the first stage (default: 16)"),
    epochs: int = typer.Option(None, help="training epochs (default: 20)"),
    batch_size: int = typer.Option(None, help="training batch size (default: 96)"),
    train_limit: int = typer.Option(None, help="train on the first N training images"),
    seed: int = typer.Option(None, help="the same recipe and seed give the same weights on the CPU (default: 0)"),
    dataset: str = typer.Option(None, help="'digits', an .npz file or a CIFAR-10 folder, of the search's shape "
                                "(default: the search's)"),
    device: str = typer.Option(None, help="auto, cpu or cuda (default: auto)"),
    spec_file: Path = typer.Option(None, "--spec", help="a JSON FinalTraining; flags override its fields"),
    workers: int = typer.Option(2, help="trainings at once, on a local Ray or local processes"),
    ray_address: str = RAY_ADDRESS,
    executor: str = typer.Option("auto", help="auto (inline for one training, Ray for more), ray, processes or "
                                 "inline"),
    db: str = DB,
) -> None:
    """Retrain found candidates at final scale, several at once on Ray workers (GPUs where the cluster has
    them), each epoch checkpointed in the store; then print what each measures (test accuracy, MACs and FLOPs,
    params, CPU latency)."""
    from .store import Store
    from .trainings import create_reference, create_trainings

    recipe_flags = {"cells": cells, "filters": filters, "channels": channels, "epochs": epochs,
                    "batch_size": batch_size, "train_limit": train_limit, "seed": seed, "dataset": dataset,
                    "device": device}
    chosen = [c for c, on in (("candidate ids", bool(candidate_ids)), ("--front", front), ("--knee", knee),
                              ("--genome", genome is not None)) if on]
    store = Store(db)
    if resume is not None:
        if search_id is not None or chosen or spec_file or any(v is not None for v in recipe_flags.values()):
            raise DvolverError("--resume continues a stored training with its own recipe: give it alone")
        if store.get_training(resume).status == "finished":  # refused here, before any bar is drawn: exit 2
            raise ConflictError(f"training {resume} has finished; `dvolver training show {resume}` shows it")
        ids = [resume]
    else:
        if search_id is None or len(chosen) != 1:
            raise DvolverError("give SEARCH_ID and one of: candidate ids, --front, --knee or --genome (or --resume "
                               "TRAINING_ID)")
        recipe = _recipe_dict(spec_file, store.get_search(search_id).spec["space"], **recipe_flags)
        if genome is not None:
            ids = [create_reference(store, search_id, genome, recipe)]
        else:
            ids = create_trainings(store, search_id, "front" if front else "knee" if knee else candidate_ids, recipe)
    from .api import make_training_executor
    from .spec import SearchSpec

    spec = SearchSpec.from_stored(store.get_search(store.get_training(ids[0]).search_id).spec)
    pool = make_training_executor(spec, len(ids), executor, workers, ray_address)
    try:
        _run_trainings(store, ids, pool, db)
    finally:
        pool.shutdown()


def _run_trainings(store: Any, ids: list[int], pool: Any, db: str | None) -> None:
    from .cli_trainings import TrainingProgress, finished_line, print_trainings
    from .training_runs import run_trainings

    progress = TrainingProgress([store.get_training(i) for i in ids])
    progress.bar.start()
    try:
        ended = run_trainings(store, ids, pool, progress.epoch)
    except KeyboardInterrupt:
        progress.bar.stop()
        stopped = [i for i in ids if store.get_training(i).status != "finished"]
        err.print("\ninterrupted; the epochs done are saved. Continue with: "
                  + "; ".join(f"dvolver train --resume {i}" + (f" --db {db}" if db else "") for i in stopped),
                  highlight=False)
        raise typer.Exit(130) from None
    finally:
        progress.bar.stop()
    done = [store.get_training(i) for i in ids]
    for training in done:
        if training.status == "finished":
            err.print(finished_line(training), highlight=False)
        else:
            err.print(f"training {training.id} {training.status}: {training.error}", highlight=False, markup=False)
    failed = [i for i in ids if ended.get(i) != "finished"]
    print_trainings(done, "table", f"trainings in {store.display_url}")
    if failed:
        err.print(f"{len(failed)} training(s) failed ({', '.join(map(str, failed))}); `dvolver training show ID` "
                  "says why, and `dvolver train --resume ID` tries again", highlight=False)
        raise typer.Exit(1)


training_app = typer.Typer(no_args_is_help=True, help="Final trainings of found candidates (`dvolver train`).")
app.add_typer(training_app, name="training")


def _check_format(format: str) -> None:
    if format not in ("table", "json"):
        raise DvolverError(f"unknown format {format!r}; choose table or json")


@training_app.command("list")
def training_list(
    search: int = typer.Option(None, "--search", help="only the trainings of this search"),
    format: str = typer.Option("table", "--format", "-f", help="table or json"),
    db: str = DB,
) -> None:
    """List the final trainings in the store."""
    from .cli_trainings import print_trainings
    from .store import Store

    _check_format(format)
    store = Store(db)
    print_trainings(store.list_trainings(search), format, f"trainings in {store.display_url}")


@training_app.command("show")
def training_show(
    training_id: int = typer.Argument(..., help="the training"),
    format: str = typer.Option("table", "--format", "-f", help="table or json"),
    db: str = DB,
) -> None:
    """Show a final training: its status, measures at the final scale, weights' SHA-256 and every epoch."""
    from .cli_trainings import print_training
    from .store import Store

    _check_format(format)
    print_training(Store(db).get_training(training_id), format)


@training_app.command("compare")
def training_compare(
    search_id: int = typer.Argument(..., help="the search whose finished trainings to compare with its proxy"),
    format: str = typer.Option("table", "--format", "-f", help="table or json"),
    db: str = DB,
) -> None:
    """How the proxy ranking survived final training: Kendall tau and Spearman rho between proxy and final
    accuracy, the final front against the proxy front, and the proxy-front members that fell off it."""
    from .cli_trainings import print_survival
    from .rank_survival import survival
    from .store import Store

    _check_format(format)
    print_survival(survival(Store(db), search_id), format)


@training_app.command("export")
def training_export(
    training_id: int = typer.Argument(..., help="a finished training"),
    format: str = typer.Option("state_dict", "--format", "-f", help="genotype, state_dict, torch_export or onnx"),
    output: Path = typer.Option(None, "--out", "--output", "-o", help="where to write it [training<T>.<ext>]"),
    db: str = DB,
) -> None:
    """Write a finished training's network out as a file at its final scale; it is loaded back and checked
    against the outputs its training recorded."""
    from .export import export_training
    from .store import Store

    out = export_training(Store(db), training_id, format)
    path = output or Path(out.filename)
    path.write_bytes(out.data)
    checked = f"; its outputs match {CHECKED[out.checked_against]}" if out.checked_against else ""
    err.print(f"{format} of training {training_id} written to {path} ({len(out.data)} bytes){checked}",
              highlight=False)


token_app = typer.Typer(no_args_is_help=True, help="API tokens for the service.")
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name: str = typer.Argument(..., help="a name for the token (and its owner, unless --owner is given)"),
    owner: str = typer.Option(None, help="who the searches made with this token belong to [NAME]"),
    db: str = DB,
) -> None:
    """Create a token; it is printed once and only its hash is stored."""
    from . import tokens
    from .store import Store

    token = tokens.create_token(Store(db), name, owner)
    err.print(f"token {name!r} for owner {owner or name!r} (shown once; keep it safe):", highlight=False)
    sys.stdout.write(token + "\n")


@token_app.command("list")
def token_list(db: str = DB) -> None:
    """List tokens (names and owners; the tokens themselves are not kept)."""
    from . import tokens
    from .store import Store

    found = tokens.tokens(Store(db))
    table = Table(title="tokens")
    for column in ("name", "owner", "created"):
        table.add_column(column)
    for t in found:
        table.add_row(t["name"], t["owner"], t["created_at"].strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@token_app.command("revoke")
def token_revoke(name: str = typer.Argument(..., help="the token's name"), db: str = DB) -> None:
    """Revoke a token: requests with it get 401 from then on."""
    from . import tokens
    from .store import Store

    tokens.revoke_token(Store(db), name)
    err.print(f"token {name!r} revoked", highlight=False)


bench_app = typer.Typer(no_args_is_help=True, help="Compare Dvolver's search with its peers on benchmark tables.")
app.add_typer(bench_app, name="bench")


@bench_app.command("nb201")
def bench_nb201(
    table: Path = typer.Option(..., help="CSV with a row per NAS-Bench-201 cell (as for `search --table`)"),
    seeds: int = typer.Option(10, help="seeds 0..N-1, the same for every search"),
    budgets: str = typer.Option("50,100,200,300,1000", help="evaluation budgets, comma-separated"),
    objectives: str = typer.Option("acc,flops", help="acc followed by flops and/or params"),
    searches: str = typer.Option("", help="comma-separated subset of the searches [all]"),
) -> None:
    """Evaluations to reach the true front: Dvolver's algorithms against Optuna's samplers (TPE, GP,
    NSGA-II) and pymoo's NSGA-II, scored raw and de-noised."""
    from . import efficiency

    levels = [int(b) for b in _floats("budgets", budgets)]
    names = [n.strip() for n in searches.split(",") if n.strip()] or None
    problem = efficiency.load_problem(table, [o.strip() for o in objectives.split(",") if o.strip()])
    err.print(f"true front: {len(problem.front)} points; seeds 0..{seeds - 1}; budgets {levels}", highlight=False)
    rows = efficiency.compare(problem, range(seeds), levels, names,
                              log=lambda line: err.print(line, highlight=False))
    sys.stdout.write("\n".join(efficiency.table_lines(rows, seeds)) + "\n")


def main() -> None:
    app()
