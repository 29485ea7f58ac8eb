"""Labelling: run the Monte Carlo-score ODE for many (y, z) pairs."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ..refine._kde import SMOOTH_CAP, silverman
from ..refine._weights import row_moments
from ._ode import row_sharding, solve_ode, stop_ratios
from ._score import dropped_mass, support_order

__all__ = [
    "bucket",
    "label_chunk",
    "label_chunk_pruned",
    "label_triples",
    "shrink",
    "smoothing_stops",
]

# rows x prior points per labelling chunk: bounds the (B, N) log-likelihood matrix
# (2^25 float32 = 128 MB) whatever N
LABEL_WEIGHTS = 2**25


def bucket(count, n, granule=512):
    """Points a chunk weighs: ``count`` rounded up to the next of a few sizes
    (multiples of ``granule`` growing by about 1/4), at most ``n``, so that
    chunks of similar support share one compiled solve."""
    count = max(int(count), 1)
    size = granule
    while size < count:
        size = max(size + granule, -(-(size * 5 // 4) // granule) * granule)
    return min(size, n)


# label smoothing: Silverman's factor is capped here (as refinement's), and a row is
# smoothed only while its weighted points look like one Gaussian-like mode along every
# axis of their covariance: bimodality coefficient (skew^2 + 1) / kurtosis below
# BC_MAX + 1 / sqrt(n_e) (a Gaussian gives 1/3, a uniform 5/9, two modes 4 sds apart
# 0.58, further apart up to 1) and kurtosis below KURT_MAX + 8 / sqrt(n_e) (3 for a
# Gaussian; half the mass in a spike 10x narrower than its base: 5.9). The 1/sqrt(n_e)
# terms are the sampling noise: the largest of 10 axes of n_e Gaussian draws has a
# bimodality coefficient above 0.5 (kurtosis above 5) in 5% of samples at n_e = 100 (50)
BC_MAX = 0.5
KURT_MAX = 5.0


def smoothing_stops(loglik, points):
    """Per-row kernel sd for smoothed labels, in the points' (standardised) units.

    Silverman's ``(4 / (n_e (d + 2)))^(1 / (d + 4))`` from the row's ESS ``n_e``,
    capped at ``SMOOTH_CAP``, times the sd of its narrowest direction; 0 (no
    smoothing) where ``n_e < 2`` or the weighted points do not look like one mode
    along each axis of their covariance (``BC_MAX``, ``KURT_MAX``, widened by the
    sampling noise of ``n_e`` points): separate modes and spikes keep their width.
    ``loglik`` (B, K), ``points`` (K, D). Returns ``(stop (B,), moments)`` with
    ``moments`` from :func:`row_moments`.
    """
    mean, eigvals, vec, n_e = row_moments(loglik, points)
    d = points.shape[1]
    w = jnp.where(jnp.isfinite(loglik), jax.nn.softmax(loglik, axis=-1), 0.0)

    noise = 1.0 / jnp.sqrt(jnp.maximum(n_e, 1.0))

    def shape(axis):  # skewness and kurtosis of every row along one of its axes
        v, var = axis
        var = var[:, None]
        u = (v @ points.T - jnp.sum(v * mean, -1, keepdims=True)) / jnp.sqrt(
            jnp.maximum(var, 1e-30)
        )  # (B, K)
        skew, kurt = jnp.sum(w * u**3, -1), jnp.sum(w * u**4, -1)
        bc = (skew**2 + 1.0) / jnp.maximum(kurt, 1e-30)
        return (bc < BC_MAX + noise) & (kurt < KURT_MAX + 8.0 * noise)

    one_mode = jnp.all(jax.lax.map(shape, (jnp.moveaxis(vec, 2, 0), eigvals.T)), axis=0)
    h = jnp.minimum(silverman(jnp.maximum(n_e, 1.0), d), SMOOTH_CAP) * jnp.sqrt(eigvals[:, 0])
    return jnp.where(one_mode & (n_e >= 2), h, 0.0), (mean, eigvals, vec, n_e)


def shrink(x, moments, ratio):
    """Undo the kernel's variance: ``mean + A (x - mean)`` per row, with
    ``A = Cov^(1/2) (Cov + ratio^2 I)^(-1/2)`` from the row's weighted covariance
    (``moments`` of :func:`row_moments`), so that labels smoothed by a kernel of sd
    ``ratio`` (B,) keep the weighted mean and covariance. ``x`` (B, D)."""
    mean, eigvals, vec, _ = moments
    gain = jnp.sqrt(eigvals / jnp.maximum(eigvals + ratio[:, None] ** 2, 1e-30))
    coords = jnp.einsum("bd,bde->be", x - mean, vec) * gain
    return jnp.where(ratio[:, None] > 0, mean + jnp.einsum("be,bde->bd", coords, vec), x)


def _solve_smoothed(z, points, ll, schedule, grid, solver, smooth):
    if not smooth:
        return solve_ode(z, points, ll, schedule, grid, solver)
    stop, moments = smoothing_stops(ll, points)
    x = solve_ode(z, points, ll, schedule, grid, solver, stop=stop)
    return shrink(x, moments, stop_ratios(schedule, grid, stop))


def label_chunk(
    z, loglik, points, schedule, grid, num_points: int, solver: str = "dpm2m", smooth=False
):
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
        smooth: label each row from its weighted points smoothed by a Gaussian
            kernel (:func:`smoothing_stops`: the ODE stops early, :func:`shrink`
            keeps the row's weighted mean and covariance).

    Returns:
        ``(theta (B, D), dropped (B,))``: samples and, per row, the likelihood
        mass left out by the truncation, as a fraction.
    """
    n = points.shape[0]
    if num_points >= n:
        theta = _solve_smoothed(z, points, loglik, schedule, grid, solver, smooth)
        return theta, jnp.zeros(z.shape[0])
    rel = loglik - jnp.max(loglik, axis=1, keepdims=True)
    _, idx = jax.lax.top_k(jnp.max(rel, axis=0), num_points)
    return label_chunk_pruned(z, loglik, idx, points, schedule, grid, num_points, solver, smooth)


