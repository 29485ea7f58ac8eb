"""The weight maths every stage shares: effective sample sizes, log-sum-exp
normalisation, weighted moments (the kernel bandwidths, Scott's and Silverman's, are
:mod:`~numpyro_mfdiff.refine._kde`'s).

One module for them, so that the prior bank, labelling, the domain check, sequential
importance sampling, SMC, refinement and the diagnostics compute an ESS the same way.
A leaf of the package: it imports none of its modules.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ess", "host_ess", "log_normalise", "pool_by_ess", "row_moments"]


@partial(jax.jit, static_argnames="axis")  # one compiled program per shape, not six
def ess(log_w, axis=-1):
    """Effective sample size ``(sum w)^2 / sum w^2`` of log-weights along ``axis`` (JAX)."""
    log_w = jnp.asarray(log_w)
    return jnp.exp(
        2.0 * jax.nn.logsumexp(log_w, axis=axis) - jax.nn.logsumexp(2.0 * log_w, axis=axis)
    )


def host_ess(log_w) -> float:
    """:func:`ess` of NumPy log-weights (N,) in float64 on the host (0 if none is finite)."""
    log_w = np.asarray(log_w, np.float64)
    if not np.isfinite(log_w).any():
        return 0.0
    w = np.exp(log_w - np.max(log_w))
    return float(w.sum() ** 2 / (w**2).sum())


def log_normalise(a, axis):
    """``log sum exp`` of NumPy ``a`` along ``axis``; rows of only ``-inf`` give ``-inf``."""
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(top, axis) + np.log(np.sum(np.exp(a - top), axis=axis))


def pool_by_ess(log_ws) -> np.ndarray:
    """Weighted samples of one target pooled: each pool's log-weights (N_k,) normalised
    and times its share of the summed ESS, concatenated (sum N_k,), so that the pooled
    ESS is the sum of the pools' (SMC's stages at ``l = 1``; a continuation and the
    record it continued). A pool with no finite weight gets none."""
    log_ws = [np.asarray(lw, np.float64) for lw in log_ws]
    esses = [host_ess(lw) for lw in log_ws]
    total = sum(esses)
    return np.concatenate(
        [
            lw - log_normalise(lw, 0) + np.log(e / total) if e > 0 else np.full_like(lw, -np.inf)
            for lw, e in zip(log_ws, esses, strict=True)
        ]
    )


@jax.jit
def row_moments(loglik, points):
    """Weighted moments of the points under each row's normalised weights.

    ``loglik`` (B, K) log-weights (``-inf`` excluded), ``points`` (K, D). Returns
    ``(mean (B, D), eigenvalues (B, D) ascending, eigenvectors (B, D, D), ess (B,))``
    of each row's weighted covariance.
    """
    w = jax.nn.softmax(loglik, axis=-1)
    w = jnp.where(jnp.isfinite(w), w, 0.0)
    mean = w @ points
    # one (B, K) @ (K, D) product per coordinate: memory K x D whatever B
    second = jax.lax.map(lambda col: w @ (points * col[:, None]), points.T)
    cov = jnp.swapaxes(second, 0, 1) - mean[:, :, None] * mean[:, None, :]
    eigvals, vec = jnp.linalg.eigh(cov)
    return mean, jnp.maximum(eigvals, 0.0), vec, 1.0 / jnp.sum(w**2, axis=-1)
