"""Linear SDE (Ornstein-Uhlenbeck) example: moments, Monte Carlo checks, gradients, refinement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models import SMALL, assert_wrong_answers_fail, moment_errors, moments_agree
from numpyro import handlers

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.examples import (
    OU_NOISE,
    OU_TIMES,
    OU_TRUE,
    ou_euler_moments,
    ou_euler_paths,
    ou_exact_moments,
    ou_high,
    ou_log_posterior_grid,
    ou_low,
)

TRUE = (OU_TRUE["theta"], OU_TRUE["sigma"])
T = len(OU_TIMES)


def _check_moments(paths, mean, cov, z=5.0):
    """Sample mean and covariance of ``paths`` (n, T) within ``z`` Monte Carlo standard errors."""
    n = paths.shape[0]
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(paths.mean(0) - mean) < z * sd / np.sqrt(n))
    # the standard error of a sample covariance entry is sqrt((c_ii c_jj + c_ij^2) / n)
    se = np.sqrt((np.outer(sd**2, sd**2) + cov**2) / n)
    assert np.all(np.abs(np.cov(paths.T) - cov) < z * se)


# runs what it compiles: 2.1-2.3 s compiled cheaply, 1.4 s optimised (-n 0, 2026-12-07)
@pytest.mark.optimised
def test_exact_covariance_matches_monte_carlo_of_the_sde():
    """20,000 Euler-Maruyama paths with dt = 0.005 (bias O(dt), well below the MC error)."""
    paths = np.asarray(ou_euler_paths(jax.random.PRNGKey(0), *TRUE, 20_000, dt=0.005))
    mean, cov = (np.asarray(v) for v in ou_exact_moments(*TRUE))
    assert paths.shape == (20_000, T)
    _check_moments(paths, mean, cov)


def test_euler_law_matches_its_own_chain_and_is_biased():
    """The coarse (dt = 0.5) moment formulas are the law of the coarse chain, which is far
    from the SDE; with dt = 1e-3 they converge to the exact law (error O(dt))."""
    paths = np.asarray(ou_euler_paths(jax.random.PRNGKey(1), *TRUE, 20_000))
    mean, cov = (np.asarray(v) for v in ou_euler_moments(*TRUE))
    _check_moments(paths, mean, cov)
    ex_mean, ex_cov = (np.asarray(v) for v in ou_exact_moments(*TRUE))
    # coarse: the mean is off by up to 0.35 (7 observation-noise sds)
    assert np.abs(mean - ex_mean).max() > 5 * OU_NOISE
    fine_mean, fine_cov = (np.asarray(v) for v in ou_euler_moments(*TRUE, dt=1e-3))
    assert np.abs(fine_mean - ex_mean).max() < 2e-3
    assert np.abs(fine_cov - ex_cov).max() < 2e-4
    # first order: halving dt halves the error
    e1 = np.abs(np.asarray(ou_euler_moments(*TRUE, dt=0.01)[0]) - ex_mean).max()
    e2 = np.abs(np.asarray(ou_euler_moments(*TRUE, dt=0.005)[0]) - ex_mean).max()
    assert 1.8 < e1 / e2 < 2.2


def test_models_agree_in_sites_and_shapes():
    traces = [handlers.trace(handlers.seed(m, rng_seed=0)).get_trace() for m in (ou_low, ou_high)]
    for name in ("theta", "sigma", "y"):
        assert traces[0][name]["value"].shape == traces[1][name]["value"].shape, name
    assert traces[0]["y"]["value"].shape == (T,)
    assert traces[0]["y"]["fn"].event_shape == (T,)


def test_moments_vmap_and_grad():
    params = jnp.array([TRUE, (0.3, 0.8), (3.5, 0.2)])  # 3.5 * 0.5 > 1: a < 0 in the chain
    y = jnp.asarray(ou_exact_moments(*TRUE)[0])
    for moments in (ou_exact_moments, ou_euler_moments):
        mean, cov = jax.jit(jax.vmap(lambda p, f=moments: f(p[0], p[1])))(params)
        assert mean.shape == (3, T) and cov.shape == (3, T, T)
        np.testing.assert_allclose(mean[1], moments(*params[1])[0], rtol=1e-5)
        assert np.all(np.linalg.eigvalsh(np.asarray(cov)) > -1e-6)

        def loglik(p, f=moments):
            m, c = f(p[0], p[1])
            c = c + OU_NOISE**2 * jnp.eye(T)
            return jax.scipy.stats.multivariate_normal.logpdf(y, m, c)

        g = np.asarray(jax.jit(jax.grad(loglik))(params[1]))
        h = 1e-3
        fd = [
            (loglik(params[1].at[i].add(h)) - loglik(params[1].at[i].add(-h))) / (2 * h)
            for i in (0, 1)
        ]
        np.testing.assert_allclose(g, np.asarray(fd), rtol=0.02, atol=0.05)


def test_grid_posterior_and_bad_input():
    y = np.asarray(ou_exact_moments(*TRUE)[0])
    tg, sg = np.linspace(0.2, 2.5, 40), np.linspace(0.1, 1.5, 30)
    lp = ou_log_posterior_grid(y, tg, sg)
    assert lp.shape == (40, 30) and np.all(np.isfinite(lp))
    i, j = np.unravel_index(np.argmax(lp), lp.shape)
    assert abs(tg[i] - TRUE[0]) < 0.15  # the noise-free path puts the mode near the truth
    with pytest.raises(ValueError, match="shape"):
        ou_log_posterior_grid(y[:5], tg, sg)
    with pytest.raises(ValueError, match="multiple of dt"):
        ou_euler_moments(*TRUE, times=(0.3,))


@pytest.mark.cheap  # its time goes to compiling (tests/conftest.py)
@pytest.mark.slow  # a statistical check: 128 s of the default suite under load
def test_refine_moves_g_low_onto_the_exact_posterior():
    """One observation at the true parameters (key 1), against the grid posterior of
    (theta, sigma) under the exact law (means 0.958, 0.488; sds 0.137, 0.116). G_low (1,000
    coarse simulations) is off by more than 1 sd in theta; after one round of 500 exact
    solves the refined ODE and G_high have means within 0.2 sd and sds within a factor
    1.2. Measured over build/refine keys (0, 3), (10, 13), (20, 23) (/tmp/w26d/ou.py,
    2026-12-06; the default engine: the Laplace start's importance sampling, ESS
    387-413): G_low 1.23-1.36 sd off; G_high means 0.084-0.156 sd off, sd ratios within
    exp(0.116) = 1.12; ODE means 0.026-0.049 sd off, sd ratios within exp(0.055) = 1.06
    (the KDE engine, ESS 40.7 at key 0: G_high 0.015-0.104 sd, 1.05; ODE
    0.033-0.142 sd, 1.07). Wrong answers built from
    4,000 grid draws fail: shifted 0.3 sd (0.29 sd: means), sd halved or doubled (log
    ratio 0.7), prior draws (means 1.3 sd off)."""
    mean, cov = ou_exact_moments(*TRUE)
    chol = np.linalg.cholesky(np.asarray(cov) + OU_NOISE**2 * np.eye(T))
    y = np.asarray(mean) + chol @ np.asarray(jax.random.normal(jax.random.PRNGKey(1), (T,)))
    tg, sg = np.linspace(0.2, 2.5, 300), np.linspace(0.1, 1.5, 300)
    p = np.exp(ou_log_posterior_grid(y, tg, sg))
    p = p / p.sum()
    m = np.array([(p.sum(1) * tg).sum(), (p.sum(0) * sg).sum()])
    sd = np.sqrt(np.array([(p.sum(1) * tg**2).sum(), (p.sum(0) * sg**2).sum()]) - m**2)

    def right(x):
        return moments_agree(x, m, sd, mean_tol=0.2, sd_factor=1.2)

    def stack(s):
        return np.stack([np.asarray(s["theta"]), np.asarray(s["sigma"])], 1)

    obs = {"y": y}
    inf = MFDiff(ou_low, num_simulations=1000, **SMALL).run(jax.random.PRNGKey(0))
    low = stack(inf.get_samples(jax.random.PRNGKey(2), obs, 2000))
    assert moment_errors(low, m, sd)[0] > 1.0  # measured 1.36
    # one stage of 500: engine="auto" probes the Laplace start with 125 solves and
    # samples the rest from it (the KDE engine's ESS was 40.7, under the warning level)
    inf.refine(jax.random.PRNGKey(3), obs, model=ou_high, num_simulations=500)
    rec = next(iter(inf.diagnostics["refinements"].values()))
    assert rec["engine"] == "smc" and rec["ess_after"] > 300  # measured 392
    high = stack(inf.get_samples(jax.random.PRNGKey(4), obs, 2000))
    ode = stack(inf.sample_ode(jax.random.PRNGKey(5), obs, 2000))
    assert right(high), moment_errors(high, m, sd)  # measured (0.084, 0.078)
    assert right(ode), moment_errors(ode, m, sd)  # measured (0.026, 0.055)
    # exact draws: grid cells by their mass, uniform within a cell
    rng = np.random.default_rng(0)
    i, j = np.unravel_index(rng.choice(p.size, 4000, p=p.ravel()), p.shape)
    exact = np.stack(
        [
            tg[i] + (rng.random(4000) - 0.5) * (tg[1] - tg[0]),
            sg[j] + (rng.random(4000) - 0.5) * (sg[1] - sg[0]),
        ],
        1,
    )
    prior = np.exp(rng.normal(size=(4000, 2)) * 0.5 + [0.0, np.log(0.5)])
    assert_wrong_answers_fail(right, exact, prior)