def label_chunk_pruned(
    z, loglik, order, points, schedule, grid, num_points, solver="dpm2m", smooth=False
):
    """:func:`label_chunk` on the first ``num_points`` (static) points of ``order``.

    ``order`` (N,) from :func:`~numpyro_mfdiff.diffusion._score.support_order`: the points
    that hold weight come first. Returns ``(theta (B, D), dropped (B,))``.
    """
    idx = order[:num_points]
    ll = loglik[:, idx]
    theta = _solve_smoothed(z, points[idx], ll, schedule, grid, solver, smooth)
    return theta, dropped_mass(loglik, ll)


def label_triples(
    y,
    y_std,
    z,
    loglik_fn,
    points,
    schedule,
    grid,
    num_points,
    solver,
    chunk_size,
    progress=None,
    tol=None,
    sharding="auto",
    smooth=False,
):
    """Label many triples in compiled chunks of ``chunk_size``.

    Triples are ordered along the leading principal direction of the
    standardised observations ``y_std`` (T, M) so that a chunk holds similar
    observations and shares its prior points. ``loglik_fn`` maps one
    observation of ``y`` (M,), as simulated, to the log-likelihoods (N,).
    ``progress`` receives the triples finished per chunk. With ``tol`` (the
    likelihood mass a row may drop) each chunk weighs only the points that carry
    weight (:func:`~numpyro_mfdiff.diffusion._score.support_order`; at most ``num_points``,
    in a few sizes: :func:`bucket`);
    ``tol=None`` keeps the top ``num_points`` (:func:`label_chunk`). A chunk has
    at most ``LABEL_WEIGHTS / N`` rows, so memory stays bounded whatever N.
    ``sharding``: a :class:`jax.sharding.Sharding` that splits the rows of a
    chunk over devices, ``"auto"`` (:func:`~numpyro_mfdiff.diffusion._ode.row_sharding`:
    all devices) or ``None``. Warns when a row dropped more than 1% of its mass
    (its support exceeded ``num_points``). ``smooth``: smoothed labels
    (:func:`label_chunk`).

    Returns ``(order (T,), theta (T, D), dropped (T,), points_used (T,))``:
    ``theta``, ``dropped`` and the number of points weighed for each triple
    belong to ``y_std[order]``, ``z[order]``.
    """
    T = y_std.shape[0]
    n = points.shape[0]
    if isinstance(sharding, str):
        sharding = row_sharding()
    if y_std.shape[1] > 1:
        _, _, vt = np.linalg.svd(y_std - y_std.mean(0), full_matrices=False)
        order = np.argsort(y_std @ vt[0], kind="stable")
    else:
        order = np.argsort(y_std[:, 0], kind="stable")
    B = min(chunk_size, T, max(1, LABEL_WEIGHTS // n))
    if sharding is not None:  # rows split evenly over the devices
        ndev = len(sharding.device_set)
        B = -(-B // ndev) * ndev
    pad = (-T) % B
    idx = np.concatenate([order, np.resize(order, pad)])
    capacity = min(num_points, n)

    @jax.jit
    def loglik(yc):
        ll = jax.vmap(loglik_fn)(yc)
        if tol is None:
            return ll, None, None
        return ll, *support_order(ll, tol)

    # one compiled solve per size of point set (static shapes)
    solve = jax.jit(label_chunk_pruned, static_argnums=(6, 7, 8))

    @jax.jit
    def solve_top(zc, ll):
        return label_chunk(zc, ll, points, schedule, grid, num_points, solver, smooth)

    out, dropped, used = [], [], []
    for s in range(0, idx.size, B):
        yc, zc = jnp.asarray(y[idx[s : s + B]]), jnp.asarray(z[idx[s : s + B]])
        if sharding is not None:
            yc, zc = jax.device_put(yc, sharding), jax.device_put(zc, sharding)
        ll, order_c, count = loglik(yc)
        if tol is None:
            k = capacity
            o, d = solve_top(zc, ll)
        else:
            k = min(bucket(count, n), capacity)
            o, d = solve(zc, ll, order_c, points, schedule, grid, k, solver, smooth)
        out.append(np.asarray(o))
        dropped.append(np.asarray(d))
        used.append(np.full(B, k))
        if progress is not None:
            progress(min(B, T - s))
    cat = [np.concatenate(a)[:T] for a in (out, dropped, used)]
    if cat[1].max() > 0.01:
        warnings.warn(
            f"labelling dropped up to {cat[1].max():.1%} of an observation's likelihood "
            f"mass: raise label_points (now {num_points})",
            stacklevel=3,
        )
    return order, cat[0], cat[1], cat[2]
