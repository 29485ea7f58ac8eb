"""Models with exact posteriors shared by the tests."""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from numpyro_mfdiff.examples import quadratic, quadratic_bin_probs  # noqa: F401
from numpyro_mfdiff.examples import quadratic_kl as kl_quadratic  # noqa: F401

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
