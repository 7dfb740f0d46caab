"""Non-dominated sets and the indicators that score them. Everything here minimises."""

from __future__ import annotations

import numpy as np


def non_dominated(F: np.ndarray) -> np.ndarray:
    """Mask of the points no other point dominates; equal points are all kept."""
    F = np.asarray(F, dtype=float)
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


def dominates(a: list[float] | np.ndarray, b: list[float] | np.ndarray) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool((a <= b).all() and (a < b).any())


def normalise(F: np.ndarray, ideal: np.ndarray, nadir: np.ndarray) -> np.ndarray:
    span = np.where(nadir - ideal > 0, nadir - ideal, 1.0)
    return (np.asarray(F, dtype=float) - ideal) / span


def hypervolume(F: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by F and bounded by the reference point; points beyond it add nothing."""
    from pymoo.indicators.hv import HV

    F = np.asarray(F, dtype=float)
    inside = F[(reference > F).all(axis=1)] if len(F) else F
    if len(inside) == 0:
        return 0.0
    return float(HV(ref_point=np.asarray(reference, dtype=float))(inside))


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
