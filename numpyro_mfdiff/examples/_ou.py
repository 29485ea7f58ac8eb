"""Linear SDE example: an Ornstein-Uhlenbeck process with unknown drift and diffusion.

``dX = -theta X dt + sigma dW``, ``X(0) = x0`` known, observed with a small Gaussian noise
at a few times. The path at the observation times is Gaussian, so both fidelities are one
multivariate normal observed site whose mean and covariance depend on the parameters only
(MFDiff keeps the distribution of each observed site per prior draw; a Markov chain of
observed sites would condition on simulated values).

- High fidelity: the exact transition law,
  ``E X_t = x0 e^{-theta t}``,
  ``Cov(X_s, X_t) = sigma^2 / (2 theta) (e^{-theta |t - s|} - e^{-theta (t + s)})``.
- Low fidelity: the Gaussian law of the Euler-Maruyama recursion
  ``X_{n+1} = (1 - theta h) X_n + sigma sqrt(h) xi_n`` with a coarse step ``h``:
  ``E X_n = a^n x0`` and ``Cov(X_m, X_n) = a^{|n - m|} V_{min(m, n)}`` with ``a = 1 - theta h``,
  ``V_n = sigma^2 h sum_{i < n} a^{2i}``. It decays too fast (``1 - theta h < e^{-theta h}``),
  which biases the posterior of ``theta`` downwards.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from ._grid import grid_steps

__all__ = [
    "OU_TRUE",
    "OU_X0",
    "OU_TIMES",
    "OU_NOISE",
    "OU_COARSE_DT",
    "ou_exact_moments",
    "ou_euler_moments",
    "ou_euler_paths",
    "ou_low",
    "ou_high",
    "ou_log_posterior_grid",
]

OU_TRUE = {"theta": 1.0, "sigma": 0.5}
OU_X0 = 5.0
OU_TIMES = tuple(0.5 * k for k in range(1, 11))
OU_NOISE = 0.05
OU_COARSE_DT = 0.5
_PRIOR = {"theta": (0.0, 0.5), "sigma": (float(np.log(0.5)), 0.5)}  # LogNormal (loc, scale)


def ou_exact_moments(theta, sigma, times=OU_TIMES, x0=OU_X0):
    """Exact mean ``(T,)`` and covariance ``(T, T)`` of the OU path at ``times`` (scalars in).

    Uses ``(1 - e^{-2 theta min(s, t)}) / (2 theta)`` through ``expm1`` so that small
    ``theta`` loses no precision. Plain JAX: vmap-able and differentiable.
    """
    t = jnp.asarray(times, jnp.result_type(float))
    mean = x0 * jnp.exp(-theta * t)
    lo = jnp.minimum(t[:, None], t[None, :])
    gap = jnp.abs(t[:, None] - t[None, :])
    cov = sigma**2 * jnp.exp(-theta * gap) * (-jnp.expm1(-2.0 * theta * lo)) / (2.0 * theta)
    return mean, cov


def ou_euler_moments(theta, sigma, times=OU_TIMES, dt=OU_COARSE_DT, x0=OU_X0):
    """Mean ``(T,)`` and covariance ``(T, T)`` of the Euler-Maruyama chain with step ``dt``.

    The chain ``X_{n+1} = (1 - theta dt) X_n + sigma sqrt(dt) xi_n`` from ``X_0 = x0`` is
    Gaussian; its moments are computed exactly (powers of ``a = 1 - theta dt`` by a
    cumulative product, valid for any sign of ``a``). Every time must be a multiple of
    ``dt``. Converges to :func:`ou_exact_moments` as ``dt -> 0`` (error ``O(dt)``).
    """
    steps = grid_steps(times, dt)
    a = 1.0 - theta * dt
    dtype = jnp.result_type(float)
    pw = jnp.concatenate([jnp.ones(1, dtype), jnp.cumprod(jnp.full(int(steps.max()), a, dtype))])
    var = sigma**2 * dt * jnp.concatenate([jnp.zeros(1, dtype), jnp.cumsum(pw[:-1] ** 2)])
    lo = np.minimum(steps[:, None], steps[None, :])
    gap = np.abs(steps[:, None] - steps[None, :])
    return x0 * pw[steps], pw[gap] * var[lo]


def ou_euler_paths(rng_key, theta, sigma, num_paths, times=OU_TIMES, dt=OU_COARSE_DT, x0=OU_X0):
    """Simulate ``num_paths`` Euler-Maruyama paths with step ``dt``; returns ``(num_paths, T)``.

    A Monte Carlo check of the moment formulas (a small ``dt`` approximates the SDE itself).
    """
    steps = grid_steps(times, dt)
    noise = jax.random.normal(rng_key, (int(steps.max()), num_paths))

    def step(x, xi):
        x = x + (-theta * x) * dt + sigma * jnp.sqrt(dt) * xi
        return x, x

    _, path = jax.lax.scan(step, jnp.full(num_paths, x0, jnp.result_type(float)), noise)
    return path[steps - 1].T


def _path_dist(moments, theta, sigma):
    mean, cov = moments(theta, sigma)
    cov = cov + OU_NOISE**2 * jnp.eye(mean.shape[-1])
    return dist.MultivariateNormal(mean, covariance_matrix=cov)


def _prior(name):
    return dist.LogNormal(*_PRIOR[name])


def _ou(moments, y):
    theta = numpyro.sample("theta", _prior("theta"))
    sigma = numpyro.sample("sigma", _prior("sigma"))
    numpyro.sample("y", _path_dist(moments, theta, sigma), obs=y)


def ou_low(y=None):
    """OU parameter estimation, low fidelity: Euler-Maruyama law with ``dt = 0.5``.

    Prior (independent): ``theta ~ LogNormal(0, 0.5)``, ``sigma ~ LogNormal(log 0.5, 0.5)``.
    ``X(0) = 5`` (known); ``y`` (10,) is the path at ``t = 0.5, 1, ..., 5`` plus
    ``N(0, 0.05^2)`` noise, one multivariate normal site. With one Euler step per
    observation interval the decay per interval is ``1 - 0.5 theta`` instead of
    ``e^{-0.5 theta}``: at ``theta = 1`` the low-fidelity posterior of ``theta`` sits near
    ``0.79`` instead of ``1`` (see :func:`ou_euler_moments`).
    """
    _ou(ou_euler_moments, y)


def ou_high(y=None):
    """OU parameter estimation, high fidelity: the exact Gaussian law of the path
    (:func:`ou_exact_moments`). Same prior, initial state, times and noise as :func:`ou_low`.
    """
    _ou(ou_exact_moments, y)


def ou_log_posterior_grid(y, theta_grid, sigma_grid, exact=True):
    """Unnormalised log posterior density of :func:`ou_high` (or of :func:`ou_low` if not
    ``exact``) in the constrained ``(theta, sigma)`` coordinates, on the grid
    ``theta_grid (n,) x sigma_grid (m,)``; returns ``(n, m)`` (first axis ``theta``).
    """
    y = jnp.asarray(y, jnp.result_type(float))
    if y.shape != (len(OU_TIMES),):
        raise ValueError(f"`y` must have shape ({len(OU_TIMES)},), got {y.shape}")
    moments = ou_exact_moments if exact else ou_euler_moments

    def logp(theta, sigma):
        lp = _prior("theta").log_prob(theta) + _prior("sigma").log_prob(sigma)
        return lp + _path_dist(moments, theta, sigma).log_prob(y)

    th, sg = jnp.meshgrid(jnp.asarray(theta_grid), jnp.asarray(sigma_grid), indexing="ij")
    out = jax.jit(jax.vmap(logp))(th.ravel(), sg.ravel())
    return np.asarray(out).reshape(th.shape)
