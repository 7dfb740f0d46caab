import numpy as np
import pytest

from dvolver import SearchSpec, resume_search, run_search
from dvolver.api import versions
from dvolver.engine import EvaluationsFailed, SearchLoop, run
from dvolver.errors import DvolverError
from dvolver.executors import InlineExecutor
from dvolver.store import Store
from search_spaces import genome_key, make_space
from search_spaces.nasnet import NASNET_A, Cell, join, split
from tests.helpers import TINY


@pytest.fixture
def db(store_url: str) -> str:
    """Every engine test on SQLite and on PostgreSQL: recording, reuse, resume and the journal go
    through the store, which the two lock and order differently."""
    return store_url


class CountingExecutor(InlineExecutor):
    """The real inline executor, counting the evaluations it is handed."""

    def __init__(self):
        self.submitted = []

    def submit(self, fn, *args):
        self.submitted.append(args[0])
        return super().submit(fn, *args)


def _front(result):
    return sorted((c.key, tuple(sorted(c.objectives.items()))) for c in result.front)


def _equivalent_nasnet_a():
    normal, reduction = split(NASNET_A, 5)
    swapped = Cell(tuple((b, ob, a, oa) for a, oa, b, ob in normal.blocks), normal.extra | 0b100)
    return join(swapped, reduction)


def _generation(loop, genomes):
    """One ask's worth of the loop: submit what is new, wait for it."""
    loop.evaluate(genomes)
    loop.wait_for({loop.key(g) for g in genomes})


def test_a_duplicate_network_is_never_trained_twice(db):
    spec = SearchSpec.from_dict(TINY)
    store = Store(db)
    search_id = store.create_search(spec.model_dump(mode="json"), versions())
    executor = CountingExecutor()
    loop = SearchLoop(store, search_id, executor, None)
    twin = _equivalent_nasnet_a()
    assert twin != NASNET_A
    _generation(loop, [NASNET_A, twin, NASNET_A])
    assert len(executor.submitted) == 1
    _generation(loop, [twin])
    assert len(executor.submitted) == 1
    [candidate] = store.candidates(search_id)
    assert candidate.status == "finished" and "test_acc" in candidate.metrics
    # A later pass over the same search (a resume) reuses the stored result.
    again = CountingExecutor()
    _generation(SearchLoop(store, search_id, again, None), [twin])
    assert again.submitted == []


