"""The peers Dvolver's search is measured against on a NAS-Bench-201 table (dvolver.efficiency): Optuna's
samplers and pymoo's NSGA-II, each run in-process as its own documentation sets it up, every trial one
look-up of the raw table, a duplicate asked again charged again. Each returns the genomes it evaluated, in
order, `budget` of them.

Optuna's samplers are the ones a user of Optuna 5 meets: TPESampler with its defaults (what
`create_study` uses for a multi-objective study), TPESampler(multivariate=True), GPSampler (logEHVI with
a Hamming kernel over categorical parameters) and NSGAIISampler.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from search_spaces import Genome
from search_spaces.nb201 import EDGES, OPS

from .errors import DvolverError

POPULATION = 20  # the NSGA-IIs' population (their defaults are 50 and 100), as in every earlier run of the bench


class MissingBenchDependency(DvolverError):
    """The comparison needs the optional peers (Optuna)."""


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise MissingBenchDependency("this comparison runs Optuna's samplers beside Dvolver: "
                                     "pip install 'dvolver[bench]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def optuna_search(make_sampler: Callable[[Any, int], Any]) -> Callable[[Any, int, int], list[Genome]]:
    """A search by the Optuna sampler that `make_sampler(optuna, seed)` builds; every edge's op is one
    categorical parameter, as a user would write it."""

    def run(problem: Any, seed: int, budget: int) -> list[Genome]:
        optuna = require_optuna()
        asked: list[Genome] = []

        def objective(trial) -> list[float]:  # noqa: ANN001 - optuna.Trial
            genome = tuple(trial.suggest_categorical(f"edge{i}", list(range(len(OPS)))) for i in range(len(EDGES)))
            asked.append(genome)
            return problem.point(genome)

        with warnings.catch_warnings():
            # multivariate TPE and GPSampler are marked experimental; the warning says nothing about the run
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = optuna.create_study(directions=["minimize"] * len(problem.objectives),
                                        sampler=make_sampler(optuna, seed))
            study.optimize(objective, n_trials=budget)
        return asked

    return run


OPTUNA_SAMPLERS: dict[str, Callable[[Any, int], Any]] = {
    # its defaults: univariate for a multi-objective study, which is what create_study gives one
    "optuna TPESampler": lambda optuna, seed: optuna.samplers.TPESampler(seed=seed),
    "optuna TPESampler multivariate": lambda optuna, seed: optuna.samplers.TPESampler(multivariate=True,
                                                                                       seed=seed),
    "optuna GPSampler": lambda optuna, seed: optuna.samplers.GPSampler(seed=seed),
    "optuna NSGAIISampler": lambda optuna, seed: optuna.samplers.NSGAIISampler(population_size=POPULATION,
                                                                              seed=seed),
}


def pymoo_nsga2(problem: Any, seed: int, budget: int) -> list[Genome]:
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
