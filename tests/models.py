"""Models with exact posteriors shared by the tests."""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

NOISE = 0.1


def quadratic(y=None):
    theta = numpyro.sample("theta", dist.Uniform(-2.0, 2.0))
    numpyro.sample("y", dist.Normal(theta**2, NOISE), obs=y)


def quadratic_bin_probs(y, edges, noise=NOISE):
    """Exact posterior mass of the quadratic model in each bin of ``edges``."""
    g = np.linspace(edges[0], edges[-1], 400_001)
    logp = -0.5 * ((y - g**2) / noise) ** 2
    c = np.cumsum(np.exp(logp - logp.max()))
    c /= c[-1]
    return np.diff(c[np.clip(np.searchsorted(g, edges), 0, g.size - 1)])


def kl_hist(samples, probs, edges):
    """KL(exact || samples) on a histogram; empty sample bins get mass 1e-12."""
    q, _ = np.histogram(np.asarray(samples), edges)
    q = q / q.sum()
    m = probs > 0
    return float(np.sum(probs[m] * np.log(probs[m] / np.maximum(q[m], 1e-12))))


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
