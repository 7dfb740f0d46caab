"""`dvolver bench nb201`: Dvolver's searches against Optuna's on the NAS-Bench-201 table (dvolver.efficiency)."""

import builtins

from typer.testing import CliRunner

from dvolver import efficiency
from dvolver.cli import app


def test_bench_command_compares_every_search(nb201_table):
    import logging

    before = logging.getLogger("dvolver").level
    result = CliRunner().invoke(app, ["bench", "nb201", "--table", str(nb201_table), "--seeds", "1",
                                      "--budgets", "40"])
    assert result.exit_code == 0, result.output
    for name in efficiency.SEARCHES:
        assert f"| {name} | 40 |" in result.output
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
