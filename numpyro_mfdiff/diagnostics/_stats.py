"""Small exact statistics for the diagnostics (NumPy): rank cells, binomial tails, ECDF
counts, the chi-square and Kolmogorov tail probabilities."""

from __future__ import annotations

import math

import numpy as np

__all__: list[str] = []


def _cell_coverage(r, n, lo, hi):
    """Share of datasets whose level lies in ``[lo_k, hi_k]`` (K,), with the level of count
    ``r`` (B, ...) out of ``n`` spread uniformly over its cell ``[r, r + 1] / (n + 1)``
    (the randomised PIT, averaged out: exact under calibration, whatever ``n``): (K, ...)."""
    a = np.asarray(r, np.float64)[None] / (n + 1.0)
    shape = (-1,) + (1,) * (a.ndim - 1)
    lo, hi = np.asarray(lo).reshape(shape), np.asarray(hi).reshape(shape)
    inside = np.minimum(a + 1.0 / (n + 1.0), hi) - np.maximum(a, lo)
    return (np.clip(inside, 0.0, None) * (n + 1.0)).mean(axis=1)


def _binomial_tails(n, p):
    """``P(X <= c)`` and ``P(X >= c)`` for ``X ~ Binomial(n, p_k)``: two arrays (K, n + 1)."""
    lg = np.array([math.lgamma(i + 1.0) for i in range(n + 1)])
    c = np.arange(n + 1)
    p = np.asarray(p, np.float64)[:, None]
    logpmf = lg[n] - lg[c] - lg[n - c] + c * np.log(p) + (n - c) * np.log1p(-p)
    pmf = np.exp(logpmf)
    return np.cumsum(pmf, axis=1), np.cumsum(pmf[:, ::-1], axis=1)[:, ::-1]


def _ecdf_thresholds(num_samples, num_points):
    """Rank thresholds ``k`` (K,) in ``0..L-1`` where ``P(rank <= k) = (k + 1) / (L + 1)``."""
    if num_samples <= num_points:
        return np.arange(num_samples)
    j = np.arange(1, num_points + 1)
    return np.unique(np.floor(j * (num_samples + 1) / (num_points + 1)).astype(int) - 1)


def _ecdf_counts(r, thresholds, num_samples):
    """Counts ``#{r <= k}`` of ranks ``r`` (n, B) in ``0..L`` at ``thresholds`` (K,): (n, K)."""
    r = np.asarray(r, np.int64)
    n, width = r.shape[0], num_samples + 1
    flat = (r + width * np.arange(n)[:, None]).ravel()
    hist = np.bincount(flat, minlength=n * width).reshape(n, width)
    return np.cumsum(hist, axis=1)[:, thresholds]


def _chi2_sf(x, dof):
    """``P(X > x)`` for ``X ~ chi^2(dof)``, integer ``dof``: the regularised upper incomplete
    gamma function at ``dof / 2`` in closed form (a finite sum, plus ``erfc`` for odd ``dof``)."""
    h = max(0.5 * float(x), 1e-300)
    if dof % 2 == 0:  # e^-h sum_{i < dof/2} h^i / i!
        logs = [i * math.log(h) - math.lgamma(i + 1.0) for i in range(dof // 2)]
        head = 0.0
    else:  # erfc(sqrt h) + e^-h sum_{i < (dof-1)/2} h^(i+1/2) / Gamma(i + 3/2)
        logs = [(i + 0.5) * math.log(h) - math.lgamma(i + 1.5) for i in range((dof - 1) // 2)]
        head = math.erfc(math.sqrt(h))
    top = max(logs, default=0.0)
    tail = math.exp(top - h) * sum(math.exp(v - top) for v in logs) if logs else 0.0
    return min(1.0, head + tail)


def _kolmogorov_pvalue(d, n):
    """Asymptotic p-value of the one-sample KS statistic ``d`` for ``n`` points (Stephens)."""
    x = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    if x < 0.2:
        return 1.0
    k = np.arange(1, 101)
    return float(np.clip(2.0 * np.sum((-1.0) ** (k - 1) * np.exp(-2.0 * (k * x) ** 2)), 0.0, 1.0))
