"""Reverse-time probability-flow ODE with exponential-integrator steps.

Two step rules on the denoiser ``m``: first order (DDIM), exact when ``m`` is
constant over a step, and the second-order multistep rule of DPM-Solver++(2M),
which extrapolates ``m`` linearly in ``lambda = log(alpha / beta)`` from the
previous step at no extra denoiser cost.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._schedule import AbstractSchedule
from ._score import denoise, prune_points

__all__ = ["ddim_step", "solve_ode", "solve_ode_jit", "sample_pruned", "SOLVERS"]

SOLVERS = ("ddim", "dpm2m")


def ddim_step(x, m, alpha_t, beta_t, alpha_s, beta_s):
    """One step from ``t`` to ``s < t``: ``alpha_s m + (beta_s / beta_t)(x - alpha_t m)``.

    Exact when the denoised mean ``m`` is constant over the step.
    """
    return alpha_s * m + (beta_s / beta_t) * (x - alpha_t * m)


def solve_ode(
    z, points, log_lik, schedule: AbstractSchedule, grid, solver: str = "dpm2m", denoise_last=True
):
    """Integrate the probability-flow ODE from noise to posterior samples.

    Args:
        z: standard normal noise, (B, D).
        points: prior samples (K, D) or per-row (B, K, D), standardised coordinates.
        log_lik: (K,) or (B, K) log-weights of the points.
        schedule: forward-diffusion schedule.
        grid: decreasing times (S + 1,), from ``t_max`` to ``t_min``.
        solver: ``"ddim"`` (first order) or ``"dpm2m"`` (second-order multistep).
        denoise_last: return the denoised mean at the final time (default);
            ``False`` returns the state ``x / alpha`` there instead: a sample of
            the points' measure smoothed by a Gaussian of sd ``beta / alpha``
            (early stopping; see ``refine(..., smoothing=...)``).

    Returns:
        Samples of shape (B, D).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    alphas = schedule.alpha(grid)
    betas = schedule.beta(grid)
    lam = jnp.log(alphas) - jnp.log(betas)
    h = lam[1:] - lam[:-1]
    # ratio of the previous step length to this one; 0 on the first step (-> DDIM)
    r = jnp.concatenate([jnp.zeros(1), h[:-1] / h[1:]])
    second = 1.0 if solver == "dpm2m" else 0.0
    x0 = betas[0] * z  # the diffused marginal at t_max is ~ N(0, beta^2) in standardised coords

    def step(carry, coeffs):
        x, m_prev = carry
        a_t, b_t, a_s, b_s, r_i = coeffs
        m = denoise(x, a_t, b_t, points, log_lik)
        c = jnp.where(r_i > 0, second * 0.5 / jnp.where(r_i > 0, r_i, 1.0), 0.0)
        d = (1.0 + c) * m - c * m_prev
        return (ddim_step(x, d, a_t, b_t, a_s, b_s), m), None

    coeffs = (alphas[:-1], betas[:-1], alphas[1:], betas[1:], r)
    (x, _), _ = jax.lax.scan(step, (x0, jnp.zeros_like(z)), coeffs)
    if not denoise_last:
        return x / alphas[-1]
    return denoise(x, alphas[-1], betas[-1], points, log_lik)


@eqx.filter_jit
def solve_ode_jit(z, points, log_lik, schedule, grid, solver, denoise_last=True):
    """:func:`solve_ode`, compiled once per shape, schedule, solver and end point."""
    return solve_ode(z, points, log_lik, schedule, grid, solver, denoise_last)


def sample_pruned(
    z, points, log_w, schedule, grid, solver, prune_tol, batch_size=4096, denoise_last=True
):
    """ODE samples for one observation, from its fewest points holding ``1 - prune_tol``
    of the weight.

    ``z``: (S, D) noise; ``points``: (N, D) standardised; ``log_w``: (N,) NumPy
    log-weights (``-inf`` excluded). Solved in compiled batches of
    ``batch_size``; ``denoise_last`` as in :func:`solve_ode`.
    Returns ``(u (S, D), points_used, dropped_mass)``.
    """
    idx, w_kept, dropped = prune_points(np.asarray(log_w, np.float64), prune_tol)
    pts = points[idx]
    w_kept = jnp.asarray(w_kept, jnp.float32)
    n = z.shape[0]
    B = min(batch_size, n)
    pad = (-n) % B
    zp = jnp.concatenate([z, z[:pad]]) if pad else z
    u = jnp.concatenate(
        [
            solve_ode_jit(zp[s : s + B], pts, w_kept, schedule, grid, solver, denoise_last)
            for s in range(0, zp.shape[0], B)
        ]
    )
    return u[:n], int(idx.size), dropped
