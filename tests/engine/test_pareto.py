import numpy as np
import pytest

from dvolver.pareto import (
    dominates,
    hypervolume,
    hypervolume_improvement,
    hypervolume_improvements_2d,
    igd,
    knee_point,
    non_dominated,
)


def test_non_dominated_keeps_ties_and_drops_dominated():
    F = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [2, 2]])
    assert non_dominated(F).tolist() == [True, True, True, False, True]
    assert dominates([1, 1], [1, 2]) and not dominates([1, 2], [1, 2])


def test_hypervolume_of_a_staircase():
    F = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    # Slices left to right up to the reference (1.1, 1.1): x in [0, 0.5) is 0.1 tall, [0.5, 1) is
    # 0.6 tall, [1, 1.1) is 1.1 tall: 0.05 + 0.3 + 0.11 = 0.46.
    assert hypervolume(F, np.array([1.1, 1.1])) == pytest.approx(0.46)
    assert hypervolume(np.array([[2.0, 2.0]]), np.array([1.1, 1.1])) == 0.0


def test_igd_and_knee():
    front = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert igd(front, front) == 0.0
    assert igd(np.array([[0.0, 1.0]]), front) == pytest.approx(np.sqrt(2) / 2)
    assert knee_point(np.array([[0.0, 1.0], [0.4, 0.4], [1.0, 0.0]])) == 1


@pytest.mark.parametrize("m", [2, 3, 4])
def test_hypervolume_and_igd_agree_with_pymoo(m):
    from pymoo.indicators.hv import HV
    from pymoo.indicators.igd import IGD

    rng = np.random.default_rng(m)
    reference = np.full(m, 1.1)
    for trial in range(25):
        F = rng.random((int(rng.integers(1, 40)), m))
        if trial % 2:  # a curved front, most points mutually non-dominated
            F /= np.linalg.norm(F, axis=1, keepdims=True)
        assert hypervolume(F, reference) == pytest.approx(HV(ref_point=reference)(F), abs=1e-12)
        point = rng.random(m)
        gain = hypervolume(np.vstack([F, point]), reference) - hypervolume(F, reference)
        assert hypervolume_improvement(point, F, reference) == pytest.approx(gain, abs=1e-12)
        front = rng.random((int(rng.integers(1, 20)), m))
        assert igd(F, front) == pytest.approx(IGD(front)(F), abs=1e-12)
    assert hypervolume(np.array([[2.0] * m]), reference) == 0.0


@pytest.mark.parametrize("m", [2, 3])
def test_non_dominated_agrees_with_pymoo_on_tie_heavy_points(m):
    # Two objectives take a sort-based path, more take the general one: both must give pymoo's first front,
    # equal points and shared coordinates (many networks share a cost) included.
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    rng = np.random.default_rng(m)
    for _ in range(200):
        F = rng.integers(0, int(rng.integers(2, 8)), size=(int(rng.integers(1, 60)), m)).astype(float)
        expected = np.zeros(len(F), dtype=bool)
        expected[NonDominatedSorting().do(F, only_non_dominated_front=True)] = True
        assert non_dominated(F).tolist() == expected.tolist()


def test_vectorised_two_objective_improvements_agree_with_pymoo():
    """The surrogate search scores thousands of (candidate, quadrature node) points per ask at once:
    each must be pymoo's hypervolume with the point minus without it, for points beyond the reference,
    on the front, dominated, and for a front with repeated points or none."""
    from pymoo.indicators.hv import HV

    rng = np.random.default_rng(0)
    reference = np.full(2, 1.1)
    for trial in range(40):
        front = rng.random((int(rng.integers(0, 12)), 2))
        if trial % 3 == 0 and len(front):
            front = np.vstack([front, front[:2]])
        points = rng.random((6, 5, 2)) * 1.4 - 0.2
        if len(front):
            points[0, :2] = front[:2]
        gains = hypervolume_improvements_2d(points, front, reference)
        assert gains.shape == (6, 5)
        before = HV(ref_point=reference)(front) if len(front) else 0.0
        for index in np.ndindex(6, 5):
            after = HV(ref_point=reference)(np.vstack([front, points[index]]))
            assert gains[index] == pytest.approx(after - before, abs=1e-12)
