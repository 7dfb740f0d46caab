"""Learning curves in NAS-Bench-201 tables (NB201Table's acc_epoch_<E> columns) and the synthetic
tables that carry them (bench/synthetic_tables.py --curves)."""

from __future__ import annotations

import csv
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import synthetic_tables
from bench.synthetic_tables import (
    CURVE_EPOCHS,
    curve_kendall_tau,
    learning_curve_table,
    synthetic_table,
)
from search_spaces.nb201 import ALL_GENOMES, NB201Table, TableRow, live_edges

HEADER = "op0,op1,op2,op3,op4,op5,val_acc,flops,params"
# Curve columns out of order on purpose: the table sorts them by epoch, numerically (10 after 3).
CURVE_HEADER = HEADER + ",acc_epoch_10,acc_epoch_1,acc_epoch_3"
CURVE_LINES = [
    "3,3,3,3,3,3,91.5,100,2000,91.25,40.5,70.125",
    "1,2,4,0,1,2,80.0,30,500,78.0,55.0,66.5",
]


def write(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


@pytest.fixture
def curve_table(tmp_path: Path) -> NB201Table:
    return NB201Table(write(tmp_path / "curves.csv", CURVE_HEADER, CURVE_LINES))


def test_curve_columns_parse_by_epoch(curve_table):
    assert curve_table.curve_epochs == (1, 3, 10)
    row = curve_table.lookup((3,) * 6)
    assert row.curve == ((1, 40.5), (3, 70.125), (10, 91.25))
    assert [curve_table.acc_at((3,) * 6, e) for e in (1, 3, 10)] == [40.5, 70.125, 91.25]
    assert [curve_table.acc_at((1, 2, 4, 0, 1, 2), e) for e in (1, 3, 10)] == [55.0, 66.5, 78.0]
    # the accuracy column stays the full-fidelity accuracy, not the curve's last point
    assert row.acc == 91.5 and curve_table.lookup((1, 2, 4, 0, 1, 2)).acc == 80.0
    assert (row.flops, row.params) == (100.0, 2000.0)


def test_table_row_keeps_its_positional_fields_and_stays_frozen():
    row = TableRow(90.0, 1e6, 2e5)
    assert (row.acc, row.flops, row.params, row.curve) == (90.0, 1e6, 2e5, ())
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.curve = ((1, 50.0),)  # type: ignore[misc]


def test_an_absent_epoch_names_the_epochs_the_table_holds(curve_table):
    with pytest.raises(KeyError, match=r"no accuracy after 2 epochs: its curve epochs are 1, 3, 10"):
        curve_table.acc_at((3,) * 6, 2)
    with pytest.raises(KeyError, match="is not in"):  # an absent cell is still the lookup's error
        curve_table.acc_at((0,) * 6, 1)


@pytest.mark.parametrize("cell", ["abc", ""])
def test_a_bad_curve_cell_names_file_line_and_column(tmp_path, cell):
    lines = [CURVE_LINES[0], CURVE_LINES[1].rsplit(",", 2)[0] + f",{cell},66.5"]
    path = write(tmp_path / "bad.csv", CURVE_HEADER, lines)
    with pytest.raises(ValueError, match=rf"bad\.csv line 3: column acc_epoch_1: '{cell}' is not a number"):
        NB201Table(path)


def test_a_short_row_is_a_bad_curve_cell(tmp_path):
    path = write(tmp_path / "short.csv", CURVE_HEADER, [CURVE_LINES[0], CURVE_LINES[1].rsplit(",", 1)[0]])
    with pytest.raises(ValueError, match=r"short\.csv line 3: column acc_epoch_3: None is not a number"):
        NB201Table(path)


@pytest.mark.parametrize("column", ["acc_epoch_0", "acc_epoch_01", "acc_epoch_x", "acc_epoch_"])
def test_a_misnamed_curve_column_is_refused(tmp_path, column):
    path = write(tmp_path / "named.csv", HEADER + f",{column}", ["3,3,3,3,3,3,91.5,100,2000,50"])
    with pytest.raises(ValueError, match=rf"named\.csv column '{column}': a curve column is acc_epoch_<E>"):
        NB201Table(path)


def test_a_table_without_curve_columns_has_none(tmp_path):
    table = NB201Table(write(tmp_path / "plain.csv", HEADER, ["3,3,3,3,3,3,91.5,100,2000"]))
    assert table.curve_epochs == ()
    assert table.lookup((3,) * 6).curve == ()
    with pytest.raises(KeyError, match="its curve epochs are none"):
        table.acc_at((3,) * 6, 1)


def test_the_real_table_has_no_curves(nb201_table):
    table = NB201Table(nb201_table)
    assert table.curve_epochs == ()
    assert len(table.rows) == len(ALL_GENOMES)
    assert all(row.curve == () for row in table.rows.values())




@pytest.fixture(scope="module")
def curves_0() -> list[dict[str, object]]:
    return learning_curve_table(0)


def test_synthetic_curves_end_at_the_full_fidelity_accuracy(curves_0):
    columns = [f"acc_epoch_{e}" for e in CURVE_EPOCHS]
    assert tuple(range(1, 28)) == CURVE_EPOCHS
    assert len(curves_0) == len(ALL_GENOMES)
    assert all(set(columns) <= set(row) for row in curves_0)
    assert all(row["acc_epoch_27"] == row["test_acc"] for row in curves_0)
    # the columns synthetic_table has are left as it draws them
    assert [{k: v for k, v in row.items() if not k.startswith("acc_epoch_")} for row in curves_0] == synthetic_table(0)


def test_synthetic_curves_saturate_and_cross(curves_0):
    final = np.array([row["test_acc"] for row in curves_0], dtype=float)
    learns = final > 20  # cells that learn something (not the zero-output ones, flat at chance)
    curve = np.array([[row[f"acc_epoch_{e}"] for e in CURVE_EPOCHS] for row in curves_0], dtype=float)[learns]
    assert np.all(curve[:, 0] < final[learns] - 20)  # far from the end after one epoch
    assert np.mean(np.abs(curve[:, 20] - final[learns])) < 2.0  # nearly there by epoch 21
    assert np.mean(curve[:, 2] - curve[:, 0]) > 5 * np.mean(np.abs(curve[:, 26] - curve[:, 25]))  # saturating
    tau = curve_kendall_tau(curves_0, 1)
    assert 0.3 < tau < 0.95  # early ranks predict the final ones only partly
    # and not from noise alone: many pairs lead by 2 points after one epoch and end 2 points behind
    # (none do without the per-network speed: the epoch noise is a few tenths of a point)
    first, end = curve[:3000, 0], final[learns][:3000]
    crossed = (first[:, None] - first[None, :] > 2) & (end[:, None] - end[None, :] < -2)
    assert crossed.sum() > 1000
    assert curve_kendall_tau(curves_0, 1) < curve_kendall_tau(curves_0, 9) < 1.0


def test_larger_networks_tend_to_start_slower(curves_0):
    n3 = np.array([sum(1 for e, alive in enumerate(live_edges(g)) if alive and g[e] == 3) for g in ALL_GENOMES])
    final = np.array([row["test_acc"] for row in curves_0], dtype=float)
    first = np.array([row["acc_epoch_1"] for row in curves_0], dtype=float)
    share = (first - 10.0) / np.maximum(final - 10.0, 1e-9)  # of the way from chance to the end
    learns = final > 20
    assert share[learns & (n3 == 0)].mean() > share[learns & (n3 >= 3)].mean()


def test_synthetic_curves_follow_the_seed(curves_0):
    assert learning_curve_table(0) == curves_0
    other = learning_curve_table(1)
    assert [row["acc_epoch_1"] for row in other] != [row["acc_epoch_1"] for row in curves_0]


def test_given_epochs_end_at_the_full_fidelity_accuracy():
    rows = learning_curve_table(2, epochs=(9, 1, 3))
    assert [c for c in rows[0] if c.startswith("acc_epoch_")] == ["acc_epoch_1", "acc_epoch_3", "acc_epoch_9"]
    assert all(row["acc_epoch_9"] == row["test_acc"] for row in rows)
    with pytest.raises(ValueError, match="positive"):
        learning_curve_table(2, epochs=(0, 3))


def test_the_cli_writes_curve_tables_that_nb201_table_reads(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["synthetic_tables.py", str(tmp_path), "--tables", "1", "--seed", "3",
                                      "--curves"])
    synthetic_tables.main()
    table = NB201Table(tmp_path / "synthetic_curves_3.csv")
    assert table.curve_epochs == CURVE_EPOCHS
    with (tmp_path / "synthetic_curves_3.csv").open(newline="") as fh:
        first = next(csv.DictReader(fh))
    genome = tuple(int(first[f"op{i}"]) for i in range(6))
    assert table.acc_at(genome, 5) == float(first["acc_epoch_5"])
    assert all(table.acc_at(g, 27) == row.acc for g, row in table.rows.items())
