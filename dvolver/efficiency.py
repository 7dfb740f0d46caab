"""How many evaluations a search needs to reach the true front of a NAS-Bench-201 table (issue 5).

Every algorithm searches the same table with the same seeds; each accuracy look-up is one
evaluation, a duplicate asked again included. Dvolver's algorithms run through the real engine in
table mode (so a network the engine has already evaluated is never charged twice, as in a real
search); Optuna's NSGAIISampler and pymoo's NSGA2 run in-process, every trial a look-up. Fronts
are scored against the table's own true front with each objective normalised so that front spans
[0, 1]: hypervolume ratio (reference point 1.1 in every objective), IGD, and recall, the share of
the true front's points found exactly.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from search_spaces import Genome, make_space
from search_spaces.nb201 import ALL_GENOMES, EDGES, OPS, NB201Space

from .errors import DvolverError
from .pareto import hypervolume, igd, non_dominated

BUDGETS = (100, 300, 1000)
POPULATION = 20
MATCH = 1e-9  # a true-front point is found when a found point equals it within this, in every objective


class MissingBenchDependency(DvolverError):
    """The comparison needs the optional peers (Optuna)."""


@dataclass
class Problem:
    """A table and the objectives scored on it, all minimised: test error %, then cost columns as stored."""

    space: NB201Space
    objectives: list[str]
    front: np.ndarray
    lo: np.ndarray = field(init=False)
    hi: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.lo, self.hi = self.front.min(axis=0), self.front.max(axis=0)

    @property
    def table(self):  # noqa: ANN201 - NB201Table, kept loose for typing simplicity
        return self.space.table

    def point(self, genome: Genome) -> list[float]:
        row = self.table.lookup(genome)
        values = {"acc": 100.0 - row.acc, "flops": row.flops, "params": row.params}
        return [values[o] for o in self.objectives]

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
    problem = Problem(space, objectives, np.empty((1, len(objectives))))  # type: ignore[arg-type]
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

        spec = {"space": "nb201", "space_options": {"table": str(problem.table.path)},
                "objectives": problem.objectives, "population": POPULATION, "evaluations": budget,
                "algorithm": algorithm, "seed": seed}
        # The engine commits every result to SQLite; in memory-backed storage that costs nothing.
        where = "/dev/shm" if os.path.isdir("/dev/shm") else None
        with tempfile.TemporaryDirectory(dir=where) as tmp:
            result = run_search(spec, db=os.path.join(tmp, "bench.db"), executor="inline")
        done = sorted((c for c in result.candidates if c.status == "finished"), key=lambda c: c.id)
        return [tuple(c.genome) for c in done]

    return run


def optuna_nsga2(problem: Problem, seed: int, budget: int) -> list[Genome]:
    optuna = _optuna()
    asked: list[Genome] = []

    def objective(trial) -> list[float]:  # noqa: ANN001 - optuna.Trial
        genome = tuple(trial.suggest_categorical(f"edge{i}", list(range(len(OPS)))) for i in range(len(EDGES)))
        asked.append(genome)
        return problem.point(genome)

    sampler = optuna.samplers.NSGAIISampler(population_size=POPULATION, seed=seed)
    study = optuna.create_study(directions=["minimize"] * len(problem.objectives), sampler=sampler)
    study.optimize(objective, n_trials=budget)
    return asked


def pymoo_nsga2(problem: Problem, seed: int, budget: int) -> list[Genome]:
    """pymoo's NSGA-II as its documentation sets it up for integer variables: SBX and polynomial
    mutation with rounding. Every offspring it evaluates is charged, a repeat of an earlier one too."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.evaluator import Evaluator
    from pymoo.core.problem import Problem as PymooProblem
    from pymoo.core.termination import NoTermination
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.problems.static import StaticProblem

    n = len(EDGES)
    pm_problem = PymooProblem(n_var=n, n_obj=len(problem.objectives), xl=np.zeros(n), xu=np.full(n, len(OPS) - 1),
                              vtype=int)
    algorithm = NSGA2(pop_size=POPULATION, sampling=IntegerRandomSampling(),
                      crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                      mutation=PM(eta=20, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)
    algorithm.setup(pm_problem, termination=NoTermination(), seed=seed, verbose=False)
    asked: list[Genome] = []
    while len(asked) < budget:
        pop = algorithm.ask()
        genomes = [tuple(int(v) for v in x) for x in pop.get("X")]
        asked += genomes
        F = np.array([problem.point(g) for g in genomes])
        Evaluator().eval(StaticProblem(pm_problem, F=F), pop)
        algorithm.tell(infills=pop)
    return asked[:budget]


def _optuna():
    try:
        import optuna
    except ImportError:
        raise MissingBenchDependency("this comparison runs Optuna's NSGAIISampler beside Dvolver: "
                                     "pip install 'dvolver[bench]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


SEARCHES: dict[str, Callable[[Problem, int, int], list[Genome]]] = {
    "dvolver surrogate": dvolver_search("surrogate"),
    "dvolver nsga2": dvolver_search("nsga2"),
    "dvolver random": dvolver_search("random"),
    "optuna NSGAIISampler": optuna_nsga2,
    "pymoo NSGA2": pymoo_nsga2,
}
# Runs of these read the same whatever the budget (none knows it), so one run at the largest budget
# scored on its first B evaluations is the run at budget B. The engine's runs are made at each budget.
PREFIX_EXACT = {"optuna NSGAIISampler", "pymoo NSGA2"}


@dataclass
class Row:
    search: str
    budget: int
    scores: list[Score]
    evaluations: list[int]
    seconds: float

    def mean(self, name: str) -> float:
        return statistics.mean(getattr(s, name) for s in self.scores)

    def worst(self, name: str) -> float:
        values = [getattr(s, name) for s in self.scores]
        return max(values) if name == "igd" else min(values)


def compare(problem: Problem, seeds: Iterable[int], budgets: Iterable[int] = BUDGETS,
            searches: Iterable[str] | None = None, log: Callable[[str], None] = lambda line: None) -> list[Row]:
    seeds, budgets = list(seeds), sorted(budgets)
    names = list(searches or SEARCHES)
    if any(n.startswith("optuna") for n in names):
        _optuna()
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
    rows: list[Row] = []
    for name in names:
        run = SEARCHES[name]
        per_budget: dict[int, Row] = {b: Row(name, b, [], [], 0.0) for b in budgets}
        for seed in seeds:
            if name in PREFIX_EXACT:
                started = time.perf_counter()
                asked = run(problem, seed, budgets[-1])
                runs = {b: (asked[:b], time.perf_counter() - started) for b in budgets}
            else:
                runs = {}
                for b in budgets:
                    started = time.perf_counter()
                    runs[b] = (run(problem, seed, b), time.perf_counter() - started)
            for b, (asked, seconds) in runs.items():
                per_budget[b].scores.append(score(problem, np.array([problem.point(g) for g in asked])))
                per_budget[b].evaluations.append(len(asked))
                per_budget[b].seconds += seconds
        for b in budgets:
            r = per_budget[b]
            log(f"{name:22s} {b:5d}  HV {r.mean('hv_ratio'):.4f}  IGD {r.mean('igd'):.4f}  "
                f"recall {r.mean('recall'):.3f}")
        rows += per_budget.values()
    return rows


def table_lines(rows: list[Row], seeds: int) -> list[str]:
    lines = ["| search | evaluations | HV ratio mean / worst | IGD mean / worst | recall mean / worst | "
             "s per run |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r.budget, list(SEARCHES).index(r.search))):
        lines.append(f"| {r.search} | {r.budget} | {r.mean('hv_ratio'):.4f} / {r.worst('hv_ratio'):.4f} | "
                     f"{r.mean('igd'):.4f} / {r.worst('igd'):.4f} | {r.mean('recall'):.3f} / {r.worst('recall'):.3f}"
                     f" | {r.seconds / seeds:.2f} |")
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
