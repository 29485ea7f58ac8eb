"""Ordinary NumPyro model features end to end, and clear errors for unsupported ones.

Tiny budgets for the mechanics (sites, shapes, supports, errors). Posterior moments
are checked against the exact conjugate answers on the Monte Carlo-score ODE
(``sample_ode``, 2000 draws over 1000 prior simulations), which does not depend on
the generator fit: every coordinate's mean within ``MEAN_TOL`` = 0.22 posterior sd
and sd within a factor ``SD_FACTOR`` = 1.3. Measured over simulation keys
``PRNGKey(0-4)`` (``MFDiff.simulate`` with these budgets, ODE draw key 2;
2026-12-06), largest mean error in sds / largest |log sd ratio| (bound log 1.3 = 0.26):
plates 0.028-0.104 / 0.058-0.151; deterministic 0.000-0.023 / 0.018-0.080; two
observed sites 0.002-0.078 / 0.007-0.051; Bernoulli 0.001-0.066 / 0.005-0.068;
Poisson 0.009-0.034 / 0.006-0.056; regression 0.025-0.157 / 0.022-0.071. Each test
also checks that the four wrong answers built from 4000 exact draws (prior draws,
shifted by 0.3 sd: 0.3 +- 0.02, sd halved or doubled: 0.69) fail the same bound.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from models import SMALL, assert_wrong_answers_fail, moment_errors, moments_agree
from numpyro.distributions import constraints
from numpyro.distributions.distribution import ImproperUniform
from scipy import stats

from numpyro_mfdiff import MFDiff, _model

TINY = dict(SMALL, num_labels=500, ess_warning=0.0)
KEY = jax.random.PRNGKey(0)
MEAN_TOL, SD_FACTOR = 0.22, 1.3  # measured spread: the module docstring


def _run(model, *args, num_simulations=1000, **kwargs):
    return MFDiff(model, num_simulations=num_simulations, **TINY).run(KEY, *args, **kwargs)


def _assert_exact(draws, mean, sd, exact, prior):
    """``draws`` (S, ...) have the exact posterior's ``mean`` and ``sd`` per coordinate
    (``MEAN_TOL`` sds, a factor ``SD_FACTOR``), and the wrong answers made from
    ``exact`` draws and ``prior`` draws fail the same bound."""

    def check(d):
        return moments_agree(d, mean, sd, MEAN_TOL, SD_FACTOR)

    assert check(draws), moment_errors(draws, mean, sd)
    assert_wrong_answers_fail(check, exact.reshape(len(exact), -1), prior.reshape(len(prior), -1))


def _assert_scipy(draws, post, prior):
    """:func:`_assert_exact` for a scalar posterior ``post`` and prior (scipy laws)."""
    exact, wrong = post.rvs(4000, random_state=0), prior.rvs(4000, random_state=1)
    _assert_exact(draws, post.mean(), post.std(), exact, wrong)


def _normal_draws(mean, sd, n=4000, seed=0):
    """``n`` draws (n, D) of independent normals: exact posteriors and priors."""
    mean, sd = np.atleast_1d(mean), np.atleast_1d(sd)
    return mean + sd * np.random.default_rng(seed).normal(size=(n, mean.size))


# ------------------------------------------------------- supports (bug 1)
def test_same_support_compares_constraints_by_value():
    def box(lo, hi, n=5):
        return dist.Uniform(lo * jnp.ones(n), hi * jnp.ones(n)).to_event(1).support

    same = _model.same_support
    assert same(box(-3.0, 3.0), box(-3.0, 3.0))  # equal vector bounds, distinct arrays
    assert not same(box(-3.0, 3.0), box(-3.0, 2.0))  # other bounds
    assert not same(box(-3.0, 3.0), box(-3.0, 3.0, n=4))  # other bound shapes
    assert not same(box(-3.0, 3.0), dist.Normal(jnp.zeros(5)).to_event(1).support)  # types
    assert not same(
        constraints.independent(constraints.interval(0.0, 1.0), 1),
        constraints.independent(constraints.interval(0.0, 1.0), 2),
    )  # reinterpreted_batch_ndims
    assert same(constraints.positive, constraints.positive)
    assert not same(constraints.real, constraints.positive)
    assert same(constraints.interval(0.0, 1.0), dist.Uniform(0.0, 1.0).support)  # float/array


def vector_box(y=None):
    theta = numpyro.sample("theta", dist.Uniform(-3 * jnp.ones(5), 3 * jnp.ones(5)).to_event(1))
    numpyro.sample("y", dist.Normal(theta, 0.5).to_event(1), obs=y)


Y_BOX = {"y": np.array([0.5, -1.0, 2.9, 0.0, -2.5])}


@pytest.fixture(scope="module")
def box_inf():
    return _run(vector_box, num_simulations=500)


def test_vector_bounded_prior(box_inf):
    inf = box_inf
    assert inf.spec.latent_shapes == {"theta": (5,)}
    s = np.asarray(inf.get_samples(jax.random.PRNGKey(1), Y_BOX, 400)["theta"])
    assert s.shape == (400, 5)
    assert np.all(np.abs(s) < 3.0)  # constrained to the box
    # the data moves the posterior (prior mean 0): coordinate 2 sits near the upper bound
    assert s[:, 2].mean() > 1.5 and s[:, 4].mean() < -1.0


# 200 training steps on 200 simulations: a crude G_high, which refine's own check reports
@pytest.mark.filterwarnings("ignore:G_high is off")
def test_refine_with_the_same_vector_bounded_model(box_inf):
    """Refinement keeps the box: the refined draws (G_high and the refined ODE) are
    inside it, and they are the refinement's, not G_low's. Mechanics only: at this
    budget (importance ESS 1-6 over keys 0-2) the refined posterior is 0.5-2 sd off,
    and with 2000 + 1000 simulations still 0.15-0.3 sd (measured 2026-12-06), so no
    bound on it here would reject a wrong answer; refinement's accuracy in this box is
    checked by the slow test below (4,000 simulations), and in test_refine.py and
    test_refine_accuracy.py."""
    inf = box_inf
    k = jax.random.PRNGKey(3)
    low = np.asarray(inf.get_samples(k, Y_BOX, 200)["theta"])
    inf.refine(jax.random.PRNGKey(2), Y_BOX, model=inf.model, num_simulations=200)
    try:
        assert inf.fidelity(Y_BOX) == "high"
        s = np.asarray(inf.get_samples(k, Y_BOX, 200)["theta"])
        ode = np.asarray(inf.sample_ode(k, Y_BOX, 200)["theta"])
        assert s.shape == ode.shape == (200, 5)
        assert np.all(np.abs(s) <= 3.0) and np.all(np.abs(ode) <= 3.0)
        assert not np.array_equal(s, low)
        (ref,) = inf.state.refinements.values()
        assert ref.theta.shape[1] == 5 and np.all(np.isfinite(ref.log_w))
    finally:  # the module's other tests see G_low only
        inf._state = inf.state.replace(refinements={})


@pytest.mark.cheap  # its time goes to compiling (tests/conftest.py)
@pytest.mark.slow
def test_refined_vector_bounded_posterior_is_the_truncated_normal(box_inf):
    """Refinement's accuracy in the box (issue 28, item 9): from the module's 500-simulation
    build, ``refine(max_simulations=4000, train_steps=2000)`` with the default engine;
    the exact posterior is, per coordinate, N(y_i, 0.5^2) truncated to [-3, 3]. Both
    G_high and the refined ODE (2000 draws): every mean within 0.25 posterior sd, every
    sd within a factor exp(0.35) = 1.42; exact draws pass, the prior, a 0.3-sd shift and
    the sd halved or doubled fail.

    Measured over build/refine keys (0, 2) (this test's), (10, 12), (20, 22)
    (``/tmp/s3/box/box2.py``, 2026-12-06; importance sampling, ESS 1,161-1,505 after 10
    rounds): G_high largest mean error 0.118 / 0.077 / 0.206 sd, largest |log sd ratio|
    0.237 / 0.160 / 0.195; ODE 0.059 / 0.096 / 0.123 and 0.205 / 0.128 / 0.123. The
    sd of the coordinate at the bound (y = 2.9) is the loose figure: the labels'
    smoothing widens it. The mean bound is the thin one (margin 0.044 at (20, 22))."""
    import copy

    inf = copy.deepcopy(box_inf)
    y = Y_BOX["y"]
    post = stats.truncnorm((-3 - y) / 0.5, (3 - y) / 0.5, loc=y, scale=0.5)
    mean, sd = post.mean(), post.std()
    inf.refine(jax.random.PRNGKey(2), Y_BOX, max_simulations=4000, train_steps=2000)
    s = np.asarray(inf.get_samples(jax.random.PRNGKey(3), Y_BOX, 2000)["theta"])
    ode = np.asarray(inf.sample_ode(jax.random.PRNGKey(4), Y_BOX, 2000)["theta"])

    def check(d):
        return moments_agree(d, mean, sd, 0.25, np.exp(0.35))

    assert check(s), moment_errors(s, mean, sd)
    assert check(ode), moment_errors(ode, mean, sd)
    exact = post.rvs((4000, 5), random_state=0)
    prior = np.random.default_rng(1).uniform(-3.0, 3.0, (4000, 5))
    assert_wrong_answers_fail(check, exact, prior)


def _other_box(y=None):
    theta = numpyro.sample("theta", dist.Uniform(-3 * jnp.ones(5), 2 * jnp.ones(5)).to_event(1))
    numpyro.sample("y", dist.Normal(theta, 0.5).to_event(1), obs=y)


def test_different_vector_bounds_are_still_an_error():
    low, high = _model.inspect_model(vector_box), _model.inspect_model(_other_box)
    with pytest.raises(ValueError, match="latent site 'theta' has support"):
        _model.check_same_latents(low, high)


# ------------------------------------------------------------------ plates
def plated(y=None):
    with numpyro.plate("groups", 3):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("reps", 4, dim=-2):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_plates_over_latents_and_data():
    inf = _run(plated)
    assert inf.spec.latent_shapes == {"mu": (3,)}
    assert inf.spec.observed_shapes == {"y": (4, 3)}
    y = np.array([[1.0, -1.0, 0.2], [1.5, -0.5, 0.4], [0.5, -1.5, 0.0], [1.0, -0.2, 0.6]])
    exact = y.sum(0) / 5.0  # N(0, 1) prior, 4 unit-variance observations per group
    s = inf.get_samples(jax.random.PRNGKey(1), {"y": y}, 300)
    assert s["mu"].shape == (300, 3)
    ode = np.asarray(inf.sample_ode(jax.random.PRNGKey(2), {"y": y}, 2000)["mu"])
    sd = np.full(3, 5**-0.5)  # posterior sd 0.45, prior sd 1
    _assert_exact(ode, exact, sd, _normal_draws(exact, sd), _normal_draws(np.zeros(3), 1.0))


# ----------------------------------------------------------- deterministic
def with_deterministic(y=None):
    theta = numpyro.sample("theta", dist.Normal(0.0, 1.0))
    mean = numpyro.deterministic("mean", 2.0 * theta)
    numpyro.sample("y", dist.Normal(mean, 1.0), obs=y)


def test_deterministic_site_is_neither_latent_nor_observed():
    inf = _run(with_deterministic)
    assert list(inf.spec.latent_shapes) == ["theta"]
    assert list(inf.spec.observed_shapes) == ["y"]
    s = inf.get_samples(jax.random.PRNGKey(1), {"y": 2.0}, 200)
    assert set(s) == {"theta", "mean"} and s["theta"].shape == (200,)  # as MCMC.get_samples
    np.testing.assert_allclose(s["mean"], 2.0 * s["theta"], rtol=1e-6)
    # exact: precision 1 + 4, mean 2 * 2 / 5
    ode = np.asarray(inf.sample_ode(jax.random.PRNGKey(2), {"y": 2.0}, 2000)["theta"])
    sd = 5**-0.5
    _assert_exact(ode, 0.8, sd, _normal_draws(0.8, sd), _normal_draws(0.0, 1.0))


# ---------------------------------------------------- several observed sites
def two_observed(y1=None, y2=None):
    theta = numpyro.sample("theta", dist.Normal(0.0, 1.0))
    numpyro.sample("y1", dist.Normal(theta, 1.0), obs=y1)
    numpyro.sample("y2", dist.Normal(theta, 0.5).expand([2]).to_event(1), obs=y2)


def test_several_observed_sites():
    inf = _run(two_observed)
    assert inf.spec.observed_shapes == {"y1": (), "y2": (2,)}
    obs = {"y1": 1.0, "y2": np.array([0.5, 1.0])}
    exact = (1.0 + 4 * 1.5) / 10.0  # precision 1 + 1 + 2 * 4
    ode = np.asarray(inf.sample_ode(jax.random.PRNGKey(2), obs, 2000)["theta"])
    sd = 10**-0.5
    _assert_exact(ode, exact, sd, _normal_draws(exact, sd), _normal_draws(0.0, 1.0))
    with pytest.raises(ValueError, match=r"missing observation for site\(s\) \['y2'\]"):
        inf.get_samples(KEY, {"y1": 1.0}, 10)


# --------------------------------------------------- discrete observations
def _check_loglik_matches(inf, obs, site_dist):
    """``_loglik`` equals the site's own log_prob at integer data, simulation by simulation."""
    y = _model.check_observations(inf.spec, obs)
    ll = np.asarray(inf.bank.log_likelihood(jnp.asarray(y)))
    theta = jax.vmap(inf.spec.constrain)(jnp.asarray(inf.simulations.theta[:5]))
    data = jnp.asarray(obs["y"], inf.spec.observed_dtypes["y"])
    for j in range(5):
        ref = float(jnp.sum(site_dist({k: v[j] for k, v in theta.items()}).log_prob(data)))
        assert np.isfinite(ll[j]) and abs(ll[j] - ref) < 1e-3 * max(1.0, abs(ref))


def bernoulli_model(y=None):
    p = numpyro.sample("p", dist.Beta(2.0, 2.0))
    with numpyro.plate("trials", 10):
        numpyro.sample("y", dist.Bernoulli(probs=p), obs=y)


def test_bernoulli_observed_site():
    inf = _run(bernoulli_model)
    assert np.issubdtype(inf.spec.observed_dtypes["y"], np.integer)
    y = np.array([1, 1, 1, 0, 1, 1, 1, 1, 0, 1])
    _check_loglik_matches(inf, {"y": y}, lambda t: dist.Bernoulli(probs=t["p"]))
    s = np.asarray(inf.get_samples(jax.random.PRNGKey(1), {"y": y}, 300)["p"])
    assert s.shape == (300,) and np.all((s > 0) & (s < 1))
    ode = np.asarray(inf.sample_ode(jax.random.PRNGKey(2), {"y": y}, 2000)["p"])
    _assert_scipy(ode, stats.beta(2 + 8, 2 + 2), stats.beta(2, 2))


def poisson_model(y=None):
    rate = numpyro.sample("rate", dist.Gamma(3.0, 1.0))
    with numpyro.plate("counts", 5):
        numpyro.sample("y", dist.Poisson(rate), obs=y)


def test_poisson_observed_site():
    inf = _run(poisson_model)
    assert np.issubdtype(inf.spec.observed_dtypes["y"], np.integer)
    y = np.array([4, 2, 5, 3, 6])
    _check_loglik_matches(inf, {"y": y}, lambda t: dist.Poisson(t["rate"]))
    s = np.asarray(inf.get_samples(jax.random.PRNGKey(1), {"y": y}, 300)["rate"])
    assert s.shape == (300,) and np.all(s > 0)
    ode = np.asarray(inf.sample_ode(jax.random.PRNGKey(2), {"y": y}, 2000)["rate"])
    _assert_scipy(ode, stats.gamma(3 + 20, scale=1 / (1 + 5)), stats.gamma(3.0))


# --------------------------------------------------- data as model arguments
X = np.array([[1.0, 0.0], [1.0, 0.5], [1.0, 1.0], [1.0, 1.5]], np.float32)
Y = np.array([0.4, 1.0, 1.3, 2.1], np.float32)
SD = 0.5


def regression(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(jnp.zeros(2), 1.0).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, SD), obs=y)


