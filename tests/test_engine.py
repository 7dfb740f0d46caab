import numpy as np
import pytest

from dvolver import SearchSpec, resume_search, run_search
from dvolver.engine import _Run
from dvolver.executors import InlineExecutor
from dvolver.store import Store
from search_spaces import genome_key, make_space
from search_spaces.nasnet import NASNET_A, Cell, join, split

from .conftest import TINY


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


def test_a_duplicate_network_is_never_trained_twice(db):
    spec = SearchSpec.from_dict(TINY)
    store = Store(db)
    search_id = store.create_search(spec.model_dump(mode="json"), {})
    executor = CountingExecutor()
    loop = _Run(store, search_id, executor, None)
    twin = _equivalent_nasnet_a()
    assert twin != NASNET_A
    loop._generation([NASNET_A, twin, NASNET_A])
    assert len(executor.submitted) == 1
    loop._generation([twin])
    assert len(executor.submitted) == 1
    [candidate] = store.candidates(search_id)
    assert candidate.status == "finished" and "test_acc" in candidate.metrics
    # A later pass over the same search (a resume) reuses the stored result.
    again = CountingExecutor()
    _Run(store, search_id, again, None)._generation([twin])
    assert again.submitted == []


def test_cheap_constraints_reject_before_training(db):
    space = make_space("nasnet", TINY["space_options"])
    rng = np.random.default_rng(0)
    from dvolver.costs import count

    macs = sorted(count(space.build(space.sample(rng), (1, 8, 8), 10), (1, 8, 8)).macs for _ in range(8))
    bound = 2 * macs[len(macs) // 2]  # FLOPs: about half of random cells pass
    executor = CountingExecutor()
    spec = SearchSpec.from_dict(TINY | {"constraints": {"max_flops": bound}})
    store = Store(db)
    search_id = store.create_search(spec.model_dump(mode="json"), {})
    from dvolver.engine import run

    result = run(store, search_id, executor)
    rejected = [c for c in result.candidates if c.status == "infeasible"]
    assert rejected, "the bound should reject some candidates"
    assert all(c.objectives["flops"] > bound and "test_acc" not in c.metrics for c in rejected)
    assert len(executor.submitted) == result.stats["trained"] == 8
    assert all(c.objectives["flops"] <= bound for c in result.front)


def test_a_failing_evaluation_is_recorded_and_the_search_goes_on(tmp_path, db):
    bad = tmp_path / "nan.npz"
    x = np.full((40, 8, 8), np.nan, dtype=np.float32)
    y = np.arange(40) % 4
    np.savez(bad, x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    result = run_search(TINY | {"dataset": str(bad), "evaluations": 4}, db=db, executor="inline")
    assert result.status == "finished"
    assert [c.status for c in result.candidates] == ["failed"] * 4
    assert all("TrainingDiverged" in c.error for c in result.candidates)
    assert result.front == []


def test_interrupted_search_resumes_without_retraining(db):
    spec = TINY | {"evaluations": 10}
    seen = []

    def stop_after_four(progress):
        seen.append(progress.evaluations)
        if progress.evaluations == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(spec, db=db, executor="inline", on_progress=stop_after_four)
    store = Store(db)
    [search] = store.list_searches()
    assert search.status == "interrupted"
    done_before = {c.key: c.metrics for c in store.candidates(search.id, ("finished",))}
    assert len(done_before) == 4

    executor = CountingExecutor()
    from dvolver.engine import run

    resumed = run(store, search.id, executor)
    retrained = {genome_key("nasnet", g) for g in executor.submitted}
    assert not retrained & set(done_before)
    assert len(executor.submitted) == 6 and resumed.stats["reused"] == 4
    for c in resumed.candidates:
        if c.key in done_before:
            assert c.metrics == done_before[c.key]
    finished_events = [e for e in store.events(search.id) if e["kind"] == "candidate"
                       and e["payload"]["status"] == "finished"]
    assert len(finished_events) == 10  # one per candidate: nothing was recorded twice

    straight = run_search(spec, db=str(db) + ".straight", executor="inline")
    assert _front(straight) == _front(resumed)


def test_resume_of_a_finished_search_is_refused(db):
    result = run_search(TINY | {"evaluations": 2, "population": 2}, db=db, executor="inline")
    from dvolver.errors import DvolverError

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
    assert on_ray.stats["workers"] == 2 and 0 < on_ray.stats["utilisation"] <= 1


def test_nb201_table_search_finds_a_front(nb201_table, db):
    result = run_search({"space": "nb201", "space_options": {"table": str(nb201_table)}, "evaluations": 200,
                         "population": 20}, db=db)
    assert result.stats["evaluations"] == 200 == len({c.key for c in result.candidates})
    assert len(result.front) >= 8
    accs = [c.objectives["acc"] for c in result.front]
    assert max(accs) > 93.5


def test_latency_is_measured_by_the_worker_when_asked_for(db):
    result = run_search(TINY | {"objectives": ["acc", "latency"], "evaluations": 2, "population": 2,
                                "training": TINY["training"] | {"latency_repeats": 3}}, db=db, executor="inline")
    for c in result.candidates:
        assert c.objectives["latency"] > 0 and c.metrics["latency"] == c.objectives["latency"]
