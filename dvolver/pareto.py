"""Non-dominated sets and the indicators that score them. Everything here minimises."""

from __future__ import annotations

import numpy as np


def non_dominated(F: np.ndarray) -> np.ndarray:
    """Mask of the points no other point dominates; equal points are all kept."""
    F = np.asarray(F, dtype=float)
    if F.ndim == 2 and F.shape[1] == 2 and len(F) and not np.isnan(F).any():
        return _non_dominated_2d(F)
    keep = np.zeros(len(F), dtype=bool)
    front: list[int] = []
    # In lexicographic order a point can only be dominated by one before it, and whatever
    # dominates it is itself dominated by, or is, a front point: comparing with the front suffices.
    for i in np.lexsort(F.T[::-1]):
        if front:
            Q = F[front]
            if ((F[i] >= Q).all(axis=1) & (F[i] > Q).any(axis=1)).any():
                continue
        keep[i] = True
        front.append(i)
    return keep


def _non_dominated_2d(F: np.ndarray) -> np.ndarray:
    """Two objectives, one sort: after ordering by (f0, f1), a point is dominated exactly when an
    earlier point with a smaller f0 has an f1 no larger, or one with the same f0 a smaller f1. The
    search calls this on every step, and the general loop above is a Python loop over the points."""
    order = np.lexsort((F[:, 1], F[:, 0]))
    f0, f1 = F[order, 0], F[order, 1]
    starts = np.flatnonzero(np.r_[True, f0[1:] != f0[:-1]])  # first index of each run of equal f0
    group = np.cumsum(np.r_[True, f0[1:] != f0[:-1]]) - 1
    best_before = np.r_[np.inf, np.minimum.accumulate(f1)][starts]  # best f1 among smaller f0
    keep_sorted = (f1 < best_before[group]) & (f1 == f1[starts][group])
    keep = np.zeros(len(F), dtype=bool)
    keep[order] = keep_sorted
    return keep


def dominates(a: list[float] | np.ndarray, b: list[float] | np.ndarray) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool((a <= b).all() and (a < b).any())


def normalise(F: np.ndarray, ideal: np.ndarray, nadir: np.ndarray) -> np.ndarray:
    span = np.where(nadir - ideal > 0, nadir - ideal, 1.0)
    return (np.asarray(F, dtype=float) - ideal) / span


def hypervolume(F: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by F and bounded by the reference point; points beyond it add nothing.

    Exact in any dimension: a sweep in 2-D, slices along the last objective above that. Fronts a
    search keeps (tens to hundreds of points, 2 or 3 objectives) take well under a millisecond.
    """
    F = np.asarray(F, dtype=float)
    reference = np.asarray(reference, dtype=float)
    if F.size == 0:
        return 0.0
    inside = F[(reference > F).all(axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(_volume(inside, reference))


def _volume(F: np.ndarray, reference: np.ndarray) -> float:
    if F.shape[1] == 1:
        return float(reference[0] - F[:, 0].min())
    if F.shape[1] == 2:
        P = F[np.lexsort((F[:, 1], F[:, 0]))]
        best = np.minimum.accumulate(P[:, 1])  # dominated points add nothing: keep the running best
        widths = np.diff(np.append(P[:, 0], reference[0]))
        return float(np.sum(widths * (reference[1] - best)))
    F = F[non_dominated(F)]
    P = F[np.argsort(F[:, -1], kind="stable")]
    tops = np.append(P[1:, -1], reference[-1])
    total = 0.0
    for i in range(len(P)):
        depth = tops[i] - P[i, -1]
        if depth > 0:  # a slab between two levels of the last objective: its cross-section is one dimension less
            total += depth * _volume(P[: i + 1, :-1], reference[:-1])
    return total


def hypervolume_improvement(point: np.ndarray, front: np.ndarray, reference: np.ndarray) -> float:
    """How much volume `point` adds to `front`: the volume of its box not already dominated.

    Only the front's points clipped into the point's box matter, usually a handful, so this stays
    cheap where recomputing the whole front's volume would not.
    """
    point = np.asarray(point, dtype=float)
    reference = np.asarray(reference, dtype=float)
    if not (point < reference).all():
        return 0.0
    box = float(np.prod(reference - point))
    front = np.asarray(front, dtype=float).reshape(-1, len(point))
    if len(front) == 0:
        return box
    if (front <= point).all(axis=1).any():
        return 0.0
    return max(0.0, box - hypervolume(np.maximum(front, point), reference))


def hypervolume_improvements_2d(points: np.ndarray, front: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """hypervolume_improvement of every point of `points` (any shape ending in 2) over a two-objective
    front, at once. The front's undominated region is a staircase: between two of its points' first
    objectives, it starts at the lowest second objective reached so far. A point's gain is the
    area of its box above its own second objective and below that staircase."""
    points = np.asarray(points, dtype=float)
    front = np.asarray(front, dtype=float).reshape(-1, 2)
    front = front[np.argsort(front[:, 0], kind="stable")]
    edges = np.concatenate([[-np.inf], front[:, 0], [reference[0]]])
    tops = np.minimum(np.concatenate([[np.inf], np.minimum.accumulate(front[:, 1])]), reference[1])
    x, y = points[..., :1], points[..., 1:]
    widths = np.clip(np.minimum(edges[1:], reference[0]) - np.maximum(edges[:-1], x), 0.0, None)
    return (widths * np.clip(tops - y, 0.0, None)).sum(axis=-1)


def dominance_distance(points: np.ndarray, front: np.ndarray) -> np.ndarray:
    """For each point, the smallest equal step down all objectives that leaves it dominated by no
    point of the front: 0 for a point already on or beyond the front."""
    points = np.atleast_2d(np.asarray(points, dtype=float))
    front = np.asarray(front, dtype=float).reshape(-1, points.shape[1])
    if len(front) == 0:
        return np.zeros(len(points))
    gaps = (points[:, None, :] - front[None, :, :]).min(axis=2)  # the step that escapes each front point
    return np.maximum(gaps.max(axis=1), 0.0)


def igd(F: np.ndarray, reference_front: np.ndarray) -> float:
    """Mean distance from each reference-front point to its nearest point of F."""
    F = np.asarray(F, dtype=float)
    R = np.asarray(reference_front, dtype=float)
    distances = np.linalg.norm(R[:, None, :] - F[None, :, :], axis=2)
    return float(distances.min(axis=1).mean())


def knee_point(F: np.ndarray) -> int:
    """Index of the front point closest to the ideal point once each objective spans [0, 1]."""
    F = np.asarray(F, dtype=float)
    scaled = normalise(F, F.min(axis=0), F.max(axis=0))
    return int(np.argmin(np.linalg.norm(scaled, axis=1)))
