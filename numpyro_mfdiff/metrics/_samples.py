"""Samples to arrays, and the KL divergences between samples (histogram and KDE)."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ..refine._kde import scott_factor

__all__ = ["flatten_samples", "kl_divergence_hist", "kl_divergence_kde"]

_CHUNK = 256  # rows per block in pairwise computations (memory ~ _CHUNK * n * d)


# ----------------------------------------------------------------------------- inputs


def flatten_samples(samples: Any) -> jax.Array:
    """Convert samples to a float array of shape ``(n, d)``.

    Args:
        samples: array ``(n,)`` / ``(n, d)`` / ``(n, ...)``, dict ``name -> (n, ...)``, or
            ``az.InferenceData`` (``posterior`` group, chain and draw stacked).

    Returns:
        ``(n, d)`` array; dict sites / posterior variables are flattened and concatenated in
        sorted name order.
    """
    if hasattr(samples, "posterior") and hasattr(samples, "groups"):  # az.InferenceData
        post = samples.posterior
        cols = []
        for name in sorted(post.data_vars):
            da = post[name]
            rest = [dim for dim in da.dims if dim not in ("chain", "draw")]
            vals = np.asarray(da.transpose("chain", "draw", *rest).values)
            cols.append(vals.reshape(vals.shape[0] * vals.shape[1], -1))
        if not cols:
            raise ValueError("InferenceData.posterior has no variables")
        return jnp.asarray(np.concatenate(cols, axis=1), dtype=float)
    if isinstance(samples, dict):
        if not samples:
            raise ValueError("empty dict of samples")
        cols = [jnp.asarray(samples[k]) for k in sorted(samples)]
        n = cols[0].shape[0]
        if any(c.ndim == 0 or c.shape[0] != n for c in cols):
            raise ValueError("all dict entries must share the leading sample axis")
        return jnp.concatenate([c.reshape(n, -1) for c in cols], axis=1).astype(float)
    x = jnp.asarray(samples)
    if x.ndim == 0:
        raise ValueError("samples must have a leading sample axis")
    return x.reshape(x.shape[0], -1).astype(float)


def _pair(x: Any, y: Any, what: str = "samples") -> tuple[jax.Array, jax.Array]:
    x, y = flatten_samples(x), flatten_samples(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{what} have different dimensions: {x.shape[1]} and {y.shape[1]}")
    return x, y


# ----------------------------------------------------------------------------- histogram KL


def kl_divergence_hist(
    p: Any,
    q: Any,
    *,
    bins: int = 50,
    range: Any = None,  # noqa: A002 - numpy's name
    p_is_probs: bool = False,
    floor: float | None = None,
) -> jax.Array:
    """Histogram estimate of ``KL(p || q)`` for 1-D or 2-D distributions.

    Both distributions are discretised on the same grid of ``bins`` equal-width bins per axis
    over ``range`` (1-D: ``(lo, hi)``; 2-D: ``((xlo, xhi), (ylo, yhi))``; bin edges are
    ``linspace(lo, hi, bins + 1)``) and normalised to sum to one on that grid (samples outside
    ``range`` are dropped). Then ``KL = sum_i p_i log(p_i / q_i)``.

    Args:
        p: samples ``(n_p,)`` / ``(n_p, d)`` (or dict / InferenceData), or, if ``p_is_probs``,
            non-negative weights on the grid of shape ``(bins,)`` (1-D) or ``(bins, bins)``
            (2-D, first axis = first coordinate): exact bin probabilities, or density values at
            the bin centres (they are normalised).
        q: samples ``(n_q,)`` / ``(n_q, d)`` with ``d`` in ``{1, 2}`` (or dict / InferenceData).
        bins: number of bins per axis.
        range: grid range; required if ``p_is_probs``, else defaults to the min/max of the
            pooled samples.
        p_is_probs: whether ``p`` is given on the grid rather than as samples.
        floor: lower bound on the probabilities of ``q`` (applied, then ``q`` is renormalised),
            so that bins where ``q`` has no samples give a finite contribution. Default:
            half a count, ``0.5 / n_q`` (``n_q`` = number of ``q`` samples inside ``range``).

    Returns:
        Scalar KL estimate in nats (biased: it depends on ``bins`` and the sample sizes).
    """
    qs = flatten_samples(q)
    d = qs.shape[1]
    if d not in (1, 2):
        raise ValueError(f"kl_divergence_hist supports 1-D or 2-D samples, got d={d}")
    if p_is_probs:
        if range is None:
            raise ValueError("`range` is required when `p_is_probs=True`")
        p_prob = jnp.asarray(p, dtype=float)
        if p_prob.shape != (bins,) * d:
            raise ValueError(f"`p` must have shape {(bins,) * d} on the grid, got {p_prob.shape}")
        if bool(jnp.any(p_prob < 0)):
            raise ValueError("`p` probabilities must be non-negative")
    else:
        ps = flatten_samples(p)
        if ps.shape[1] != d:
            raise ValueError(f"p and q samples have different dimensions: {ps.shape[1]} and {d}")
        if range is None:
            both = jnp.concatenate([ps, qs])
            lo, hi = jnp.min(both, axis=0), jnp.max(both, axis=0)
            range = tuple((float(lo[i]), float(hi[i])) for i in builtins.range(d))
            range = range[0] if d == 1 else range
        p_prob = _hist(ps, bins, range)
    q_counts = _hist(qs, bins, range)
    n_q = jnp.sum(q_counts)
    if float(n_q) == 0:
        raise ValueError("no q samples fall inside `range`")
    if floor is None:
        floor = 0.5 / n_q
    q_prob = jnp.maximum(q_counts / n_q, floor)
    q_prob = q_prob / jnp.sum(q_prob)
    p_prob = p_prob / jnp.sum(p_prob)
    terms = jnp.where(p_prob > 0, p_prob * (jnp.log(p_prob) - jnp.log(q_prob)), 0.0)
    return jnp.sum(terms)


def _hist(x: jax.Array, bins: int, range: Any) -> jax.Array:  # noqa: A002
    if x.shape[1] == 1:
        return jnp.histogram(x[:, 0], bins=bins, range=tuple(range))[0].astype(float)
    counts = jnp.histogram2d(x[:, 0], x[:, 1], bins=bins, range=[tuple(r) for r in range])[0]
    return counts.astype(float)


# ----------------------------------------------------------------------------- KDE KL


def kde_chol(data: jax.Array, bw_factor: float | None) -> jax.Array:
    """Cholesky factor of the KDE kernel covariance ``cov(data) * factor**2`` (scipy style)."""
    n, d = data.shape
    factor = scott_factor(n, d) if bw_factor is None else bw_factor
    cov = jnp.atleast_2d(jnp.cov(data, rowvar=False))
    return jnp.linalg.cholesky(cov * factor**2)


@partial(jax.jit, static_argnames="leave_one_out")
def _kde_logpdf(
    points: jax.Array, data: jax.Array, chol: jax.Array, leave_one_out: bool = False
) -> jax.Array:
    """Gaussian-KDE log density of ``data`` (n, d) at ``points`` (m, d); returns (m,).

    With ``leave_one_out`` (requires ``points is data``) the i-th kernel is left out at point i.
    """
    n, d = data.shape
    solve = partial(jax.scipy.linalg.solve_triangular, chol, lower=True)
    wd = solve(data.T).T
    wp = solve(points.T).T
    log_norm = jnp.sum(jnp.log(jnp.diag(chol))) + 0.5 * d * jnp.log(2 * jnp.pi)

    def row(args):
        w, i = args
        lk = -0.5 * jnp.sum((wd - w) ** 2, axis=1)
        if leave_one_out:
            lk = jnp.where(jnp.arange(n) == i, -jnp.inf, lk)
        return logsumexp(lk)

    lse = jax.lax.map(row, (wp, jnp.arange(points.shape[0])), batch_size=_CHUNK)
    n_eff = n - 1 if leave_one_out else n
    return lse - jnp.log(n_eff) - log_norm


def kl_divergence_kde(
    p: Callable[[jax.Array], jax.Array] | Any,
    q: Any,
    *,
    bw_factor: float | None = None,
    range: Any = None,  # noqa: A002 - numpy's name
    num_grid: int | None = None,
) -> jax.Array:
    """Gaussian-KDE estimate of ``KL(p || q)`` for 1-D or 2-D distributions.

    ``q`` is estimated by a Gaussian KDE of its samples with kernel covariance
    ``cov(q) * factor**2`` and Scott's factor ``n_q ** (-1 / (d + 4))`` (as
    ``scipy.stats.gaussian_kde``).

    * If ``p`` is a callable ``log_p(x)`` (``x`` of shape ``(d,)`` -> scalar; may be
      unnormalised), the KL integral is computed by quadrature on a regular grid over
      ``range`` with ``p`` and the KDE of ``q`` both normalised on the grid. ``range``
      should cover the bulk of ``p``; by default it is the range of the ``q`` samples padded by
      three kernel standard deviations.
    * If ``p`` is samples ``(n_p, d)``, ``KL = mean_i [log p_kde(x_i) - log q_kde(x_i)]`` over
      the ``p`` samples, with a leave-one-out Scott KDE for ``p``.

    Args:
        p: log-density callable, or samples (array / dict / InferenceData).
        q: samples ``(n_q,)`` / ``(n_q, d)``, ``d`` in ``{1, 2}``.
        bw_factor: override of Scott's factor (a multiplier of the sample standard deviation).
        range: quadrature range for callable ``p``: ``(lo, hi)`` or ``((xlo, xhi), (ylo, yhi))``.
        num_grid: grid points per axis for callable ``p`` (default 512 in 1-D, 128 in 2-D).

    Returns:
        Scalar KL estimate in nats (kernel smoothing biases it; the bias shrinks with n).
    """
    qs = flatten_samples(q)
    n_q, d = qs.shape
    if d not in (1, 2):
        raise ValueError(f"kl_divergence_kde supports 1-D or 2-D samples, got d={d}")
    chol_q = kde_chol(qs, bw_factor)
    if not callable(p):
        ps = flatten_samples(p)
        if ps.shape[1] != d:
            raise ValueError(f"p and q samples have different dimensions: {ps.shape[1]} and {d}")
        chol_p = kde_chol(ps, bw_factor)
        log_p = _kde_logpdf(ps, ps, chol_p, leave_one_out=True)
        log_q = _kde_logpdf(ps, qs, chol_q)
        return jnp.mean(log_p - log_q)

    if num_grid is None:
        num_grid = 512 if d == 1 else 128
    if range is None:
        pad = 3.0 * jnp.sqrt(jnp.sum(chol_q**2, axis=1))
        lo, hi = jnp.min(qs, axis=0) - pad, jnp.max(qs, axis=0) + pad
        range = [(float(lo[i]), float(hi[i])) for i in builtins.range(d)]
    elif d == 1:
        range = [tuple(range)]
    axes = [jnp.linspace(float(a), float(b), num_grid) for a, b in range]
    grid = jnp.stack([g.ravel() for g in jnp.meshgrid(*axes, indexing="ij")], axis=1)
    log_p = jax.vmap(p)(grid).reshape(-1)
    log_q = _kde_logpdf(grid, qs, chol_q)
    # Normalise both on the grid (the common cell volume cancels).
    log_p = log_p - logsumexp(log_p)
    log_q = log_q - logsumexp(log_q)
    w = jnp.exp(log_p)
    return jnp.sum(jnp.where(w > 0, w * (log_p - log_q), 0.0))
