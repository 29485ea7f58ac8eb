"""G_low checked against the weighted prior simulations it was fitted to (MFDiff._check_low)."""

import warnings

import jax
import numpy as np
import pytest
from models import linear_gaussian

from numpyro_mfdiff import MFDiff

# A small G_low fitted well: 2,000 labels, 400 steps of a width-32, depth-2 network and
# a 20-step ODE (3 s to build on one core; the package's defaults took 17 s here and
# measured alike: below).
SMALL_FIT = dict(
    num_simulations=4000, num_labels=2000, train_steps=400, width=32, depth=2, num_steps=20
)


@pytest.fixture(scope="module")
def built():
    inf = MFDiff(linear_gaussian, progress_bar=False, **SMALL_FIT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a well-fitted G_low: no warning
        inf.run(jax.random.PRNGKey(0))
    return inf


def test_a_fitted_g_low_matches_its_weighted_points(built):
    """Measured (this build at build keys 0, 1, 2): 8 rows of ESS >= 404, mean error
    0.052-0.087 sd, sd ratios 0.86-1.01 (with 4,000 labels, 1,000 steps of the default
    network: 0.042-0.084, 0.92-1.06). Bounds 0.2 and 0.8-1.25 (``_network.FIT_MEAN_TOL``,
    ``FIT_SD_RANGE``); the wrong labels of the next test give 0.93-1.08 / 0.44-0.51 (sd
    halved) and 0.93-0.96 / 0.89-1.01 (shifted) at the same keys. The Binomial model of
    ``test_loglik_fast.py`` (3,000 steps) gives 0.009 / 0.038 / 0.070 at seeds 0-2:
    its integer observations are checked as simulated, not rebuilt from their
    standardised floats (2.9999995 would be read as the count 2).
    """
    check = built.diagnostics["generator_check"]
    assert check["rows"] == 8 and check["ess_min"] >= 400
    assert check["mean_error"] < 0.2
    assert 0.8 < min(check["sd_ratio"]) <= max(check["sd_ratio"]) < 1.25


@pytest.mark.parametrize(
    "corrupt, name",
    [(lambda t: 0.5 * t, "sd halved"), (lambda t: t + 0.5, "shifted 0.5 prior sd")],
)
def test_g_low_fitted_to_wrong_labels_warns(built, corrupt, name):
    """Labels shrunk towards 0 or shifted: G_low follows them, away from the
    weighted prior points, and the check says so."""
    triples = dict(built.triples, theta=corrupt(np.asarray(built.triples["theta"])))
    with pytest.warns(UserWarning, match="G_low is off the weighted prior simulations"):
        built.fit(jax.random.PRNGKey(1), triples=triples)
    check = built.diagnostics["generator_check"]
    off = check["mean_error"] > 0.2 or min(check["sd_ratio"]) < 0.8
    assert off, (name, check)


def test_no_row_with_enough_ess_means_no_check():
    """Few simulations: no labelled observation reaches the ESS the check needs."""
    small = dict(SMALL_FIT, num_simulations=300, num_labels=300, train_steps=50)
    inf = MFDiff(linear_gaussian, progress_bar=False, **small)
    inf.run(jax.random.PRNGKey(0))
    assert inf.diagnostics["generator_check"] is None


def test_calibrate_gives_g_high_the_particles_moments():
    """``G_high`` narrower and off-centre (a regression's shrinkage): the affine
    calibration gives its draws the target mean and covariance, and the moved
    generator draws exactly the moved draws; an untrained network's non-Gaussian
    shape is kept (the map is affine)."""
    import jax.numpy as jnp

    from numpyro_mfdiff.generator._network import calibrate, generate
    from numpyro_mfdiff.refine._refine import high_generator

    d = 5
    a = np.random.default_rng(0).normal(size=(d, d))
    mean, cov = np.arange(d, dtype=float), a @ a.T + np.eye(d)
    chol = np.linalg.cholesky(cov)
    gen = high_generator(jax.random.PRNGKey(0), d, 0.5 * mean, 0.7 * chol, dict(width=16, depth=2))
    z = jax.random.normal(jax.random.PRNGKey(1), (20_000, d))
    before = np.asarray(generate(gen, jnp.zeros((0,)), z), np.float64)
    assert np.abs(np.cov(before, rowvar=False) - cov).max() > 0.5
    gen2, moved = calibrate(gen, before, mean, chol)
    after = np.asarray(generate(gen2, jnp.zeros((0,)), z), np.float64)
    np.testing.assert_allclose(after, moved, atol=1e-4)
    np.testing.assert_allclose(after.mean(0), mean, atol=1e-4)
    np.testing.assert_allclose(np.cov(after, rowvar=False), cov, atol=1e-3)
    # whitened by the same map, before and after are the same cloud
    u_b = np.linalg.solve(
        np.linalg.cholesky(np.cov(before, rowvar=False)), (before - before.mean(0)).T
    )
    u_a = np.linalg.solve(chol, (after - mean).T)
    np.testing.assert_allclose(u_a, u_b, atol=1e-3)
