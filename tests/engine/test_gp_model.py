"""The surrogate search's Gaussian process (dvolver.gp_model), against scikit-learn's and on a known landscape."""

import numpy as np
from scipy.special import ndtr, ndtri
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF

from dvolver.gp_model import RankGP, posterior


def _onehot(genomes, ops=5):
    return np.array([np.eye(ops)[list(g)].ravel() for g in genomes])


def test_posterior_matches_scikit_learns_gp_with_the_same_kernel():
    """The Hamming-times-squared-exponential kernel is an RBF with one length scale per column group:
    exp(-theta * sum(d^2) / D) = exp(-sum(d^2) / (2 l^2)) with l^2 = D / (2 theta)."""
    rng = np.random.default_rng(0)
    genomes = rng.integers(0, 5, size=(60, 6))
    cost = rng.uniform(3.0, 9.0, size=(60, 1))
    X = np.hstack([_onehot(genomes), cost])
    scores = rng.standard_normal(40)
    theta = (4.0, 2.0, 0.05)
    mean, sd = posterior(X[:40], scores, X[40:], theta)

    scaled = X.copy()
    scaled[:, -1] = (cost[:, 0] - cost.min()) / np.ptp(cost)
    bits = X.shape[1] - 1
    scales = [np.sqrt(bits / (2 * theta[0]))] * bits + [np.sqrt(1 / (2 * theta[1]))]
    reference = GaussianProcessRegressor(RBF(scales, length_scale_bounds="fixed"), alpha=theta[2], optimizer=None)
    reference.fit(scaled[:40], scores)
    want_mean, want_sd = reference.predict(scaled[40:], return_std=True)
    np.testing.assert_allclose(mean, want_mean, atol=1e-8)
    np.testing.assert_allclose(sd, want_sd, atol=1e-6)


def test_forty_results_rank_unseen_networks_of_an_additive_landscape():
    """Each (edge, op) adds a fixed effect, plus noise: the model should rank networks it has never seen
    by what their genes are worth, and be most sure of networks like the ones it has seen."""
    rng = np.random.default_rng(1)
    effect = rng.normal(0, 1, size=(6, 5))
    genomes = rng.integers(0, 5, size=(540, 6))
    error = effect[np.arange(6), genomes].sum(axis=1) + rng.normal(0, 0.3, size=len(genomes))
    X = _onehot(genomes)
    expected, levels = RankGP().predict(X[:40], error[:40], X[40:], optimism=[1.0, 0.0, -1.0])
    hopeful = levels[:, 0]
    order = np.argsort(np.argsort(expected))
    truth = np.argsort(np.argsort(error[40:]))
    spearman = np.corrcoef(order, truth)[0, 1]
    assert spearman > 0.9, spearman  # the forest it replaced: 0.85 here
    assert (hopeful <= expected).all()
    # Each level lies that many standard deviations from the mean: ordered, and level 0 is the mean.
    assert (np.diff(levels, axis=1) >= 0).all() and np.allclose(levels[:, 1], expected)
    # A network already seen is predicted near its value, with less room for optimism than an unseen one.
    seen_expected, seen_levels = RankGP().predict(X[:40], error[:40], X[:40], optimism=[1.0])
    seen_hopeful = seen_levels[:, 0]
    assert np.corrcoef(seen_expected, error[:40])[0, 1] > 0.9
    assert np.median(seen_expected - seen_hopeful) < np.median(expected - hopeful)


def test_a_model_grown_a_row_at_a_time_predicts_as_one_fitted_afresh():
    """Between refits the model grows its factorisation by the rows added since; what it predicts must be
    what a full factorisation of all the rows, at the same hyperparameters, gives."""
    rng = np.random.default_rng(2)
    genomes = rng.integers(0, 5, size=(120, 6))
    X = np.hstack([_onehot(genomes), rng.uniform(3.0, 9.0, size=(120, 1))])
    error = X[:, :30] @ rng.normal(0, 1, 30) + rng.normal(0, 0.3, 120)
    X[100, -1], X[101, -1] = 3.0, 9.0  # the cost's range lies in the pool: rows added never rescale the kernel
    pool = X[100:]
    model = RankGP()
    for n in range(40, 48):  # a refit at 40 rows, then grown by a row per prediction (the next refit: 48)
        expected, levels = model.predict(X[:n], error[:n], pool, optimism=[1.0])
    scores = ndtri((np.argsort(np.argsort(error[:n])) + 0.5) / n)
    mean, sd = posterior(X[:n], scores, pool, model.theta)
    quantiles, order = (np.arange(n) + 0.5) / n, np.sort(error[:n])
    np.testing.assert_allclose(expected, np.interp(ndtr(mean), quantiles, order), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(levels[:, 0], np.interp(ndtr(mean - sd), quantiles, order), rtol=1e-9, atol=1e-9)
