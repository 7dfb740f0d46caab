"""A Gaussian process over genome features: the surrogate search's model of what needs training.

A few dozen results must already say something useful, and a GP with a categorical kernel shares
what each result says across every network that shares its genes (as TPE and Optuna's GPSampler do):
- the kernel multiplies exp(-theta_genes * h), h the share of gene bits (one-hot ops, set bits) in
  which two networks differ (a Hamming kernel), by exp(-theta_cost * d^2), d^2 the mean squared
  difference of the continuous features (log cheap costs, fidelity), each scaled to [0, 1];
- it learns normal scores of the ranks, not the values: a few broken networks (10 % accuracy) would
  otherwise dominate the fit, and ranks keep the model's uncertainty on one scale on every table;
- its hyperparameters (theta_genes, theta_cost, noise) are the most likely on a small grid, refitted
  when the rows have grown by REFIT_GROWTH since the last fit, and reused in between (one Cholesky
  factorisation per prediction then);
- it learns from at most MOST_ROWS rows, chosen by the caller (the ones nearest the front), so a
  search of many thousand evaluations costs the same per step as one of MOST_ROWS. A cap of 300 left
  the model blind to most of a 1,000-evaluation search and stalled it on hard tables (synthetic_13:
  0.980 against 0.998 with every row); 1,000 costs about 15 s of driver time for such a search.

The grid, REFIT_GROWTH and MOST_ROWS were chosen on synthetic tables (bench/synthetic_tables.py), never
on the real NAS-Bench-201 table: see bench/RESULTS.md, issue 20.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import ndtr, ndtri

THETA_GENES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
THETA_COST = (0.0, 1.0, 4.0, 16.0)
NOISE = (0.01, 0.05, 0.2, 0.5)  # as a share of the scores' unit variance
REFIT_GROWTH = 1.2
ALWAYS_REFIT_BELOW = 30  # rows: while this few, every prediction refits (each new row moves them much)
MOST_ROWS = 1000


class RankGP:
    """One objective's model. `predict` returns the value expected for each new row, and its value at
    each of `optimism` posterior standard deviations better (lower), in the objective's units: one
    optimistic level for an upper-confidence pick, or quadrature nodes for an expectation."""

    def __init__(self) -> None:
        self._theta: tuple[float, float, float] | None = None
        self._fitted_rows = 0

    def predict(self, X: np.ndarray, y: np.ndarray, X_new: np.ndarray, optimism: Sequence[float],
                results: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`results`: how many results the search holds in all, when X is a subset of them (MOST_ROWS):
        the hyperparameters are refitted as those grow, though the subset stays the same size."""
        n = len(y)
        results = n if results is None else results
        genes, cost = _distances(np.vstack([X, X_new]))
        scores = ndtri((np.argsort(np.argsort(y, kind="stable"), kind="stable") + 0.5) / n)
        refit = self._theta is None or results < ALWAYS_REFIT_BELOW or results >= REFIT_GROWTH * self._fitted_rows
        candidates = itertools.product(THETA_GENES, THETA_COST, NOISE) if refit else [self._theta]
        _, chol, alpha, theta = max(((*_fit(genes[:n, :n], cost[:n, :n], scores, t), t) for t in candidates),
                                    key=lambda fit: fit[0])
        if refit:
            self._theta, self._fitted_rows = theta, results
        mean, sd = _posterior(chol, alpha, np.exp(-theta[0] * genes[n:, :n] - theta[1] * cost[n:, :n]))
        # Back from scores to values through the observed quantiles; an optimistic score below the best
        # seen maps a little past it, so the best-looking unknowns still rank apart.
        order = np.sort(y)
        grid = (np.arange(n) + 0.5) / n
        expected = np.interp(ndtr(mean), grid, order)
        levels = mean[:, None] - np.asarray(optimism, dtype=float)[None, :] * sd[:, None]
        at = np.interp(ndtr(levels), grid, order, left=order[0] - (order[-1] - order[0]) / n)
        return expected, at


def posterior(X: np.ndarray, scores: np.ndarray, X_new: np.ndarray,
              theta: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and standard deviation of the scores at X_new, at hyperparameters `theta`."""
    n = len(scores)
    genes, cost = _distances(np.vstack([X, X_new]))
    _, chol, alpha = _fit(genes[:n, :n], cost[:n, :n], scores, theta)
    return _posterior(chol, alpha, np.exp(-theta[0] * genes[n:, :n] - theta[1] * cost[n:, :n]))


def _posterior(chol: np.ndarray, alpha: np.ndarray, cross: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = solve_triangular(chol, cross.T, lower=True, check_finite=False)
    return cross @ alpha, np.sqrt(np.maximum(1.0 - (v * v).sum(axis=0), 1e-12))


def _fit(genes: np.ndarray, cost: np.ndarray, scores: np.ndarray,
         theta: tuple[float, float, float]) -> tuple[float, np.ndarray, np.ndarray]:
    """(log marginal likelihood, Cholesky factor, weights) of one hyperparameter triple. The kernel is
    a product of positive semi-definite ones plus noise > 0 on the diagonal: it always factorises."""
    K = np.exp(-theta[0] * genes - theta[1] * cost) + theta[2] * np.eye(len(scores))
    chol = np.linalg.cholesky(K)
    alpha = solve_triangular(chol.T, solve_triangular(chol, scores, lower=True, check_finite=False), check_finite=False)
    return -0.5 * scores @ alpha - np.log(np.diag(chol)).sum(), chol, alpha


def _distances(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise (gene-bit mismatch share, mean squared continuous difference) over the rows of X.

    A column holding only 0 and 1 is a gene bit; any other varying column is continuous and scaled to
    [0, 1]; constant columns say nothing and are dropped."""
    span = np.ptp(X, axis=0)
    varies = span > 0
    bits = ((X == 0) | (X == 1)).all(axis=0) & varies
    scaled = (X - X.min(axis=0)) / np.where(varies, span, 1.0)
    return _mean_sq(scaled[:, bits]), _mean_sq(scaled[:, varies & ~bits])


def _mean_sq(A: np.ndarray) -> np.ndarray:
    if A.shape[1] == 0:
        return np.zeros((len(A), len(A)))
    sq = (A * A).sum(axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * A @ A.T, 0.0) / A.shape[1]
