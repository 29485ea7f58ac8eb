"""The paper's first example: ``y ~ N(theta^2, 0.1^2)``, its coarse twin and its exact posterior."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

__all__ = [
    "QUADRATIC_NOISE",
    "quadratic",
    "quadratic_coarse",
    "quadratic_bin_probs",
    "quadratic_kl",
]

QUADRATIC_NOISE = 0.1


def quadratic(y=None):
    """``theta ~ U(-2, 2)``, ``y ~ N(theta^2, 0.1^2)``: bimodal posterior at ``+-sqrt(y)``."""
    theta = numpyro.sample("theta", dist.Uniform(-2.0, 2.0))
    numpyro.sample("y", dist.Normal(theta**2, QUADRATIC_NOISE), obs=y)


def quadratic_coarse(y=None, nodes: int = 6):
    """A deliberately poor low-fidelity :func:`quadratic`: ``theta^2`` interpolated
    linearly between ``nodes`` equally spaced points of [-2, 2].

    With 6 nodes the approximation overestimates ``theta^2`` by up to 0.16 (at
    ``theta = +-1``: 1.12), so its posterior for ``y = 1`` peaks at
    ``+-0.925`` instead of ``+-1``, 1.5 posterior standard deviations away.
    """
    theta = numpyro.sample("theta", dist.Uniform(-2.0, 2.0))
    grid = jnp.linspace(-2.0, 2.0, nodes)
    numpyro.sample("y", dist.Normal(jnp.interp(theta, grid, grid**2), QUADRATIC_NOISE), obs=y)


def quadratic_bin_probs(y: float, bins: int = 80, range=(-2.0, 2.0), noise=QUADRATIC_NOISE):  # noqa: A002
    """Exact posterior mass of :func:`quadratic` in ``bins`` equal bins over ``range``.

    Integrated numerically on a grid of 400,001 points; returns an array (bins,).
    """
    edges = np.linspace(range[0], range[1], bins + 1)
    g = np.linspace(range[0], range[1], 400_001)
    logp = -0.5 * ((y - g**2) / noise) ** 2
    c = np.cumsum(np.exp(logp - logp.max()))
    c /= c[-1]
    return np.diff(c[np.clip(np.searchsorted(g, edges), 0, g.size - 1)])


def quadratic_kl(samples, y: float, bins: int = 80) -> float:
    """KL(exact || samples) of :func:`quadratic` at ``y``: ``bins`` bins over [-2, 2].

    ``samples``: draws of ``theta``, shape (S,).
    """
    from ..metrics import kl_divergence_hist

    probs = quadratic_bin_probs(y, bins)
    return float(kl_divergence_hist(probs, samples, bins=bins, range=(-2.0, 2.0), p_is_probs=True))
