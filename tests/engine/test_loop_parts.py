"""The engine's parts through their public seams: the front tracker, the dispatcher, the ask journal, the stats."""

import itertools

import numpy as np
import pytest

from dvolver import SearchSpec
from dvolver.algorithms import make_algorithm
from dvolver.api import versions
from dvolver.dispatch import Dispatcher, OverlapWindow, Work
from dvolver.executors import InlineExecutor, Outcome
from dvolver.front import FrontTracker, pareto_front
from dvolver.journal import AskJournal, ReplayDiverged
from dvolver.run_stats import RunStats
from dvolver.store import Candidate, Store
from search_spaces import genome_key, make_space
from tests.helpers import TINY, table_spec


def _candidate(i, acc, flops, status="finished"):
    return Candidate(i, 1, f"k{i}", (i,), status, {"acc": acc, "flops": flops}, {}, None, None, None)


def test_the_tracked_front_is_what_pairwise_comparison_keeps_at_every_step():
    spec = SearchSpec.from_dict(TINY | {"objectives": ["acc", "flops"]})
    rng = np.random.default_rng(0)
    tracker = FrontTracker(spec)
    seen = []
    for i in range(60):
        c = _candidate(i, float(rng.integers(0, 20)) / 20, float(rng.integers(1, 20)),
                       "failed" if i % 7 == 3 else "finished")
        seen.append(c)
        tracker.add(c)
        finished = [d for d in seen if d.status == "finished"]
        beaten = {a.id for a, b in itertools.permutations(finished, 2)
                  if b.objectives["acc"] >= a.objectives["acc"] and b.objectives["flops"] <= a.objectives["flops"]
                  and b.objectives != a.objectives}
        assert {c.id for c in tracker.members} == {d.id for d in finished} - beaten
        assert {c.id for c in tracker.members} == {c.id for c in pareto_front(seen, spec)}


def test_the_hypervolume_box_is_fixed_at_the_first_front():
    spec = SearchSpec.from_dict(TINY | {"objectives": ["acc", "flops"]})
    tracker = FrontTracker(spec)
    first = [_candidate(0, 0.5, 10.0), _candidate(1, 0.9, 20.0)]
    for c in first:
        tracker.add(c)
    # Minimised, (-0.5, 10) and (-0.9, 20) normalise to (1, 0) and (0, 1); with the reference at
    # (1.1, 1.1) the region they dominate is the square less the unit square between them.
    hv = tracker.measure(2, first)
    assert hv == pytest.approx(1.1 * 1.1 - 1.0 * 1.0)
    # (-0.95, 15) normalises to (-0.125, 0.5), past the box's ideal: the box stays, and it replaces (0, 1).
    better = _candidate(2, 0.95, 15.0)
    assert tracker.add(better) and {c.id for c in tracker.members} == {0, 2}
    assert tracker.measure(3, [*first, better]) == pytest.approx(1.125 * 0.6 + 0.1 * 1.1)
    assert tracker.box[0].tolist() == [-0.9, 10.0] and [e for e, _ in tracker.history] == [2, 3]


class _Recorder(InlineExecutor):
    def __init__(self):
        self.order = []

    def submit(self, fn, *args):
        self.order.append(args[0])
        return super().submit(lambda *a: {"acc": 0.5}, *args)


def test_the_dispatcher_sends_the_costliest_first_and_counts_busy_seconds():
    spec = SearchSpec.from_dict(TINY)
    executor = _Recorder()
    dispatcher = Dispatcher(executor, spec, None)
    batch = [Work(f"k{m}", (m,), {"macs": m}) for m in (5, 50, 1, 20)]
    dispatcher.send(batch)
    assert executor.order == [(50,), (20,), (5,), (1,)] and len(dispatcher) == 4 and "k5" in dispatcher
    got = list(dispatcher.results({"k1", "k5"}, tick=lambda: None))
    assert {w.key for w, _ in got} == {"k1", "k5", "k20", "k50"} and len(dispatcher) == 0
    assert all(isinstance(o, Outcome) and o.value == {"acc": 0.5} for _, o in got)
    assert sum(dispatcher.busy.values()) == pytest.approx(sum(o.seconds for _, o in got))
    assert 0 < dispatcher.utilisation() <= 1


def test_the_overlap_window_holds_one_ask_or_two():
    for overlapped, depth in ((False, 1), (True, 2)):
        window = OverlapWindow(overlapped)
        for i in range(depth):
            assert window.has_room()
            window.push([(i,)], 1)
        assert not window.has_room() and window.pop() == ([(0,)], 1)


def test_a_replay_that_asks_otherwise_stops_at_the_generation_it_diverged(nb201_table, db):
    store = Store(db)
    spec = SearchSpec.from_dict(table_spec(nb201_table))
    search_id = store.create_search(spec.model_dump(mode="json"), versions())
    space = make_space("nb201")

    def key(g):
        return genome_key(space.name, space.canonical(g))

    def algorithm(seed):
        return make_algorithm("random", space, key, 4, 2, seed)

    first = AskJournal(store, search_id, key, {})
    original = algorithm(0)
    asked = [first.ask(original) for _ in range(3)]
    assert len(store.events(search_id, kinds=("ask",))) == 3
    replay = AskJournal(store, search_id, key, {"dvolver": "then"})
    same = algorithm(0)
    assert [replay.ask(same) for _ in range(3)] == asked
    assert len(store.events(search_id, kinds=("ask",))) == 3  # a faithful replay journals nothing again
    with pytest.raises(ReplayDiverged, match=r"diverged at generation 0 \(rng_state differs.*'dvolver': 'then'"):
        AskJournal(store, search_id, key, {"dvolver": "then"}).ask(algorithm(1))


def test_stats_read_back_typed_whatever_a_search_has_written_so_far():
    assert RunStats.from_dict({}) == RunStats()
    stats = RunStats.from_dict({"evaluations": 7, "utilisation": 0.5, "a_field_from_elsewhere": 1})
    assert (stats.evaluations, stats.utilisation, stats.front_size) == (7, 0.5, 0)
    assert "hypervolume_history" not in stats.summary() and stats.to_dict()["evaluations"] == 7


def test_a_nan_objective_is_told_as_never_measured():
    """A table row may hold NaN: it reaches the algorithm as +inf with its status, not as an error."""
    from dvolver.engine import told

    spec = SearchSpec.from_dict(TINY | {"objectives": ["acc", "flops"]})
    answer = told([_candidate(0, float("nan"), 5.0), _candidate(1, 0.5, 5.0)], spec)
    assert answer.F.tolist() == [[np.inf, 5.0], [-0.5, 5.0]] and answer.measured.tolist() == [False, True]