def _regression_posterior_mean():
    prec = np.eye(2) + X.T @ X / SD**2
    return np.linalg.solve(prec, X.T @ Y / SD**2)


def _assert_regression_posterior(ode):
    """ODE draws (S, 2) of ``beta`` against the closed-form regression posterior."""
    mean, cov = _regression_posterior_mean(), np.linalg.inv(np.eye(2) + X.T @ X / SD**2)
    exact = np.random.default_rng(0).multivariate_normal(mean, cov, 4000)
    _assert_exact(ode, mean, np.sqrt(np.diag(cov)), exact, _normal_draws(np.zeros(2), 1.0))


@pytest.fixture(scope="module")
def regression_with_data():
    return _run(regression, X, y=Y)


@pytest.fixture(scope="module")
def regression_without_data():
    return _run(regression, X)


def test_covariates_as_model_arguments(regression_without_data):
    inf = regression_without_data
    assert inf.default_observations is None
    with pytest.raises(ValueError, match="no observations given and none stored"):
        inf.get_samples(KEY)
    ode = np.asarray(inf.sample_ode(jax.random.PRNGKey(2), {"y": Y}, 2000)["beta"])
    _assert_regression_posterior(ode)


def test_data_keyword_is_taken_out_and_becomes_the_default(
    regression_with_data, regression_without_data
):
    inf = regression_with_data
    # simulations ran without the data
    assert inf.state.args[0] is X and "y" not in inf.state.kwargs
    assert not np.all(inf.simulations.y == Y)  # ... so y was simulated, not copied
    np.testing.assert_array_equal(inf.default_observations["y"], Y)
    # the same prior simulations and generator as without the data argument
    plain = regression_without_data
    k = jax.random.PRNGKey(5)
    a = inf.get_samples(k, num_samples=200)["beta"]
    np.testing.assert_array_equal(a, plain.get_samples(k, {"y": Y}, 200)["beta"])
    np.testing.assert_array_equal(a, inf.get_samples(k, {"y": Y}, 200)["beta"])
    ode = np.asarray(inf.sample_ode(jax.random.PRNGKey(2), num_samples=2000)["beta"])
    _assert_regression_posterior(ode)
    assert inf.ess() > 10
    idata = inf.to_inference_data(jax.random.PRNGKey(3), num_samples=100)
    np.testing.assert_allclose(idata.observed_data["y"].values, Y)
    assert idata.posterior["beta"].shape == (1, 100, 2)


