"""Training-free Monte Carlo denoiser over a set of prior samples.

All functions are pure and jittable. Coordinates are the standardised
unconstrained coordinates in which the diffusion runs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["denoise", "score", "ess", "select_top_k", "prune_points"]


def _logits(x, alpha, beta, points, log_lik):
    """Softmax logits of the denoiser weights, up to a per-row constant.

    ``x``: (B, D); ``points``: (K, D) shared or (B, K, D) per row;
    ``log_lik``: (K,) or (B, K). Returns (B, K).
    The ``|x|^2`` term cancels in the softmax and is left out (batched matmul form).
    """
    inv_var = 1.0 / beta**2
    sq = jnp.sum(points * points, axis=-1)
    if points.ndim == 2:
        cross = x @ points.T
    else:
        cross = jnp.einsum("bd,bkd->bk", x, points)
    return log_lik + (alpha * inv_var) * cross - (0.5 * alpha**2 * inv_var) * sq


def denoise(x, alpha, beta, points, log_lik):
    """Posterior mean ``E[theta_0 | theta_t = x, y]`` under the empirical prior.

    Args:
        x: states, shape (B, D).
        alpha, beta: scalars, schedule coefficients at the current time.
        points: prior samples, (K, D) shared by all rows or (B, K, D).
        log_lik: log-likelihood (plus any importance log-weight) of each
            point, (K,) or (B, K); ``-inf`` excludes a point.

    Returns:
        Array (B, D).
    """
    w = jax.nn.softmax(_logits(x, alpha, beta, points, log_lik), axis=-1)
    if points.ndim == 2:
        return w @ points
    return jnp.einsum("bk,bkd->bd", w, points)


def score(x, alpha, beta, points, log_lik):
    """Score of the diffused posterior, ``-(x - alpha m) / beta^2``; shape (B, D)."""
    m = denoise(x, alpha, beta, points, log_lik)
    return -(x - alpha * m) / beta**2


def ess(log_w, axis=-1):
    """Effective sample size ``(sum w)^2 / sum w^2`` of log-weights along ``axis``."""
    log_w = jnp.asarray(log_w)
    return jnp.exp(
        2.0 * jax.nn.logsumexp(log_w, axis=axis) - jax.nn.logsumexp(2.0 * log_w, axis=axis)
    )


def select_top_k(points, log_lik, k):
    """Keep, per row of ``log_lik`` (B, N), the ``k`` points of largest log-likelihood.

    Returns ``(points_k (B, k, D), log_lik_k (B, k), dropped (B,))`` where
    ``dropped`` is the likelihood mass left out, as a fraction of the total.
    """
    top, idx = jax.lax.top_k(log_lik, k)
    total = jax.nn.logsumexp(log_lik, axis=-1)
    kept = jax.nn.logsumexp(top, axis=-1)
    dropped = -jnp.expm1(kept - total)
    return points[idx], top, dropped


def prune_points(ll, tol):
    """Indices of the fewest points holding ``1 - tol`` of the likelihood mass (host-side).

    ``ll``: NumPy log-likelihoods (N,); non-finite entries are never kept.

    The count is rounded up to a multiple of 512 (padding with ``-inf`` weights)
    so that nearby observations reuse one compiled sampler.
    Returns ``(idx, ll_kept, dropped_mass)``.
    """
    order = np.argsort(-ll, kind="stable")
    finite = np.isfinite(ll[order])
    order = order[finite]
    w = np.exp(ll[order] - ll[order[0]])
    c = np.cumsum(w) / w.sum()
    k = int(np.searchsorted(c, 1.0 - tol)) + 1 if tol > 0 else order.size
    k = min(k, order.size)
    dropped = float(1.0 - c[k - 1])
    size = min(-(-k // 512) * 512, ll.size)
    idx = np.concatenate([order[:k], np.zeros(size - k, np.int64)])
    kept = np.concatenate([ll[order[:k]], np.full(size - k, -np.inf)])
    return idx, kept, max(dropped, 0.0)
