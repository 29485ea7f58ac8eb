"""Models with exact posteriors, and helpers, shared by the tests."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from numpyro_mfdiff.examples import quadratic, quadratic_bin_probs  # noqa: F401
from numpyro_mfdiff.examples import quadratic_kl as kl_quadratic  # noqa: F401

# budgets of a small build: seconds on the 2-core CPU
SMALL = dict(
    num_labels=512,
    num_steps=20,
    train_steps=200,
    # at least the simulations of the tests (2000): fewer drop up to half of an
    # observation's likelihood mass (and warn)
    label_points=2048,
    chunk_size=128,
    width=32,
    depth=2,
    progress_bar=False,
)

# a tinier one, for tests of mechanics rather than accuracy
TINY = dict(
    SMALL, num_labels=256, num_steps=10, train_steps=50, label_points=1024, width=16, depth=1
)

A = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, -0.5], [0.3, 0.0, 1.0], [0.5, 0.5, 0.5]])
SIGMA = 0.7


def linear_gaussian(x=None):
    """theta ~ N(0, I_3) as sites of two shapes; x ~ N(A theta, SIGMA^2 I_4)."""
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    b = numpyro.sample("b", dist.Normal(jnp.zeros(2), 1.0).to_event(1))
    theta = jnp.concatenate([a[None], b])
    numpyro.sample("x", dist.Normal(jnp.asarray(A) @ theta, SIGMA).to_event(1), obs=x)


def linear_gaussian_posterior(x):
    """Closed-form posterior mean (3,) and covariance (3, 3) of ``linear_gaussian``."""
    prec = np.eye(3) + A.T @ A / SIGMA**2
    cov = np.linalg.inv(prec)
    return cov @ A.T @ np.asarray(x) / SIGMA**2, cov


def stack_linear(s):
    return np.concatenate([np.asarray(s["a"])[..., None], np.asarray(s["b"])], axis=-1)


def quadratic_exact_draws(key, y, num, noise=0.1):
    """``num`` exact posterior draws of :func:`quadratic` at ``y`` (inverse CDF on a grid)."""
    g = np.linspace(-2.0, 2.0, 400_001)
    c = np.cumsum(np.exp(-0.5 * ((y - g**2) / noise) ** 2))
    u = np.asarray(jax.random.uniform(key, (num,)))
    return np.interp(u * c[-1], c, g)


def wrong_answers(exact, prior):
    """Deliberately wrong posteriors an accuracy check must reject, built from exact
    draws ``exact`` (S, ...): the prior draws ``prior``, the exact draws shifted by 0.3
    sd, and with the sd halved or doubled about the mean."""
    m, s = exact.mean(0), exact.std(0)
    return {
        "prior": prior,
        "shifted 0.3 sd": exact + 0.3 * s,
        "sd halved": m + 0.5 * (exact - m),
        "sd doubled": m + 2.0 * (exact - m),
    }


def quadratic_wrong_answers(exact, prior):
    """:func:`wrong_answers` for the bimodal quadratic posterior: each mode (``|theta|``
    of the exact draws) shifted or rescaled, the sign kept; the prior draws as they are."""
    wrong = wrong_answers(np.abs(exact), prior)
    return {k: v if k == "prior" else np.sign(exact) * v for k, v in wrong.items()}


def assert_same(a, b):
    """Two pytrees of arrays equal leaf by leaf, bit for bit (NaN equals NaN)."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def moment_errors(draws, mean, sd):
    """How far ``draws`` (S, D) are from a reference with per-coordinate ``mean`` and
    ``sd``, in units of the reference sd: (largest |mean error| / sd, largest
    |log(sd ratio)|) over the coordinates."""
    draws = np.asarray(draws, np.float64).reshape(len(draws), -1)
    mean, sd = np.ravel(mean), np.ravel(sd)
    return (
        float(np.max(np.abs(draws.mean(0) - mean) / sd)),
        float(np.max(np.abs(np.log(draws.std(0) / sd)))),
    )


def moments_agree(draws, mean, sd, mean_tol, sd_factor):
    """Means within ``mean_tol`` reference sds and sds within a factor ``sd_factor``."""
    dm, ds = moment_errors(draws, mean, sd)
    return dm < mean_tol and ds < np.log(sd_factor)


def assert_wrong_answers_fail(check, exact, prior):
    """``check(draws) -> bool`` accepts the exact draws and rejects every one of
    :func:`wrong_answers` (prior, shifted 0.3 sd, sd halved, sd doubled)."""
    assert check(exact), "the check rejects exact draws"
    for name, wrong in wrong_answers(exact, prior).items():
        assert not check(wrong), f"the check accepts a wrong answer: {name}"


def varying_intercepts(group, y=None, num_groups=16):
    """mu ~ N(0, 5^2), tau ~ HalfNormal(5), alpha_j ~ N(mu, tau^2) (centred as written),
    y_i ~ N(alpha[group_i], 1): one parameter per group."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(5.0))
    with numpyro.plate("groups", num_groups):
        alpha = numpyro.sample("alpha", dist.Normal(mu, tau))
    numpyro.sample("y", dist.Normal(alpha[group], 1.0), obs=y)


def varying_intercepts_data():
    """16 groups of 5 points, seed 0: (group (80,), y (80,))."""
    rng = np.random.default_rng(0)
    group = jnp.repeat(jnp.arange(16), 5)
    y = jnp.asarray(1.0 + 1.5 * rng.normal(size=16))[group] + rng.normal(size=80)
    return group, y
