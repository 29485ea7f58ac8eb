"""Labelling: run the Monte Carlo-score ODE for many (y, z) pairs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._ode import solve_ode

__all__ = ["label_chunk", "label_triples"]


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


def label_triples(
    y, y_std, z, loglik_fn, points, schedule, grid, num_points, solver, chunk_size, progress=None
):
    """Label many triples in compiled chunks of ``chunk_size``.

    Triples are ordered along the leading principal direction of the
    standardised observations ``y_std`` (T, M) so that a chunk holds similar
    observations and shares its prior points. ``loglik_fn`` maps one
    observation of ``y`` (M,), as simulated, to the log-likelihoods (N,).
    ``progress`` receives the triples finished per chunk.

    Returns ``(order (T,), theta (T, D), dropped (T,))``: ``theta`` and
    ``dropped`` belong to ``y_std[order]``, ``z[order]``.
    """
    T = y_std.shape[0]
    if y_std.shape[1] > 1:
        _, _, vt = np.linalg.svd(y_std - y_std.mean(0), full_matrices=False)
        order = np.argsort(y_std @ vt[0], kind="stable")
    else:
        order = np.argsort(y_std[:, 0], kind="stable")
    B = min(chunk_size, T)
    pad = (-T) % B
    idx = np.concatenate([order, order[:pad]])

    @jax.jit
    def chunk(yc, zc):
        return label_chunk(zc, jax.vmap(loglik_fn)(yc), points, schedule, grid, num_points, solver)

    out, dropped = [], []
    for s in range(0, idx.size, B):
        o, d = chunk(y[idx[s : s + B]], z[idx[s : s + B]])
        out.append(np.asarray(o))
        dropped.append(np.asarray(d))
        if progress is not None:
            progress(min(B, T - s))
    return order, np.concatenate(out)[:T], np.concatenate(dropped)[:T]
