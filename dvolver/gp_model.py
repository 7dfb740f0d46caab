"""A Gaussian process over genome features: the surrogate search's model of what needs training.

A few dozen results must already say something useful, and a GP with a categorical kernel shares
what each result says across every network that shares its genes (as TPE and Optuna's GPSampler do):
- the kernel multiplies exp(-theta_genes * h), h the share of gene bits (one-hot ops, set bits) in
  which two networks differ (a Hamming kernel), by exp(-theta_cost * d^2), d^2 the mean squared
  difference of the continuous features (log cheap costs, fidelity), each scaled to [0, 1];
- it learns normal scores of the ranks, not the values: a few broken networks (10 % accuracy) would
  otherwise dominate the fit, and ranks keep the model's uncertainty on one scale on every table;
- its hyperparameters (theta_genes, theta_cost, noise) are the most likely on a small grid, refitted
  when the rows have grown by REFIT_GROWTH since the last fit, and reused in between; in between, the
  Cholesky factor of the last prediction is grown by the rows added since (O(n^2) a prediction, not
  O(n^3)), and gives what factoring afresh would;
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
from dataclasses import dataclass, fields

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
        self._fitted_results = 0
        self._factor: _Factor | None = None

    @property
    def theta(self) -> tuple[float, float, float] | None:
        """(theta_genes, theta_cost, noise) of the last fit; None before the first prediction."""
        return None if self._factor is None else self._factor.theta

    def predict(self, X: np.ndarray, y: np.ndarray, X_new: np.ndarray, optimism: Sequence[float],
                results: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`results`: how many results the search holds in all, when X is a subset of them (MOST_ROWS):
        the hyperparameters are refitted as those grow, though the subset stays the same size."""
        n = len(y)
        results = n if results is None else results
        layout = _Layout.of(np.vstack([X, X_new]))
        scores = ndtri((np.argsort(np.argsort(y, kind="stable"), kind="stable") + 0.5) / n)
        refit = results < ALWAYS_REFIT_BELOW or results >= REFIT_GROWTH * self._fitted_results
        if refit or self._factor is None:
            genes, cost = layout.distances(X, X)
            _, chol, theta = max(((*_fit(genes, cost, scores, t), t)
                                  for t in itertools.product(THETA_GENES, THETA_COST, NOISE)), key=lambda fit: fit[0])
            self._fitted_results = results
            self._factor = _Factor(X.copy(), layout, theta, chol)
        else:
            theta = self._factor.theta
            self._factor = self._factor.grown(X, layout) or _Factor(
                X.copy(), layout, theta, _fit(*layout.distances(X, X), scores, theta)[1])
        chol = self._factor.chol
        genes, cost = layout.distances(X_new, X)
        mean, sd = _posterior(chol, _weights(chol, scores), _kernel(genes, cost, theta))
        # Back from scores to values through the observed quantiles; an optimistic score below the best
        # seen maps a little past it, so the best-looking unknowns still rank apart.
        order = np.sort(y)
        grid = (np.arange(n) + 0.5) / n
        expected = np.interp(ndtr(mean), grid, order)
        levels = mean[:, None] - np.asarray(optimism, dtype=float)[None, :] * sd[:, None]
        at = np.interp(ndtr(levels), grid, order, left=order[0] - (order[-1] - order[0]) / n)
        return expected, at


@dataclass(frozen=True)
class _Layout:
    """How feature columns enter the kernel, read off the rows it compares (the model's and the pool's).

    A column holding only 0 and 1 is a gene bit; any other varying column is continuous and scaled to
    [0, 1]; constant columns say nothing and are dropped."""

    bits: np.ndarray
    continuous: np.ndarray
    low: np.ndarray
    span: np.ndarray

    @classmethod
    def of(cls, X: np.ndarray) -> _Layout:
        span = np.ptp(X, axis=0)
        varies = span > 0
        bits = ((X == 0) | (X == 1)).all(axis=0) & varies
        return cls(bits, varies & ~bits, X.min(axis=0), np.where(varies, span, 1.0))

    def same_as(self, other: _Layout) -> bool:
        return all(np.array_equal(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    def distances(self, A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Between the rows of A and of B: (gene-bit mismatch share, mean squared continuous difference)."""
        a, b = (A - self.low) / self.span, (B - self.low) / self.span
        return _mean_sq(a[:, self.bits], b[:, self.bits]), _mean_sq(a[:, self.continuous], b[:, self.continuous])


@dataclass(frozen=True)
class _Factor:
    """The Cholesky factor of the model rows' kernel at `theta`, kept between predictions: between refits a
    search adds a row or a few per ask, and growing the factor by them costs O(n^2) where factoring
    afresh costs O(n^3) (at 1,000 rows, most of a one-at-a-time search's driver time)."""

    X: np.ndarray
    layout: _Layout
    theta: tuple[float, float, float]
    chol: np.ndarray

    def grown(self, X: np.ndarray, layout: _Layout) -> _Factor | None:
        """The factor for rows X, if they are this one's rows and more, compared alike; else None."""
        m = len(self.X)
        if len(X) < m or X.shape[1] != self.X.shape[1] or not layout.same_as(self.layout) \
                or not np.array_equal(X[:m], self.X):
            return None
        if len(X) == m:
            return self
        new = X[m:]
        across = _kernel(*layout.distances(self.X, new), self.theta)
        among = _kernel(*layout.distances(new, new), self.theta) + self.theta[2] * np.eye(len(new))
        left = solve_triangular(self.chol, across, lower=True, check_finite=False)
        corner = np.linalg.cholesky(among - left.T @ left)
        chol = np.block([[self.chol, np.zeros((m, len(new)))], [left.T, corner]])
        return _Factor(X.copy(), layout, self.theta, chol)


def posterior(X: np.ndarray, scores: np.ndarray, X_new: np.ndarray,
              theta: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and standard deviation of the scores at X_new, at hyperparameters `theta`."""
    layout = _Layout.of(np.vstack([X, X_new]))
    _, chol = _fit(*layout.distances(X, X), scores, theta)
    return _posterior(chol, _weights(chol, scores), _kernel(*layout.distances(X_new, X), theta))


def _kernel(genes: np.ndarray, cost: np.ndarray, theta: tuple[float, float, float]) -> np.ndarray:
    return np.exp(-theta[0] * genes - theta[1] * cost)


def _posterior(chol: np.ndarray, alpha: np.ndarray, cross: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = solve_triangular(chol, cross.T, lower=True, check_finite=False)
    return cross @ alpha, np.sqrt(np.maximum(1.0 - (v * v).sum(axis=0), 1e-12))


def _weights(chol: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return solve_triangular(chol.T, solve_triangular(chol, scores, lower=True, check_finite=False), check_finite=False)


def _fit(genes: np.ndarray, cost: np.ndarray, scores: np.ndarray,
         theta: tuple[float, float, float]) -> tuple[float, np.ndarray]:
    """(log marginal likelihood, Cholesky factor) of one hyperparameter triple. The kernel is a product
    of positive semi-definite ones plus noise > 0 on the diagonal: it always factorises."""
    chol = np.linalg.cholesky(_kernel(genes, cost, theta) + theta[2] * np.eye(len(scores)))
    return -0.5 * scores @ _weights(chol, scores) - np.log(np.diag(chol)).sum(), chol


def _mean_sq(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    if A.shape[1] == 0:
        return np.zeros((len(A), len(B)))
    return np.maximum((A * A).sum(axis=1)[:, None] + (B * B).sum(axis=1)[None, :] - 2.0 * A @ B.T, 0.0) / A.shape[1]