def test_data_positional_argument(regression_with_data):
    inf = _run(regression, X, Y)
    assert inf.state.args[1] is None
    np.testing.assert_array_equal(inf.default_observations["y"], Y)
    k = jax.random.PRNGKey(5)
    np.testing.assert_array_equal(
        inf.get_samples(k, num_samples=50)["beta"],
        regression_with_data.get_samples(k, num_samples=50)["beta"],
    )


def test_default_observations_survive_save_and_load(regression_with_data, tmp_path):
    inf = regression_with_data
    path = tmp_path / "reg.npz"
    inf.save(path)
    k = jax.random.PRNGKey(6)
    want = inf.get_samples(k, num_samples=100)["beta"]
    for loaded in (MFDiff.load(path, regression, X), MFDiff.load(path, regression, X, y=Y)):
        np.testing.assert_array_equal(loaded.default_observations["y"], Y)
        np.testing.assert_array_equal(loaded.get_samples(k, num_samples=100)["beta"], want)


def test_data_for_some_observed_sites_only_is_an_error():
    with pytest.raises(ValueError, match=r"not for the observed site\(s\) \['y2'\]"):
        MFDiff(two_observed, observed_sites=["y1", "y2"], **TINY).run(KEY, y1=1.0)


# ------------------------------------------- unsupported: clear errors, early
def with_factor(y=None):
    theta = numpyro.sample("theta", dist.Normal(0.0, 1.0))
    numpyro.factor("soft_constraint", -(theta**2))
    numpyro.sample("y", dist.Normal(theta, 1.0), obs=y)


