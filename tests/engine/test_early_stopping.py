"""Early stopping inside the search: rungs, promotion by Pareto standing, what the algorithm is told,
what users see, and bad specs."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from bench.synthetic_tables import learning_curve_table
from dvolver import run_search
from dvolver.ask_tell import Told
from dvolver.errors import SpecError
from dvolver.halving import Halving
from dvolver.rungs import ranked, rung_epochs
from dvolver.spec import EarlyStoppingSpec, SearchSpec
from dvolver.store import Store
from dvolver.surrogate_search import SurrogateSearch
from search_spaces import make_space
from tests.helpers import TINY, keyer

ES = {"method": "sha", "min_epochs": 1, "eta": 3}


@pytest.fixture(scope="module")
def curve_table(tmp_path_factory):
    path = tmp_path_factory.mktemp("curves") / "curves.csv"
    rows = learning_curve_table(3)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _table_search(table, db, **overrides):
    spec = {"space": "nb201", "space_options": {"table": str(table)}, "objectives": ["acc", "flops"],
            "evaluations": 60, "population": 12, "seed": 1, "early_stopping": ES} | overrides
    return run_search(spec, db=str(db), executor="inline")


def test_rungs_multiply_by_eta_and_end_at_max_epochs():
    assert rung_epochs(EarlyStoppingSpec(min_epochs=1, eta=3, max_epochs=27)) == (1, 3, 9, 27)
    assert rung_epochs(EarlyStoppingSpec(min_epochs=2, eta=2, max_epochs=10)) == (2, 4, 8, 10)


def test_ranking_is_by_pareto_standing_before_accuracy():
    # (negated accuracy, flops): the cheap, less accurate network is on the front; the dominated one is last.
    F = np.array([[-90.0, 10.0], [-60.0, 1.0], [-80.0, 12.0]])
    assert ranked(F)[-1] == 2
    assert set(ranked(F)[:2]) == {0, 1}


def test_sha_waits_for_the_whole_ask_and_asha_decides_at_once():
    es = EarlyStoppingSpec(method="sha", min_epochs=1, eta=3, max_epochs=9)
    sha = Halving(es)
    for i in range(3):
        sha.start(f"k{i}", 0, np.array([1.0]))  # equal costs: accuracy alone decides
    assert sha.result("k0", 50.0) == [] and sha.result("k1", 70.0) == []
    decisions = {d.key: d.verdict for d in sha.result("k2", 60.0)}
    assert decisions == {"k0": "stop", "k1": "go", "k2": "stop"}

    asha = Halving(es.model_copy(update={"method": "asha"}))
    for i in range(3):
        asha.start(f"k{i}", i, np.array([1.0]))
    assert [d.verdict for d in asha.result("k0", 50.0)] == ["go"]  # the first result at a rung goes on
    assert [d.verdict for d in asha.result("k1", 40.0)] == ["stop"]
    assert [d.verdict for d in asha.result("k2", 70.0)] == ["go"]


def test_a_table_search_stops_candidates_early_and_fronts_only_full_fidelity(curve_table, tmp_path):
    result = _table_search(curve_table, tmp_path / "es.db")
    table = make_space("nb201", {"table": str(curve_table)}).table
    stopped = [c for c in result.candidates if c.status == "stopped"]
    finished = [c for c in result.candidates if c.status == "finished"]
    assert stopped and finished and len(stopped) + len(finished) == 60
    for c in stopped:
        epochs, acc = c.metrics["rungs"][-1]
        assert c.metrics["rung"] < c.metrics["rungs_total"] == 4 and acc == c.objectives["acc"]
        assert acc == table.acc_at(c.genome, epochs)  # the table's own number, at the rung it reached
    for c in finished:
        assert c.metrics["epochs"] == 27 and c.objectives["acc"] == table.acc_at(c.genome, 27)
    assert result.front and all(c.status == "finished" for c in result.front)
    stats = result.stats
    assert stats.full_fidelity_epochs == 60 * 27
    assert stats.training_epochs == sum(c.metrics["epochs"] for c in result.candidates)
    assert stats.training_epochs < 0.5 * stats.full_fidelity_epochs
    assert stats.stopped == len(stopped)


def test_the_same_seed_gives_the_same_early_stopped_search(curve_table, tmp_path):
    runs = [_table_search(curve_table, tmp_path / f"{i}.db", early_stopping=ES | {"method": "asha"})
            for i in range(2)]
    a, b = ([(c.key, c.status, c.objectives, c.metrics.get("rungs")) for c in r.candidates] for r in runs)
    assert a == b


def test_the_surrogate_fronts_full_fidelity_rows_and_models_fidelity():
    space = make_space("nb201")
    algo = SurrogateSearch(space, keyer(space), 4, 2, seed=0)
    genomes = algo.ask()[:4]
    # The two stopped rows look better than any finished one: they must not make the front.
    F = np.array([[-50.0, 1.0], [-55.0, 2.0], [-95.0, 0.5], [-96.0, 0.4]])
    algo.tell(genomes, Told(F, np.zeros(4), ("finished", "finished", "stopped", "stopped"),
                            np.array([1.0, 1.0, 1 / 9, 1 / 3])))
    assert set(np.flatnonzero(algo._comparable())) == {0, 1}
    assert algo.ask()  # fits with fidelity as an input and asks again


def test_told_refuses_a_fidelity_outside_zero_to_one():
    with pytest.raises(ValueError, match="fidelity"):
        Told(np.zeros((1, 2)), np.zeros(1), ("stopped",), np.array([0.0]))


@pytest.mark.parametrize("early_stopping, field", [
    ({"method": "sha", "eta": 1}, "early_stopping.eta"),
    ({"method": "sha", "min_epochs": 9, "max_epochs": 3}, "early_stopping.min_epochs"),
    ({"method": "halving"}, "early_stopping.method"),
    ({"method": "sha", "tie_break": "random"}, "early_stopping.tie_break"),
    ({"method": "asha", "min_epochs": 5}, "early_stopping.min_epochs"),  # max_epochs defaults to training.epochs 5
])
def test_a_bad_early_stopping_spec_names_its_field(early_stopping, field):
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        SearchSpec.from_dict({"early_stopping": early_stopping})


def test_early_stopping_in_table_mode_needs_learning_curves(nb201_table):
    with pytest.raises(SpecError, match="early_stopping: the table has no learning curves"):
        SearchSpec.from_dict({"space": "nb201", "space_options": {"table": str(nb201_table)},
                              "early_stopping": ES})


def test_early_stopping_rungs_must_be_columns_of_the_table(curve_table):
    with pytest.raises(SpecError, match="no accuracy after 40"):
        SearchSpec.from_dict({"space": "nb201", "space_options": {"table": str(curve_table)},
                              "early_stopping": ES | {"max_epochs": 40}})


def test_early_stopping_refuses_pruning():
    with pytest.raises(SpecError, match="early_stopping: pruning methods"):
        SearchSpec.from_dict({"space": "conv2", "pruning": {"methods": ["magnitude"]}, "early_stopping": ES})


def test_the_cli_refuses_a_bad_early_stopping_and_creates_nothing(tmp_path):
    db = tmp_path / "cli.db"
    for flag, said in (("sha,eta=1", "early_stopping.eta"), ("sha,rate=3", "--early-stopping: cannot read 'rate=3'"),
                       ("asha,tie_break=best", "early_stopping.tie_break")):
        done = subprocess.run([sys.executable, "-m", "dvolver", "search", "--early-stopping", flag, "--db", str(db)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and said in done.stderr, done.stderr
    assert not db.exists() or Store(f"sqlite:///{db}").list_searches() == []


def test_a_trained_search_with_asha_stops_some_and_shows_the_epochs(tmp_path):
    spec = TINY | {"training": {"epochs": 3, "train_limit": 300, "latency_repeats": 1}, "evaluations": 8,
                   "early_stopping": ES | {"method": "asha"}}
    db = tmp_path / "trained.db"
    done = subprocess.run([sys.executable, "-m", "dvolver", "search", "--spec", _write(tmp_path, spec), "--db",
                           str(db), "--executor", "inline", "--plot", str(tmp_path / "f.png")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    stats = json.loads(subprocess.run([sys.executable, "-m", "dvolver", "show", "1", "--db", str(db)],
                                      capture_output=True, text=True, timeout=120).stdout)["stats"]
    assert stats["full_fidelity_epochs"] == 8 * 3 and stats["training_epochs"] < 8 * 3
    assert "epochs " in done.stderr and "stopped early" in done.stderr


@pytest.mark.parametrize("keep_weights", [True, False])
def test_final_rows_hold_their_own_weights_never_a_rungs_checkpoint(tmp_path, keep_weights):
    from dvolver.export import ExportError, export_candidate

    spec = TINY | {"training": {"epochs": 3, "train_limit": 300, "latency_repeats": 1,
                                "keep_weights": keep_weights},
                   "early_stopping": ES | {"method": "asha"}, "seed": 2}
    result = run_search(spec, db=str(tmp_path / "w.db"), executor="inline")
    store = Store(str(tmp_path / "w.db"))
    by_status = {s: [c for c in result.candidates if c.status == s] for s in ("finished", "stopped")}
    assert by_status["finished"] and by_status["stopped"]
    assert all("acc" in c.objectives and c.metrics["rung"] < c.metrics["rungs_total"] for c in by_status["stopped"])
    for c in by_status["finished"] + by_status["stopped"]:
        if keep_weights:  # the weights at its last rung, which load as the candidate's network
            assert export_candidate(store, result.search_id, c.id, "state_dict").data
        else:
            assert store.weights(c.id) is None
            with pytest.raises(ExportError, match="no trained weights"):
                export_candidate(store, result.search_id, c.id, "state_dict")


def _write(folder, spec) -> str:
    path = folder / "spec.json"
    path.write_text(json.dumps(spec))
    return str(path)


def test_the_service_lists_each_candidates_rung(curve_table, tmp_path):
    from service.views import candidate

    result = _table_search(curve_table, tmp_path / "listed.db", evaluations=30)
    listed = [candidate(c, frozenset(f.id for f in result.front)) for c in result.candidates]
    assert {(c.status, c.rung == c.rungs == 4) for c in listed} == {("stopped", False), ("finished", True)}
    assert all(c.rung == len(c.metrics["rungs"]) for c in listed)
    assert not any(c.on_front for c in listed if c.status == "stopped")


def test_the_surrogate_tie_break_asks_the_model_and_replays(curve_table, tmp_path, monkeypatch):
    asked = []
    original = SurrogateSearch.front_probability

    def counted(self, genomes):
        p = original(self, genomes)
        asked.append(p)
        return p

    monkeypatch.setattr(SurrogateSearch, "front_probability", counted)
    runs = [_table_search(curve_table, tmp_path / f"s{i}.db", evaluations=40,
                          early_stopping=ES | {"tie_break": "surrogate"}) for i in range(2)]
    assert asked and all(((p >= 0) & (p <= 1)).all() for p in asked)
    assert any(((p > 0) & (p < 1)).any() for p in asked)  # the model is unsure of some: a real probability
    a, b = ([(c.key, c.status, c.metrics.get("rungs")) for c in r.candidates] for r in runs)
    assert a == b
