"""Training-free Monte Carlo denoiser over a set of prior samples.

All functions are pure and jittable. Coordinates are the standardised
unconstrained coordinates in which the diffusion runs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "denoise",
    "denoise_fused",
    "denoise_blocked",
    "fuse_points",
    "score",
    "prune_points",
    "support_order",
    "dropped_mass",
]

# log-weight standing for "excluded" inside the fused matrices: finite, so that
# a block of excluded points gives zero weight instead of NaN, and far below any
# real log-weight (float32 holds up to 3.4e38)
_EXCLUDED = -1e30

# matmuls in full float32: the logits scale as alpha / beta^2 (~1e4 near t = 0),
# where a GPU's default TF32 products (10-bit mantissa) would move them by O(1)
_HI = jax.lax.Precision.HIGHEST


def _logits(x, alpha, beta, points, log_lik):
    """Softmax logits of the denoiser weights, up to a per-row constant.

    ``x``: (B, D); ``points``: (K, D) shared or (B, K, D) per row;
    ``log_lik``: (K,) or (B, K). Returns (B, K).
    The ``|x|^2`` term cancels in the softmax and is left out (batched matmul form).
    """
    inv_var = 1.0 / beta**2
    sq = jnp.sum(points * points, axis=-1)
    if points.ndim == 2:
        cross = jnp.matmul(x, points.T, precision=_HI)
    else:
        cross = jnp.einsum("bd,bkd->bk", x, points, precision=_HI)
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
        return jnp.matmul(w, points, precision=_HI)
    return jnp.einsum("bk,bkd->bd", w, points, precision=_HI)


def _finite_shifted(log_lik):
    """``log_lik`` minus its maximum along the last axis, ``-inf`` -> a finite floor."""
    top = jnp.max(log_lik, axis=-1, keepdims=True)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    return jnp.where(jnp.isfinite(log_lik), log_lik - top, _EXCLUDED)


def fuse_points(points, log_lik, block_size=None):
    """Time-independent matrices of the fused denoiser :func:`denoise_fused`.

    The logits ``log_lik_j + (alpha/beta^2) x.theta_j - alpha^2 |theta_j|^2 / (2 beta^2)``
    are one matmul of the augmented state ``[(alpha/beta^2) x, -alpha^2/(2 beta^2), 1]``
    with ``kernel = [theta_j, |theta_j|^2, log_lik_j]``; the weighted sum and the
    normaliser are one matmul with ``values = [theta_j, 1]``. Log-weights are
    shifted by their maximum (the softmax is unchanged) and ``-inf`` becomes a
    finite floor that gets zero weight. Per-row log-weights (B, K) cannot enter
    the kernel: they are kept apart and added to the logits.

    Args:
        points: (K, D) shared prior samples.
        log_lik: (K,) shared or (B, K) per-row log-weights; ``-inf`` excludes a point.
        block_size: ``None`` for one block, else points are padded with excluded
            rows to a multiple of ``block_size`` and split into ``nb`` blocks.

    Returns:
        ``(kernel, values, row_ll)``: kernel (K, D + 2) (shared log-weights) or
        (K, D + 1) (per-row), values (K, D + 1), ``row_ll`` None or (B, K); with
        blocks, a leading block axis: (nb, block_size, ...) and ``row_ll``
        padded to (B, nb * block_size).
    """
    points = jnp.asarray(points, jnp.float32)
    ll = _finite_shifted(jnp.asarray(log_lik, jnp.float32))
    sq = jnp.sum(points * points, axis=-1, keepdims=True)
    values = jnp.concatenate([points, jnp.ones_like(sq)], axis=1)
    if ll.ndim == 1:
        kernel, row_ll = jnp.concatenate([points, sq, ll[:, None]], axis=1), None
    else:
        kernel, row_ll = jnp.concatenate([points, sq], axis=1), ll
    if block_size is None:
        return kernel, values, row_ll
    k = points.shape[0]
    pad = (-k) % block_size
    nb = (k + pad) // block_size
    if pad:
        values = jnp.concatenate([values, jnp.zeros((pad, values.shape[1]), values.dtype)])
        kernel = jnp.concatenate([kernel, jnp.zeros((pad, kernel.shape[1]), kernel.dtype)])
        if row_ll is None:
            kernel = kernel.at[k:, -1].set(_EXCLUDED)
        else:
            row_ll = jnp.pad(row_ll, ((0, 0), (0, pad)), constant_values=_EXCLUDED)
    # per-row log-weights stay (B, nb * block_size): each block is sliced in place
    return kernel.reshape(nb, block_size, -1), values.reshape(nb, block_size, -1), row_ll


def _logits_fused(xa, kernel, row_ll):
    logits = jnp.matmul(xa, kernel.T, precision=_HI)
    return logits if row_ll is None else logits + row_ll


def denoise_fused(x, alpha, beta, kernel, values, row_ll=None):
    """:func:`denoise` from the matrices of :func:`fuse_points`; shape (B, D).

    With one block, two matmuls per call (logits, then numerator and normaliser
    together). With blocks, a scan over them with a running log-sum-exp, so
    memory is ``B x block_size`` whatever the number of points.
    """
    inv_var = 1.0 / beta**2
    ones = jnp.ones(x.shape[:-1] + (1,), x.dtype)
    cols = [(alpha * inv_var) * x, (-0.5 * alpha**2 * inv_var) * ones]
    xa = jnp.concatenate(cols + ([ones] if row_ll is None else []), axis=-1)
    if kernel.ndim == 2:
        logits = _logits_fused(xa, kernel, row_ll)
        e = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
        acc = jnp.matmul(e, values, precision=_HI)
        return acc[:, :-1] / acc[:, -1:]

    bs = kernel.shape[1]

    def block(carry, blk):
        m, acc = carry
        i, kern, vals = blk
        rows = None if row_ll is None else jax.lax.dynamic_slice_in_dim(row_ll, i * bs, bs, 1)
        logits = _logits_fused(xa, kern, rows)
        m_new = jnp.maximum(m, jnp.max(logits, axis=-1, keepdims=True))
        acc = acc * jnp.exp(m - m_new) + jnp.matmul(jnp.exp(logits - m_new), vals, precision=_HI)
        return (m_new, acc), None

    init = (
        jnp.full(x.shape[:-1] + (1,), -jnp.inf, x.dtype),
        jnp.zeros(x.shape[:-1] + (values.shape[-1],), x.dtype),
    )
    ids = jnp.arange(kernel.shape[0])
    (_, acc), _ = jax.lax.scan(block, init, (ids, kernel, values))
    return acc[:, :-1] / acc[:, -1:]


def denoise_blocked(x, alpha, beta, points, log_lik, block_size):
    """:func:`denoise` over blocks of ``block_size`` points with a running log-sum-exp.

    ``x`` (B, D), ``points`` (K, D), ``log_lik`` (K,) or (B, K); memory
    ``B x block_size``. Returns (B, D).
    """
    return denoise_fused(x, alpha, beta, *fuse_points(points, log_lik, block_size))


def support_order(log_lik, tol):
    """Order the points by their largest normalised weight over the rows of ``log_lik``.

    ``log_lik``: (B, N) log-weights, one row per observation. A point whose
    log-weight is below ``logsumexp(row) + log(tol / N)`` in every row holds
    less than ``tol / N`` of each row's mass, so all such points together hold
    less than ``tol`` of any row's mass: they are the ones that may be dropped.

    Returns ``(order (N,), count ())``: point indices by decreasing
    ``max_i(log_lik_ij - threshold_i)`` and the number of points above the
    threshold in some row (those to keep).
    """
    n = log_lik.shape[-1]
    thr = jax.nn.logsumexp(log_lik, axis=-1, keepdims=True) + jnp.log(tol / n)
    rel = jnp.max(log_lik - thr, axis=0)
    rel = jnp.where(jnp.isnan(rel), -jnp.inf, rel)
    return jnp.argsort(-rel, stable=True), jnp.sum(rel >= 0)


def dropped_mass(log_lik, kept):
    """Fraction of each row's weight outside ``kept``; ``log_lik`` (B, N), ``kept``
    (B, K) the log-weights kept. Returns (B,)."""
    return -jnp.expm1(jax.nn.logsumexp(kept, axis=-1) - jax.nn.logsumexp(log_lik, axis=-1))


def score(x, alpha, beta, points, log_lik):
    """Score of the diffused posterior, ``-(x - alpha m) / beta^2``; shape (B, D)."""
    m = denoise(x, alpha, beta, points, log_lik)
    return -(x - alpha * m) / beta**2


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
