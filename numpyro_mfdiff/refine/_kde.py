"""Gaussian kernel density estimates and the defensive proposal mixture of refinement.

Coordinates are the flat unconstrained latents. A single global bandwidth
is wrong for a multi-modal sample (the spread between modes sets the
kernel width, far wider than each mode), so :func:`fit_kde` first splits the
samples into well-separated clusters and gives each its own Scott bandwidth.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["KDE", "bucket", "fit_kde", "kde_logpdf", "kde_sample", "mixture_logpdf"]
__all__ += ["scott_factor", "scott_chol", "silverman", "SMOOTH_CAP"]

# the largest kernel factor of smoothing (labels and refinement): Silverman's factor is
# capped here
SMOOTH_CAP = 0.5


def scott_factor(n, d):
    """Scott's kernel factor ``n^(-1 / (d + 4))`` for ``n`` points in ``d`` dimensions."""
    return n ** (-1.0 / (d + 4))


def silverman(n_e, d):
    """Silverman's kernel factor ``(4 / (n_e (d + 2)))^(1 / (d + 4))`` for ``n_e``
    effective points in ``d`` dimensions (NumPy or JAX arrays)."""
    return (4.0 / (n_e * (d + 2))) ** (1.0 / (d + 4))


def scott_chol(x, inflation, size=None):
    """The Cholesky factor (D, D) of a Gaussian kernel's covariance for the points ``x``
    (C, D): their covariance (with a 1e-9 relative jitter) times the squared Scott factor
    of ``size`` points (default C) times ``inflation``; and that factor."""
    c, d = x.shape
    factor = float(inflation) * scott_factor(c if size is None else max(size, 1.0), d)
    cov = np.atleast_2d(np.cov(x, rowvar=False))
    cov = cov + 1e-9 * max(np.trace(cov) / d, 1e-12) * np.eye(d)
    return np.linalg.cholesky(factor**2 * cov), factor


class KDE(NamedTuple):
    """Equal-weight Gaussian mixture over ``centers`` (C, D).

    Center ``c`` has kernel covariance ``chols[group[c]] chols[group[c]]^T``;
    ``chols``: (G, D, D) lower Cholesky factors, ``group``: (C,) ints;
    ``bandwidth``: (G,) Scott factors (times the inflation) of the groups.
    """

    centers: np.ndarray
    chols: np.ndarray
    group: np.ndarray
    bandwidth: np.ndarray


