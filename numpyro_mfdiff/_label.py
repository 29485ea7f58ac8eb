"""Labelling: run the Monte Carlo-score ODE for many (y, z) pairs."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ._ode import row_sharding, solve_ode
from ._score import dropped_mass, support_order

__all__ = ["bucket", "label_chunk", "label_chunk_pruned", "label_triples"]

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
    return label_chunk_pruned(z, loglik, idx, points, schedule, grid, num_points, solver)


def label_chunk_pruned(z, loglik, order, points, schedule, grid, num_points, solver="dpm2m"):
    """:func:`label_chunk` on the first ``num_points`` (static) points of ``order``.

    ``order`` (N,) from :func:`~numpyro_mfdiff._score.support_order`: the points
    that hold weight come first. Returns ``(theta (B, D), dropped (B,))``.
    """
    idx = order[:num_points]
    ll = loglik[:, idx]
    return solve_ode(z, points[idx], ll, schedule, grid, solver), dropped_mass(loglik, ll)


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
):
    """Label many triples in compiled chunks of ``chunk_size``.

    Triples are ordered along the leading principal direction of the
    standardised observations ``y_std`` (T, M) so that a chunk holds similar
    observations and shares its prior points. ``loglik_fn`` maps one
    observation of ``y`` (M,), as simulated, to the log-likelihoods (N,).
    ``progress`` receives the triples finished per chunk. With ``tol`` (the
    likelihood mass a row may drop) each chunk weighs only the points that carry
    weight (:func:`~numpyro_mfdiff._score.support_order`; at most ``num_points``,
    in a few sizes: :func:`bucket`);
    ``tol=None`` keeps the top ``num_points`` (:func:`label_chunk`). A chunk has
    at most ``LABEL_WEIGHTS / N`` rows, so memory stays bounded whatever N.
    ``sharding``: a :class:`jax.sharding.Sharding` that splits the rows of a
    chunk over devices, ``"auto"`` (:func:`~numpyro_mfdiff._ode.row_sharding`:
    all devices) or ``None``. Warns when a row dropped more than 1% of its mass
    (its support exceeded ``num_points``).

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
    solve = jax.jit(label_chunk_pruned, static_argnums=(6, 7))

    @jax.jit
    def solve_top(zc, ll):
        return label_chunk(zc, ll, points, schedule, grid, num_points, solver)

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
            o, d = solve(zc, ll, order_c, points, schedule, grid, k, solver)
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