def improper_prior(y=None):
    theta = numpyro.sample("theta", ImproperUniform(constraints.real, (), ()))
    numpyro.sample("y", dist.Normal(theta, 1.0), obs=y)


def improper_in_plate(y=None):
    with numpyro.plate("p", 3):
        theta = numpyro.sample("theta_vec", ImproperUniform(constraints.positive, (), ()))
    numpyro.sample("y", dist.Normal(theta.sum(), 1.0), obs=y)


def discrete_latent(y=None):
    k = numpyro.sample("k", dist.Poisson(3.0))
    numpyro.sample("y", dist.Normal(k, 1.0), obs=y)


def subsampled(y=None):
    theta = numpyro.sample("theta", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", 10, subsample_size=5):
        numpyro.sample("y", dist.Normal(theta, 1.0), obs=y)


def dependent_support(y=None):
    scale = numpyro.sample("scale", dist.HalfNormal(1.0))
    x = numpyro.sample("x", dist.Uniform(0.0, scale))
    numpyro.sample("y", dist.Normal(x, 0.1), obs=y)


def pinned_data(y=None):
    theta = numpyro.sample("theta", dist.Normal(0.0, 1.0))
    numpyro.sample("y_fixed", dist.Normal(theta, 1.0), obs=jnp.array(0.5))


@pytest.mark.parametrize(
    "model, match",
    [
        (with_factor, "site 'soft_constraint' is a numpyro.factor"),
        (improper_prior, "latent site 'theta' has an improper prior"),
        (improper_in_plate, "latent site 'theta_vec' has an improper prior"),
        (discrete_latent, "latent site 'k' is discrete"),
        (subsampled, "site 'y' is scaled"),
        (dependent_support, "latent site 'x' has a support that depends on other latent"),
        (pinned_data, r"observed site\(s\) \['y_fixed'\] already carry data"),
    ],
)
def test_unsupported_features_name_the_site_before_simulating(model, match):
    inf = MFDiff(model, num_simulations=100, **TINY)
    with pytest.raises(ValueError, match=match):
        inf.run(KEY)
    assert inf.simulations is None
