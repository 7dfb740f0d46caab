"""`dvolver bench nb201`: Dvolver's searches against Optuna's on the NAS-Bench-201 table (dvolver.efficiency)."""

import builtins
import csv
import itertools

import numpy as np
from typer.testing import CliRunner

from dvolver import efficiency
from dvolver.cli import app


def test_bench_command_compares_every_search(nb201_table):
    import logging

    before = logging.getLogger("dvolver").level
    result = CliRunner().invoke(app, ["bench", "nb201", "--table", str(nb201_table), "--seeds", "2",
                                      "--budgets", "12,24"])
    assert result.exit_code == 0, result.output
    for name in efficiency.SEARCHES:
        for budget in (12, 24):
            row = next(line for line in result.output.splitlines() if line.startswith(f"| {name} | {budget} |"))
            denoised_hv, sem = (float(v) for v in row.split("|")[3].split("/")[0].split("±"))
            assert 0 < denoised_hv <= 1 and sem >= 0, row
    assert logging.getLogger("dvolver").level == before  # its quieting of per-seed warnings ends with it


def test_bench_command_says_how_to_install_optuna(nb201_table, monkeypatch):
    real_import = builtins.__import__

    def no_optuna(name, *args, **kwargs):
        if name == "optuna":
            raise ImportError("no optuna")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optuna)
    result = CliRunner().invoke(app, ["bench", "nb201", "--table", str(nb201_table), "--seeds", "1",
                                      "--budgets", "20"])
    assert result.exit_code == 2
    assert "pip install 'dvolver[bench]'" in result.output


def _raw_accuracies(path) -> dict[tuple[int, ...], float]:
    with open(path, newline="") as f:
        return {tuple(int(r[f"op{i}"]) for i in range(6)): float(r["test_acc"]) for r in csv.DictReader(f)}


def test_denoised_scores_give_every_cell_of_one_network_the_same_accuracy(nb201_table):
    """Cells whose only live edge is input -> output through a 3x3 conv are one network whatever ops sit on
    the edges into nodes 1 and 2 that lead nowhere (5^3 = 125 cells, edges (3,1) and (3,2) none): the table
    holds a different noise draw for each, the de-noised problem one accuracy for all, inside their range."""
    raw = _raw_accuracies(nb201_table)
    clean = efficiency.load_problem(nb201_table).denoised
    one_network = [(a, b, c, 3, 0, 0) for a, b, c in itertools.product(range(5), repeat=3)]
    values = {clean.point(g)[0] for g in one_network}
    accs = [raw[g] for g in one_network]
    assert len(values) == 1 and len(set(accs)) > 10
    assert min(accs) <= 100 - values.pop() <= max(accs)
    assert clean.point((0, 0, 0, 3, 0, 0))[1] == efficiency.load_problem(nb201_table).point((0, 0, 0, 3, 0, 0))[1]


def test_evaluating_every_cell_finds_the_whole_denoised_front(nb201_table):
    from search_spaces.nb201 import ALL_GENOMES

    problem = efficiency.load_problem(nb201_table)
    clean = problem.denoised
    s = efficiency.score(clean, np.array([clean.point(g) for g in ALL_GENOMES]))
    assert abs(s.hv_ratio - 1) < 1e-12 and s.recall == 1.0
    # the raw look-ups scored against the de-noised front are not the same thing: a lucky draw beats its class mean
    assert not np.array_equal(np.sort(clean.front, axis=0), np.sort(problem.front, axis=0))