def _clusters(x, chol, radius, min_neighbours):
    """Density clusters (as DBSCAN): samples with at least ``min_neighbours``
    others closer than ``radius`` (in coordinates whitened by ``chol``) are
    core samples, linked when closer than ``radius``. Returns labels (C,),
    ``-1`` for samples that are not core (a few stray samples between modes
    must not join the modes into one cluster)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    w = np.linalg.solve(chol, (x - x.mean(0)).T).T
    tree = cKDTree(w)
    core = tree.query_ball_point(w, radius, return_length=True) > min_neighbours
    pairs = tree.query_pairs(radius, output_type="ndarray")
    pairs = pairs[core[pairs[:, 0]] & core[pairs[:, 1]]]
    c = x.shape[0]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(c, c))
    labels = connected_components(graph, directed=False)[1]
    return np.where(core, labels, -1)


def fit_kde(samples, inflation: float = 1.0, max_groups: int = 8, size=None) -> KDE:
    """Gaussian KDE of ``samples`` (C, D), with a Scott bandwidth per cluster.

    Samples are clustered as in DBSCAN, with radius twice the global Scott
    bandwidth (in coordinates whitened by the sample covariance) and
    ``m = max(2 D + 2, 10)`` neighbours for a core sample; when there are two
    or more clusters, each of at least ``m`` samples (the ``max_groups - 1``
    largest) gets
    kernel covariance ``(inflation * n_c^(-1/(D+4)))^2 cov_c`` from its own
    ``n_c`` samples; every other sample gets the global one. Inflation above 1
    widens every kernel, so the proposal covers a region a little larger
    than the samples. ``size``: the effective number of samples (default
    ``C``), for samples resampled from a weighted set with that ESS; a cluster
    holding a share ``p`` of the samples then counts ``p * size``.
    """
    x = np.asarray(samples, np.float64)
    c, d = x.shape
    if c < 2:
        raise ValueError(f"a KDE needs at least 2 samples, got {c}")
    size = None if size is None else float(min(size, c))
    chol_global, factor_global = scott_chol(x, 1.0, size)
    min_size = max(2 * d + 2, 10)
    # resampled points repeat: count distinct neighbours, or a repeated point is a cluster
    ux, inv = np.unique(x, axis=0, return_inverse=True)
    if ux.shape[0] < c:
        labels = _clusters(ux, chol_global / factor_global, 2.0 * factor_global, min_size)
        labels = labels[inv.reshape(-1)]
    else:
        labels = _clusters(x, chol_global / factor_global, 2.0 * factor_global, min_size)
    ids, sizes = np.unique(labels[labels >= 0], return_counts=True)
    order = np.argsort(-sizes, kind="stable")
    big = [i for i in ids[order][: max_groups - 1] if sizes[ids == i][0] >= min_size]
    if len(big) == 1:
        big = []  # a single cluster: the global kernel
    group = np.full(c, len(big), np.int32)
    chols, factors = [], []
    for g, i in enumerate(big):
        member = labels == i
        group[member] = g
        ch, f = scott_chol(x[member], inflation, None if size is None else size * member.mean())
        chols.append(ch)
        factors.append(f)
    chols.append(chol_global * float(inflation))
    factors.append(factor_global * float(inflation))
    return KDE(
        x.astype(np.float32),
        np.stack(chols).astype(np.float32),
        group,
        np.asarray(factors),
    )


def _group_logpdf(centers, chol, live, x, block):
    """``log sum_c N(x; centers[c], chol chol^T)`` over the ``live`` (C,) centers,
    for x (N, D); returns (N,)."""
    d = centers.shape[1]
    wc = jax.scipy.linalg.solve_triangular(chol, centers.T, lower=True).T
    sq_c = jnp.sum(wc * wc, axis=1)
    log_norm = -0.5 * d * jnp.log(2 * jnp.pi) - jnp.sum(jnp.log(jnp.diag(chol)))

    def one(xi):
        wx = jax.scipy.linalg.solve_triangular(chol, xi, lower=True)
        # full float32 (not a GPU's TF32): the expanded square cancels
        sq = jnp.sum(wx * wx) - 2.0 * jnp.matmul(wc, wx, precision=jax.lax.Precision.HIGHEST) + sq_c
        return jax.nn.logsumexp(jnp.where(live, -0.5 * jnp.maximum(sq, 0.0), -jnp.inf)) + log_norm

    return jax.lax.map(one, x, batch_size=block)


_group_logpdf_jit = jax.jit(_group_logpdf, static_argnums=4)


def bucket(n: int, smallest: int = 256) -> int:
    """The padded size for ``n`` rows: the smallest ``2^k`` or ``1.5 * 2^k`` (at least
    ``smallest``) not below ``n``, so that growing sizes reuse a few compiled shapes."""
    b = smallest
    while b < n:
        b = b * 3 // 2 if b & (b - 1) == 0 else b * 4 // 3
    return b


def _pad_rows(a, size):
    return np.concatenate([a, np.zeros((size - a.shape[0],) + a.shape[1:], a.dtype)])


def kde_logpdf(kde: KDE, x, block: int = 256):
    """Log density of the KDE at ``x`` (N, D); returns (N,) float64 NumPy. Evaluated in
    blocks of rows; rows and each group's centers are padded to :func:`bucket` sizes
    (one compiled shape serves many sizes), the groups' terms summed on the host (no
    compilation per size)."""
    x = np.asarray(x, np.float32)
    n = x.shape[0]
    xp = _pad_rows(x, bucket(n))
    terms = []
    for g in range(kde.chols.shape[0]):
        member = kde.group == g
        c = int(member.sum())
        if c:
            size = bucket(c, 64)
            centers = _pad_rows(np.asarray(kde.centers[member], np.float32), size)
            live = np.arange(size) < c
            out = _group_logpdf_jit(centers, np.asarray(kde.chols[g]), live, xp, block)
            terms.append(np.asarray(out)[:n])
    total = np.logaddexp.reduce(np.stack(terms).astype(np.float64), axis=0)
    return total - np.log(kde.centers.shape[0])


@jax.jit
def _kde_sample(rng_key, centers, chols, group):
    eps = jax.random.normal(rng_key, centers.shape)
    return centers + jnp.einsum("cij,cj->ci", chols[group], eps)


def kde_sample(rng_key, kde: KDE):
    """One draw per kernel, ``centers[c] + chol_c @ eps``: (C, D).

    The draws form a deterministic mixture: weighted against the full mixture
    density they are a valid importance sample.
    """
    return _kde_sample(rng_key, kde.centers, kde.chols, np.asarray(kde.group))


def mixture_logpdf(log_prior, kdes, counts, prior_count, x):
    """Log density of the defensive mixture of all proposals used so far.

    ``q(x) = (prior_count p(x) + sum_r counts[r] KDE_r(x)) / total``: the
    balance-heuristic density for draws made ``prior_count`` times from the
    prior and ``counts[r]`` times from ``KDE_r``. ``log_prior``: (N,) prior
    log densities at ``x`` (N, D). Returns (N,) float64 NumPy.
    """
    total = float(prior_count + sum(counts))
    terms = []
    if prior_count:
        terms.append(np.log(prior_count / total) + np.asarray(log_prior, np.float64))
    for kde, n in zip(kdes, counts, strict=True):
        terms.append(np.log(n / total) + kde_logpdf(kde, x))
    return np.logaddexp.reduce(np.stack(terms).astype(np.float64), axis=0)