def test_cheap_constraints_reject_before_training(db):
    space = make_space("nasnet", TINY["space_options"])
    rng = np.random.default_rng(0)
    from dvolver.costs import count

    macs = sorted(count(space.build(space.sample(rng), (1, 8, 8), 10), (1, 8, 8)).macs for _ in range(8))
    bound = 2 * macs[len(macs) // 2]  # FLOPs: about half of random cells pass
    executor = CountingExecutor()
    spec = SearchSpec.from_dict(TINY | {"algorithm": "nsga2", "constraints": {"max_flops": bound}})
    store = Store(db)
    search_id = store.create_search(spec.model_dump(mode="json"), versions())
    result = run(store, search_id, executor)
    rejected = [c for c in result.candidates if c.status == "infeasible"]
    assert rejected, "the bound should reject some candidates"
    assert all(c.objectives["flops"] > bound and "test_acc" not in c.metrics for c in rejected)
    assert len(executor.submitted) == result.stats.trained == 8
    assert all(c.objectives["flops"] <= bound for c in result.front)


class FlakyExecutor(InlineExecutor):
    """The real inline executor, with a fault injected into every third evaluation it runs."""

    def __init__(self):
        self.runs = 0

    def submit(self, fn, *args):
        self.runs += 1
        if self.runs % 3 == 0:
            def fn(*_):
                raise MemoryError("injected: worker ran out of memory")
        return super().submit(fn, *args)


def test_a_failing_evaluation_is_recorded_and_the_search_goes_on(db):
    store = Store(db)
    spec = SearchSpec.from_dict(TINY | {"evaluations": 9})
    search_id = store.create_search(spec.model_dump(mode="json"), versions())
    result = run(store, search_id, FlakyExecutor())
    assert result.status == "finished" and result.stats.evaluations == 9
    failed = [c for c in result.candidates if c.status == "failed"]
    assert len(failed) == 3 and all(c.error == "MemoryError: injected: worker ran out of memory" for c in failed)
    assert result.front and not {c.key for c in failed} & {c.key for c in result.front}


def test_a_search_whose_every_evaluation_fails_stops_with_the_reason(tmp_path, db):
    bad = tmp_path / "nan.npz"
    x = np.full((40, 8, 8), np.nan, dtype=np.float32)
    y = np.arange(40) % 4
    np.savez(bad, x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    with pytest.raises(EvaluationsFailed, match="all 4 evaluations so far failed; the first error: TrainingDiverged"):
        run_search(TINY | {"dataset": str(bad)}, db=db, executor="inline")
    [search] = Store(db).list_searches()
    assert search.status == "failed" and "TrainingDiverged" in search.error
    statuses = [c.status for c in Store(db).candidates(search.id)]
    # The next batch was already on its way (asks overlap training): left pending, for a resume.
    assert statuses[:4] == ["failed"] * 4 and set(statuses[4:]) <= {"pending"}


def test_constraints_nothing_can_meet_stop_the_search_with_the_reason(db):
    result = run_search(TINY | {"constraints": {"max_flops": 1}}, db=db, executor="inline")
    assert result.status == "finished" and result.stats.evaluations == 0 and result.front == []
    assert "loosen the constraints" in result.stats.stopped_early
    assert {c.status for c in result.candidates} == {"infeasible"}


def test_resume_refuses_data_that_changed(tmp_path, db):
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path / "digits.npz"
    np.savez(path, x_train=digits.images[:1200], y_train=digits.target[:1200], x_test=digits.images[1200:],
             y_test=digits.target[1200:])
    with pytest.raises(KeyboardInterrupt):
        run_search(TINY | {"dataset": str(path)}, db=db, executor="inline", on_progress=interrupt_at(2))
    np.savez(path, x_train=digits.images[:1000], y_train=digits.target[:1000], x_test=digits.images[1000:],
             y_test=digits.target[1000:])
    from dvolver import data

    data.load.cache_clear()
    with pytest.raises(DvolverError, match="ran on other data"):
        resume_search(1, db=db, executor="inline")


def interrupt_at(evaluations):
    """A progress callback that presses Ctrl-C once the search has this many evaluations."""
    def callback(progress):
        if progress.evaluations == evaluations:
            raise KeyboardInterrupt
    return callback


def test_interrupted_search_resumes_without_retraining(db):
    spec = TINY | {"evaluations": 10}
    with pytest.raises(KeyboardInterrupt):
        run_search(spec, db=db, executor="inline", on_progress=interrupt_at(4))
    store = Store(db)
    [search] = store.list_searches()
    assert search.status == "interrupted"
    done_before = {c.key: c.metrics for c in store.candidates(search.id, ("finished",))}
    assert len(done_before) == 4

    executor = CountingExecutor()
    resumed = run(store, search.id, executor)
    retrained = {genome_key("nasnet", g) for g in executor.submitted}
    assert not retrained & set(done_before)
    assert len(executor.submitted) == 6 and resumed.stats.reused == 4
    for c in resumed.candidates:
        if c.key in done_before:
            assert c.metrics == done_before[c.key]
    finished_events = [e for e in store.events(search.id) if e["kind"] == "candidate"
                       and e["payload"]["status"] == "finished"]
    assert len(finished_events) == 10  # one per candidate: nothing was recorded twice

    straight = run_search(spec, db=db, executor="inline")  # a second search in the same store
    assert _front(straight) == _front(resumed)


def test_resume_of_a_finished_search_is_refused(db):
    result = run_search(TINY | {"evaluations": 2, "population": 2}, db=db, executor="inline")
    with pytest.raises(DvolverError, match="already finished"):
        resume_search(result.search_id, db=db, executor="inline")


@pytest.mark.ray
def test_ray_and_inline_give_the_same_front(ray_local, db):
    spec = TINY | {"evaluations": 8, "seed": 5}
    on_ray = run_search(spec, db=db, executor="ray", workers=2)
    inline = run_search(spec, db=db, executor="inline")
    assert _front(on_ray) == _front(inline) and on_ray.front
    workers = {c.worker for c in on_ray.candidates}
    assert len(workers) == 2  # both Ray workers trained candidates
    assert on_ray.stats.workers == 2 and 0 < on_ray.stats.utilisation <= 1


def test_nb201_table_search_finds_a_front(nb201_table, db):
    result = run_search({"space": "nb201", "space_options": {"table": str(nb201_table)}, "evaluations": 200,
                         "population": 20}, db=db)
    assert result.stats.evaluations == 200 == len({c.key for c in result.candidates})
    assert len(result.front) >= 8
    accs = [c.objectives["acc"] for c in result.front]
    assert max(accs) > 93.5


def test_latency_is_measured_by_the_worker_when_asked_for(db):
    result = run_search(TINY | {"objectives": ["acc", "latency"], "evaluations": 2, "population": 2,
                                "training": TINY["training"] | {"latency_repeats": 3}}, db=db, executor="inline")
    for c in result.candidates:
        assert c.objectives["latency"] > 0 and c.metrics["latency"] == c.objectives["latency"]


def test_the_driver_reports_its_own_cpu_seconds_apart_from_the_evaluations(db):
    result = run_search(TINY | {"evaluations": 6, "population": 3}, db=db, executor="inline")
    stats = result.stats
    assert stats.driver_cpu_seconds > 0 and stats.driver_cpu_seconds_per_evaluation > 0
    assert stats.driver_cpu_seconds_per_evaluation == pytest.approx(stats.driver_cpu_seconds / 6, abs=1e-3)
    # Inline, the trainings ran in the driver's process; they are not the driver's own cost.
    assert stats.driver_cpu_seconds < stats.wall_seconds
    assert stats.time_limit_hit is False


def test_a_time_limit_ends_the_search_cleanly_and_says_so(db):
    spec = TINY | {"evaluations": 200, "population": 4, "time_limit_s": 0.01}
    result = run_search(spec, db=db, executor="inline")
    assert result.status == "finished" and result.stats.time_limit_hit is True
    assert "time limit of 0.01 s was reached" in result.stats.stopped_early
    done = [c for c in result.candidates if c.status == "finished"]
    assert 0 < len(done) < 200 and result.front  # what was in flight finished and counts
    assert not [c for c in result.candidates if c.status == "pending"]
