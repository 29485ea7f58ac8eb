"""Labelling: run the Monte Carlo-score ODE for many (y, z) pairs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._ode import solve_ode

__all__ = ["label_chunk"]


def label_chunk(z, loglik, points, schedule, grid, num_points: int, solver: str = "dpm2m"):
    """Solve the ODE for a chunk of triples, each with its own observation.

    The chunk shares one set of prior points: the ``num_points`` points with
    the largest normalised log-likelihood under any observation of the chunk
    (chunks of similar observations share most of their support), so the
    denoiser stays a single batched matmul.

    Args:
        z: noise, (B, D).
        loglik: ``log p(y_i | theta_j)``, (B, N); ``-inf`` for excluded points.
        points: standardised prior samples, (N, D).
        num_points: points kept for the chunk; ``>= N`` keeps all of them.

    Returns:
        ``(theta (B, D), dropped (B,))``: samples and, per row, the likelihood
        mass left out by the truncation, as a fraction.
    """
    n = points.shape[0]
    if num_points >= n:
        return solve_ode(z, points, loglik, schedule, grid, solver), jnp.zeros(z.shape[0])
    rel = loglik - jnp.max(loglik, axis=1, keepdims=True)
    _, idx = jax.lax.top_k(jnp.max(rel, axis=0), num_points)
    ll = loglik[:, idx]
    dropped = -jnp.expm1(jax.nn.logsumexp(ll, axis=1) - jax.nn.logsumexp(loglik, axis=1))
    return solve_ode(z, points[idx], ll, schedule, grid, solver), dropped
