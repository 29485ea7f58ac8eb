"""NUTS and SMC baselines against closed-form conjugate posteriors."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax.scipy.stats import multivariate_normal

from numpyro_mfdiff.baselines import nuts, smc

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # arviz's once-a-day refactor notice
    import arviz as az

NOISE = 0.5
N_OBS = 5


def gaussian_model():
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.deterministic("mu_sum", jnp.sum(mu))
    with numpyro.plate("obs", N_OBS):
        numpyro.sample("y", dist.Normal(mu, NOISE).to_event(1))


Y = jnp.array([[0.9, -0.4], [0.2, -1.1], [0.5, -0.6], [1.1, -0.2], [0.4, -0.9]])
POST_PREC = 1.0 + N_OBS / NOISE**2
POST_MEAN = np.asarray(Y.sum(0) / NOISE**2 / POST_PREC)
POST_SD = POST_PREC**-0.5  # 0.218
LOG_Z = float(
    sum(
        multivariate_normal.logpdf(
            Y[:, j], jnp.zeros(N_OBS), NOISE**2 * jnp.eye(N_OBS) + jnp.ones((N_OBS, N_OBS))
        )
        for j in range(2)
    )
)


@pytest.fixture(scope="module")
def nuts_idata():
    return nuts(
        gaussian_model, {"y": Y}, jax.random.key(0), num_chains=4, num_warmup=500, num_samples=1000
    )


def test_nuts_matches_conjugate_posterior(nuts_idata):
    post = nuts_idata.posterior
    assert post["mu"].shape == (4, 1000, 2)
    assert post["mu_sum"].shape == (4, 1000)
    mu = post["mu"].values.reshape(-1, 2)
    ess = az.ess(nuts_idata, var_names=["mu"])["mu"].values
    assert np.all(ess > 1000)
    # Monte-Carlo standard error of the mean is POST_SD / sqrt(ESS): allow 4 of them.
    np.testing.assert_array_less(np.abs(mu.mean(0) - POST_MEAN), 4 * POST_SD / np.sqrt(ess))
    # sd of the sd estimate ~ POST_SD / sqrt(2 ESS) < 2.2%: allow 10%.
    np.testing.assert_allclose(mu.std(0), POST_SD, rtol=0.1)
    np.testing.assert_allclose(post["mu_sum"].values, mu.sum(1).reshape(4, 1000), rtol=1e-5)


def test_nuts_inferencedata_diagnostics(nuts_idata):
    summary = az.summary(nuts_idata, var_names=["mu"])
    assert {"r_hat", "ess_bulk", "ess_tail"} <= set(summary.columns)
    assert (summary["r_hat"] < 1.05).all()
    stats = nuts_idata.sample_stats
    for name in ("diverging", "acceptance_rate", "step_size", "n_steps", "lp", "energy"):
        assert stats[name].shape == (4, 1000), name
    assert stats["diverging"].dtype == bool
    assert int(stats["diverging"].sum()) == 0
    assert 0.5 < float(stats["acceptance_rate"].mean()) <= 1.0
    np.testing.assert_allclose(nuts_idata.observed_data["y"].values, np.asarray(Y))
    # gradient count: warmup + sampling leapfrog steps + one initial gradient per chain
    n_grad = nuts_idata.attrs["num_gradient_evaluations"]
    n_warm = nuts_idata.attrs["num_gradient_evaluations_warmup"]
    assert n_warm >= 4 * 500
    assert n_grad == n_warm + int(stats["n_steps"].sum()) + 4


def test_smc_matches_conjugate_posterior_and_evidence():
    idata = smc(gaussian_model, {"y": Y}, jax.random.PRNGKey(1), num_particles=2000)
    mu = idata.posterior["mu"].values
    assert mu.shape == (1, 2000, 2)
    mu = mu.reshape(-1, 2)
    # MC error of the mean ~ POST_SD / sqrt(1000) = 0.007; 0.05 also absorbs SMC bias.
    np.testing.assert_allclose(mu.mean(0), POST_MEAN, atol=0.05)
    np.testing.assert_allclose(mu.std(0), POST_SD, rtol=0.15)
    assert idata.attrs["num_tempering_steps"] >= 1
    assert idata.sample_stats.attrs["num_tempering_steps"] == idata.attrs["num_tempering_steps"]
    assert abs(idata.attrs["log_marginal_likelihood"] - LOG_Z) < 0.2
    assert idata.sample_stats["lp"].shape == (1, 2000)


def gamma_poisson_model(y=None):
    lam = numpyro.sample("lam", dist.Gamma(2.0, 1.0))
    with numpyro.plate("obs", 5):
        numpyro.sample("y", dist.Poisson(lam), obs=y)


def test_smc_constrained_site_uses_jacobian():
    # lam ~ Gamma(2, 1), y ~ Poisson(lam): posterior Gamma(2 + sum y, 1 + n) = Gamma(16, 6),
    # mean 2.667, sd 0.667. Dropping the log-transform Jacobian would give Gamma(15, 6),
    # mean 2.5, which the 0.07 tolerance (3 MC standard errors) excludes.
    y = jnp.array([3.0, 1.0, 4.0, 1.0, 5.0])
    idata = smc(
        gamma_poisson_model, {}, jax.random.key(2), num_particles=2000, model_kwargs={"y": y}
    )
    lam = idata.posterior["lam"].values.ravel()
    assert abs(lam.mean() - 16 / 6) < 0.07
    assert abs(lam.std() - 4 / 6) < 0.07
    log_z = (
        -sum(math.lgamma(v + 1) for v in [3, 1, 4, 1, 5])
        + 2 * math.log(1.0)
        - math.lgamma(2.0)
        + math.lgamma(16.0)
        - 16 * math.log(6.0)
    )
    assert abs(idata.attrs["log_marginal_likelihood"] - log_z) < 0.1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_chains": 0}, "num_chains"),
        ({"num_samples": 0}, "num_samples"),
        ({"num_warmup": -1}, "num_warmup"),
    ],
)
def test_nuts_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nuts(gaussian_model, {"y": Y}, jax.random.key(0), **kwargs)


def test_bad_observation_names_raise():
    with pytest.raises(ValueError, match="not sample sites"):
        nuts(gaussian_model, {"z": Y}, jax.random.key(0))
    with pytest.raises(ValueError, match="not sample sites"):
        smc(gaussian_model, {"mu_sum": 0.0}, jax.random.key(0))
    with pytest.raises(ValueError, match="observations"):
        smc(gaussian_model, [Y], jax.random.key(0))


def test_smc_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_particles"):
        smc(gaussian_model, {"y": Y}, jax.random.key(0), num_particles=0)
    with pytest.raises(ValueError, match="target_ess"):
        smc(gaussian_model, {"y": Y}, jax.random.key(0), target_ess=1.5)
