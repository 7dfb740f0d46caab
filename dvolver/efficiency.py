"""How many evaluations a search needs to reach the true front of a NAS-Bench-201 table (issues 5, 20).

Every algorithm searches the same raw table with the same seeds; each accuracy look-up is one
evaluation, a duplicate asked again included. Dvolver's algorithms run through the real engine in
table mode with the product's defaults (so a network the engine has already evaluated is never charged
twice, as in a real search); the peers (Optuna's samplers, pymoo's NSGA2: dvolver.efficiency_peers) run
in-process, every trial a look-up. Fronts are scored against the table's own true front with each
objective normalised so that front spans [0, 1]: hypervolume ratio (reference point 1.1 in every
objective), IGD, and recall, the share of the true front's points found exactly. Each is scored twice:
raw, and de-noised (every cell at its isomorphic class's mean accuracy, the true front taken the same
way; Problem.denoised).
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from search_spaces import Genome, make_space
from search_spaces.nb201 import ALL_GENOMES, NB201Space, functional_key

from .efficiency_peers import OPTUNA_SAMPLERS, optuna_search, pymoo_nsga2, require_optuna
from .errors import DvolverError
from .pareto import hypervolume, igd, non_dominated

BUDGETS = (50, 100, 200, 300, 1000)
GP_MOST = 300
MATCH = 1e-9  # a true-front point is found when a found point equals it within this, in every objective


@dataclass
class Problem:
    """A table and the objectives scored on it, all minimised: test error %, then cost columns as stored.

    Raw, a cell scores the accuracy its row holds. De-noised (`class_acc` given), it scores the mean
    accuracy of its isomorphic class (the cells with one `functional_key`, one network): what the network
    is worth, where the raw table holds one training-noise draw per cell. The searches always see the raw
    table, as a real search would; de-noising is only how what they found is scored."""

    space: NB201Space
    objectives: list[str]
    front: np.ndarray
    class_acc: dict[Genome, float] | None = None
    lo: np.ndarray = field(init=False)
    hi: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.lo, self.hi = self.front.min(axis=0), self.front.max(axis=0)

    @property
    def table(self):  # noqa: ANN201 - NB201Table, kept loose for typing simplicity
        return self.space.table

    def point(self, genome: Genome) -> list[float]:
        row = self.table.lookup(genome)
        acc = row.acc if self.class_acc is None else self.class_acc[tuple(int(g) for g in genome)]
        values = {"acc": 100.0 - acc, "flops": row.flops, "params": row.params}
        return [values[o] for o in self.objectives]

    @cached_property
    def denoised(self) -> Problem:
        """This table scored de-noised, with its own true front taken the same way (built once: 15,625
        look-ups and a front)."""
        classes: dict[str, list[Genome]] = {}
        for genome in ALL_GENOMES:
            classes.setdefault(functional_key(genome), []).append(genome)
        class_acc = {}
        for members in classes.values():
            mean = statistics.fmean(self.table.lookup(g).acc for g in members)
            class_acc.update(dict.fromkeys(members, mean))
        return _with_front(Problem(self.space, self.objectives, np.empty((1, len(self.objectives))), class_acc))

    def normalised(self, points: np.ndarray) -> np.ndarray:
        return (points - self.lo) / np.where(self.hi > self.lo, self.hi - self.lo, 1.0)


def load_problem(table: str | Path, objectives: Iterable[str] = ("acc", "flops")) -> Problem:
    objectives = list(objectives)
    if objectives[0] != "acc" or not set(objectives[1:]) <= {"flops", "params"} or len(objectives) < 2:
        raise DvolverError("objectives must be acc followed by flops and/or params, e.g. acc,flops")
    path = Path(table).expanduser().resolve()
    if not path.is_file():
        raise DvolverError(f"table {table} does not exist")
    try:
        space = make_space("nb201", {"table": str(path)})
    except ValueError as exc:
        raise DvolverError(f"table {table} cannot be used: {exc}") from None
    return _with_front(Problem(space, objectives, np.empty((1, len(objectives)))))  # type: ignore[arg-type]


def _with_front(problem: Problem) -> Problem:
    points = np.array([problem.point(g) for g in ALL_GENOMES])
    problem.front = np.unique(points[non_dominated(points)], axis=0)
    problem.__post_init__()
    return problem


@dataclass
class Score:
    hv_ratio: float
    igd: float
    recall: float


def score(problem: Problem, points: np.ndarray) -> Score:
    """The front found among `points` (every evaluation's objectives) against the true front."""
    found = points[non_dominated(points)]
    reference = np.full(len(problem.objectives), 1.1)
    ratio = hypervolume(problem.normalised(found), reference) / hypervolume(problem.normalised(problem.front),
                                                                             reference)
    hits = [(np.abs(found - p) <= MATCH).all(axis=1).any() for p in problem.front]
    return Score(ratio, igd(problem.normalised(found), problem.normalised(problem.front)), float(np.mean(hits)))


# --- the searches: each returns the genomes it evaluated, in order, at most `budget` ---------------

def dvolver_search(algorithm: str) -> Callable[[Problem, int, int], list[Genome]]:
    def run(problem: Problem, seed: int, budget: int) -> list[Genome]:
        from .api import run_search

        # The product's defaults (population, batch): what a user running `dvolver search` gets.
        spec = {"space": "nb201", "space_options": {"table": str(problem.table.path)},
                "objectives": problem.objectives, "evaluations": budget, "algorithm": algorithm, "seed": seed}
        # The engine commits every result to SQLite; in memory-backed storage that costs nothing.
        where = "/dev/shm" if os.path.isdir("/dev/shm") else None
        with tempfile.TemporaryDirectory(dir=where) as tmp:
            result = run_search(spec, db=os.path.join(tmp, "bench.db"), executor="inline")
        done = sorted((c for c in result.candidates if c.status == "finished"), key=lambda c: c.id)
        return [tuple(c.genome) for c in done]

    return run


SEARCHES: dict[str, Callable[[Problem, int, int], list[Genome]]] = {
    "dvolver surrogate": dvolver_search("surrogate"),
    "dvolver nsga2": dvolver_search("nsga2"),
    "dvolver random": dvolver_search("random"),
    **{name: optuna_search(make) for name, make in OPTUNA_SAMPLERS.items()},
    "pymoo NSGA2": pymoo_nsga2,
}
# Runs of these read the same whatever the budget (none knows it), so one run at the largest budget
# scored on its first B evaluations is the run at budget B. The engine's runs are made at each budget.
PREFIX_EXACT = {*OPTUNA_SAMPLERS, "pymoo NSGA2"}
# A peer whose time per trial grows with the trials so far runs up to here, and is left out above it.
MOST_EVALUATIONS = {"optuna GPSampler": GP_MOST}


@dataclass
class Row:
    search: str
    budget: int
    scores: list[Score]  # raw, one per seed
    evaluations: list[int]
    seconds: float
    clean: list[Score] = field(default_factory=list)  # de-noised, one per seed

    def mean(self, name: str, denoised: bool = False) -> float:
        return statistics.mean(getattr(s, name) for s in (self.clean if denoised else self.scores))

    def worst(self, name: str, denoised: bool = False) -> float:
        values = [getattr(s, name) for s in (self.clean if denoised else self.scores)]
        return max(values) if name == "igd" else min(values)

    def sem(self, name: str, denoised: bool = False) -> float:
        """Standard error of the mean over seeds (0 for one seed)."""
        values = [getattr(s, name) for s in (self.clean if denoised else self.scores)]
        return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0


def compare(problem: Problem, seeds: Iterable[int], budgets: Iterable[int] = BUDGETS,
            searches: Iterable[str] | None = None, log: Callable[[str], None] = lambda line: None) -> list[Row]:
    seeds, budgets = list(seeds), sorted(budgets)
    names = list(searches or SEARCHES)
    unknown = [n for n in names if n not in SEARCHES]
    if unknown:
        raise DvolverError(f"unknown search {', '.join(map(repr, unknown))}; the searches are {', '.join(SEARCHES)}")
    if any(n.startswith("optuna") for n in names):
        require_optuna()
    # A budget above the space's size warns once per seed; the caller's level is put back after.
    quiet = logging.getLogger("dvolver")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return _compare(problem, seeds, budgets, names, log)
    finally:
        quiet.setLevel(level)


def _compare(problem: Problem, seeds: list[int], budgets: list[int], names: list[str],
             log: Callable[[str], None]) -> list[Row]:
    clean = problem.denoised
    rows: list[Row] = []
    for name in names:
        run = SEARCHES[name]
        mine = [b for b in budgets if b <= MOST_EVALUATIONS.get(name, budgets[-1])]
        if not mine:
            continue
        per_budget: dict[int, Row] = {b: Row(name, b, [], [], 0.0) for b in mine}
        for seed in seeds:
            if name in PREFIX_EXACT:
                started = time.perf_counter()
                asked = run(problem, seed, mine[-1])
                runs = {b: (asked[:b], time.perf_counter() - started) for b in mine}
            else:
                runs = {}
                for b in mine:
                    started = time.perf_counter()
                    runs[b] = (run(problem, seed, b), time.perf_counter() - started)
            for b, (asked, seconds) in runs.items():
                per_budget[b].scores.append(score(problem, np.array([problem.point(g) for g in asked])))
                per_budget[b].clean.append(score(clean, np.array([clean.point(g) for g in asked])))
                per_budget[b].evaluations.append(len(asked))
                per_budget[b].seconds += seconds
        for b in mine:
            r = per_budget[b]
            log(f"{name:30s} {b:5d}  HV de-noised {r.mean('hv_ratio', True):.4f}  raw {r.mean('hv_ratio'):.4f}  "
                f"recall de-noised {r.mean('recall', True):.3f}")
        rows += per_budget.values()
    return rows


def table_lines(rows: list[Row], seeds: int) -> list[str]:
    """A markdown table, by budget: de-noised HV ratio (mean +- standard error, worst), de-noised IGD and
    recall, then the raw HV ratio and recall, and the seconds a run took."""
    lines = ["| search | evaluations | HV de-noised mean ± s.e. / worst | IGD de-noised mean | "
             "recall de-noised mean | HV raw mean / worst | recall raw mean | s per run |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r.budget, list(SEARCHES).index(r.search))):
        lines.append(f"| {r.search} | {r.budget} | {r.mean('hv_ratio', True):.4f} ± {r.sem('hv_ratio', True):.4f}"
                     f" / {r.worst('hv_ratio', True):.4f} | {r.mean('igd', True):.4f} | "
                     f"{r.mean('recall', True):.3f} | {r.mean('hv_ratio'):.4f} / {r.worst('hv_ratio'):.4f} | "
                     f"{r.mean('recall'):.3f} | {r.seconds / seeds:.2f} |")
    return lines


def one_look_per_network(problem: Problem, draws: int = 10, seed: int = 0) -> tuple[float, float]:
    """Mean HV ratio and recall if every distinct candidate were evaluated once, as the first-asked of
    its isomorphic cells: the most a search that never evaluates a network twice can reach, since the
    table's isomorphic cells hold different accuracies (training noise) and only one of them is read."""
    classes: dict[Genome, list[Genome]] = {}
    for genome in ALL_GENOMES:
        classes.setdefault(problem.space.canonical(genome), []).append(genome)
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(draws):
        members = [m[rng.integers(len(m))] for m in classes.values()]
        scores.append(score(problem, np.array([problem.point(g) for g in members])))
    return statistics.mean(s.hv_ratio for s in scores), statistics.mean(s.recall for s in scores)
