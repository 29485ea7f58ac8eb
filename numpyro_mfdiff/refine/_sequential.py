"""Adaptive sequential importance sampling for one observation (METHOD.md, section 8).

The engine behind :meth:`MFDiff.refine`, in the init/step style of BlackJAX:
a :class:`Pool` of every simulation made so far with its proposal densities,
:func:`init` to start one, and :func:`step` that tempers, proposes, simulates
(through a function the caller passes) and absorbs, returning the new pool and
a :class:`StageInfo`. The loop, the budget and the simulator live in the
orchestrator (``_refine.py``); nothing here knows about :class:`MFDiff`.

Targets ``p(theta) p(y | theta)^lam``: each stage raises ``lam`` as far as the
pooled points keep an effective sample size for the next proposal
(:func:`ess_floor`), or further while the conditional ESS of the increment
stays at 1/2 (adaptive tempered SMC's rule), proposes from a clustered,
inflated KDE of the pooled points resampled at the new temperature plus a
defensive share from the prior, and keeps every simulation with deterministic-mixture
(balance-heuristic) weights ``p(theta) p(y | theta)^lam / sum_k (n_k / n) q_k(theta)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from ._kde import KDE, SMOOTH_CAP, fit_kde, kde_logpdf, kde_sample, silverman
from ._weights import host_ess as ess
from ._weights import log_normalise

__all__ = [
    "Pool",
    "StageInfo",
    "init",
    "step",
    "log_weights",
    "ess",
    "next_temperature",
    "stage_size",
    "smoothing_bandwidth",
    "whiten",
    "whitening",
]

# the conditional ESS of a tempering increment kept at this fraction (adaptive SMC's rule)
CESS_TARGET = 0.5
# the pooled ESS a temperature must keep: enough effective points for a KDE proposal
# in d dimensions (10 (d + 1)), at least 5% and at most half of the next stage
ESS_FLOOR = (10, 0.05, 0.5)


def ess_floor(n: int, dim: int) -> float:
    """The pooled ESS a stage of ``n`` proposals in ``dim`` dimensions needs:
    ``min(n / 2, max(10 (dim + 1), n / 20))``."""
    per_dim, low, high = ESS_FLOOR
    return float(min(high * n, max(per_dim * (dim + 1), low * n)))


# default KDE inflation and defensive prior share of the proposals
INFLATION = 1.5
PRIOR_FRACTION = 0.1


class Pool(NamedTuple):
    """Every simulation for one observation, with what its weights need.

    ``theta`` (n, D) unconstrained points; ``loglik`` (n,) their log-likelihoods
    of the observation (``-inf`` for failed simulations); ``logprior`` (n,)
    prior log densities (unconstrained, Jacobian included); ``log_comp``
    (n, K + 1) log densities of every proposal at every point (column 0 the
    prior, column k the k-th KDE); ``counts`` (K + 1,) draws per proposal;
    ``kdes`` the K KDEs; ``lam`` the current temperature in [0, 1].
    """

    theta: np.ndarray
    loglik: np.ndarray
    logprior: np.ndarray
    log_comp: np.ndarray
    counts: np.ndarray
    kdes: tuple
    lam: float


class StageInfo(NamedTuple):
    """What one stage did: the temperature it proposed at, its draws (``prior_draws``
    of them from the prior), failed simulations, the KDE bandwidths and clusters,
    the pooled ESS at the new temperature after absorbing, and the wall time."""

    lam: float
    simulations: int
    prior_draws: int
    failed: int
    kde_bandwidth: list
    kde_clusters: int
    ess: float
    seconds: float


def init(theta, loglik, logprior, kdes=(), counts=None, prior_count=None, lam=0.0) -> Pool:
    """A pool from points drawn from the prior (``kdes`` empty) or from a
    previous refinement's proposals: ``counts`` (K,) draws per KDE and
    ``prior_count`` from the prior (default: every point)."""
    theta = np.asarray(theta, np.float32)
    n = theta.shape[0]
    counts = [] if counts is None else [int(c) for c in counts]
    prior_count = n - sum(counts) if prior_count is None else int(prior_count)
    logprior = np.asarray(logprior, np.float64)
    cols = [logprior] + [_kde_logpdf(k, theta) for k in kdes]
    return Pool(
        theta,
        np.asarray(loglik, np.float64),
        logprior,
        np.stack(cols, axis=1) if n else np.zeros((0, 1 + len(kdes))),
        np.asarray([prior_count] + counts, np.int64),
        tuple(kdes),
        float(lam),
    )


def log_weights(pool: Pool, lam: float | None = None) -> np.ndarray:
    """Balance-heuristic log-weights (n,) of the pool for ``p(theta) p(y | theta)^lam``
    (default: the pool's temperature); ``-inf`` for failed simulations."""
    lam = pool.lam if lam is None else lam
    with np.errstate(divide="ignore"):
        log_mix = np.log(pool.counts / pool.counts.sum())
    log_q = log_normalise(pool.log_comp + log_mix, axis=1)
    ll = np.where(np.isfinite(pool.loglik), pool.loglik, -np.inf)
    log_w = pool.logprior + (lam * ll if lam > 0 else np.where(np.isfinite(ll), 0.0, -np.inf))
    log_w = log_w - log_q
    return np.where(np.isfinite(log_w), log_w, -np.inf)


def next_temperature(pool: Pool, ess_floor: float, cess_target: float = CESS_TARGET) -> float:
    """The next temperature ``lam' >= lam``, at most 1: the largest at which the pooled
    ESS is at least ``ess_floor`` (if none, the one of largest pooled ESS: a first
    stage proposed near the posterior has a small ESS under the prior), or, if
    larger, the one where the conditional ESS of the increment
    ``p(y | theta)^(lam' - lam)`` over the pooled points weighted for ``lam`` is
    ``cess_target`` (by bisection, as adaptive tempered SMC)."""
    lam = pool.lam
    if lam >= 1.0:
        return 1.0
    # the largest grid temperature that keeps the pooled ESS (not monotone in lam':
    # a pool proposed near the posterior has a small ESS under the prior); when
    # none keeps it, the temperature the pool represents best
    grid = lam + (1.0 - lam) * np.linspace(0.0, 1.0, 101)
    esses = np.asarray([ess(log_weights(pool, g)) for g in grid])
    ok = grid[esses >= ess_floor]
    lam_ess = float(ok.max()) if ok.size else float(grid[esses == esses.max()].max())
    # conditional ESS of the increment
    log_w = log_weights(pool, lam)
    keep = np.isfinite(log_w)
    if not keep.any():
        return max(lam_ess, lam)
    w = np.exp(log_w[keep] - log_w[keep].max())
    w = w / w.sum()
    ll = pool.loglik[keep]
    ll = ll - ll.max()

    def cess(lam_new):
        log_u = (lam_new - lam) * ll
        u = np.exp(log_u - log_u.max())
        return (w @ u) ** 2 / (w @ u**2)

    if cess(1.0) >= cess_target:
        return 1.0
    lo, hi = lam, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cess(mid) >= cess_target else (lo, mid)
    return float(max(lam_ess, lo))


def stage_size(budget: int) -> int:
    """Simulations per stage for a budget: a tenth of it, at least 100 (or the whole
    budget below that) and at most 2,000, so that a budget is spent in about ten
    stages, each large enough for a KDE proposal in tens of dimensions."""
    return int(min(max(budget // 10, min(budget, 100)), 2_000))


def _resample(key, log_w, n):
    """``n`` indices drawn from the normalised weights by systematic resampling."""
    w = np.exp(log_w - np.max(log_w))
    c = np.cumsum(w / w.sum())
    u = (float(jax.random.uniform(key)) + np.arange(n)) / n
    return np.minimum(np.searchsorted(c, u), len(c) - 1)


def propose(key, pool: Pool, lam, n, prior_draw, inflation, prior_fraction, candidates=None):
    """Draws for the next stage: ``(theta (n, D), kde, n_prior)``. One draw per kernel
    of a KDE (Scott bandwidth from the pooled ESS, per cluster, times ``inflation``)
    centred on ``candidates`` or, without them, on the pool resampled at ``lam``; a
    ``prior_fraction`` of the ``n`` straight from the prior (``prior_draw(keys)``)."""
    k_res, k_kern, k_prior = jax.random.split(key, 3)
    n_prior = int(round(prior_fraction * n))
    n_kern = max(n - n_prior, 2)
    n_prior = n - n_kern
    if candidates is None:
        log_w = log_weights(pool, lam)
        centres = pool.theta[_resample(k_res, log_w, n_kern)]
        size = ess(log_w)
    else:
        centres, size = np.asarray(candidates, np.float32)[:n_kern], None
    kde = fit_kde(centres, inflation, size=size)
    draws = [np.asarray(kde_sample(k_kern, kde))]
    if n_prior:
        draws.append(np.asarray(prior_draw(jax.random.split(k_prior, n_prior))))
    return np.concatenate(draws).astype(np.float32), kde, n_prior


def absorb(pool: Pool, theta, loglik, logprior, kde: KDE, n_prior, lam) -> Pool:
    """The pool with the stage's ``theta`` (n, D) and their log-likelihoods and prior
    log densities added, ``kde`` a new proposal (``n - n_prior`` draws) and ``lam``
    the new temperature."""
    theta = np.asarray(theta, np.float32)
    all_theta = np.concatenate([pool.theta, theta])
    logprior = np.asarray(logprior, np.float64)
    # old proposals at the new points; the new KDE at every point
    new_rows = np.stack([logprior] + [_kde_logpdf(k, theta) for k in pool.kdes], axis=1)
    log_comp = np.concatenate([pool.log_comp, new_rows])
    log_comp = np.concatenate([log_comp, _kde_logpdf(kde, all_theta)[:, None]], axis=1)
    counts = pool.counts.copy()
    counts[0] += n_prior
    counts = np.append(counts, theta.shape[0] - n_prior)
    return Pool(
        all_theta,
        np.concatenate([pool.loglik, np.asarray(loglik, np.float64)]),
        np.concatenate([pool.logprior, logprior]),
        log_comp,
        counts,
        pool.kdes + (kde,),
        float(lam),
    )


def step(
    rng_key,
    pool: Pool,
    n: int,
    simulate: Callable,
    prior_draw: Callable,
    log_prior: Callable,
    *,
    inflation: float = INFLATION,
    prior_fraction: float = PRIOR_FRACTION,
    candidates=None,
) -> tuple[Pool, StageInfo]:
    """One stage: choose the temperature, propose ``n`` points, simulate, absorb.

    ``simulate(key, theta (n, D)) -> (loglik (n,), failed)`` runs the model at the
    proposals and returns the log-likelihoods of the observation; ``prior_draw``
    maps keys (k,) to prior draws (k, D); ``log_prior`` maps (k, D) to (k,).
    ``candidates`` (m >= n, D): centres for the first stage of a pool with no
    useful points (a high-fidelity refinement starts from ``G_low``'s draws).
    """
    t0 = time.perf_counter()
    k_prop, k_sim = jax.random.split(rng_key)
    if candidates is not None:
        lam = pool.lam
    else:
        lam = next_temperature(pool, ess_floor(n, pool.theta.shape[1]))
    theta, kde, n_prior = propose(
        k_prop, pool, lam, n, prior_draw, inflation, prior_fraction, candidates
    )
    loglik, failed = simulate(k_sim, theta)
    logprior = np.asarray(log_prior(theta), np.float64)
    pool = absorb(pool, theta, loglik, logprior, kde, n_prior, lam)
    if candidates is not None:  # the first stage: temper from the new points
        pool = pool._replace(lam=next_temperature(pool, ess_floor(n, pool.theta.shape[1])))
    info = StageInfo(
        lam=pool.lam,
        simulations=int(n),
        prior_draws=int(n_prior),
        failed=int(failed),
        kde_bandwidth=[float(b) for b in kde.bandwidth],
        kde_clusters=int(kde.chols.shape[0] - 1),
        ess=ess(log_weights(pool)),
        seconds=time.perf_counter() - t0,
    )
    return pool, info


def whitening(theta, log_w):
    """Weighted mean (D,) and lower Cholesky factor (D, D) of the weighted
    covariance of ``theta`` (n, D): ``(theta - mean) @ inv(chol).T`` is white."""
    theta = np.asarray(theta, np.float64)
    w = np.exp(log_w - np.max(log_w))
    w = w / w.sum()
    mean = w @ theta
    c = theta - mean
    cov = (c * w[:, None]).T @ c
    d = cov.shape[0]
    floor = np.maximum(np.diag(cov), 1e-12)
    cov = cov + 1e-6 * np.diag(floor) + 1e-12 * np.eye(d)
    return mean, np.linalg.cholesky(cov)


def whiten(theta, mean, chol):
    """``theta`` (n, D) in the coordinates of :func:`whitening`: ``inv(chol) (theta - mean)``."""
    return np.linalg.solve(chol, (np.asarray(theta, np.float64) - mean).T).T


def smoothing_bandwidth(white, log_w, key=None, max_points=4096) -> tuple[float, int]:
    """Kernel sd ``h`` (whitened units) for the end point of a weighted point set.

    Silverman's rule ``(4 / (n_e (d + 2)))^(1 / (d + 4))`` from the ESS ``n_e`` and
    the dimension ``d``, per cluster: the weighted points (``white`` (n, d), whitened)
    are resampled (at most ``max_points``), clustered as :func:`fit_kde` does, and
    each cluster ``c`` with a share ``p_c`` of the weight allows ``h_c`` =
    Silverman(``p_c n_e``) times the sd of its narrowest direction; ``h`` is the
    smallest, times :func:`_heterogeneity` (below 1 where dense and sparse regions
    of one cluster mix: a spike on a wide base), below ``SMOOTH_CAP`` (0.5, as for
    ``G_low``'s labels). Separate modes then
    keep their width: on a bimodal posterior whose modes are 20 times narrower
    than their distance, ``h`` is 20 times below the unimodal value.
    Returns ``(h, clusters)``: the bandwidth and the number of clusters found.
    """
    n_e = ess(log_w)
    d = white.shape[1]
    if n_e < 2:
        return 0.0, 1
    key = jax.random.PRNGKey(0) if key is None else key
    m = int(min(max_points, max(4 * n_e, 64)))
    pts = np.asarray(white, np.float64)[_resample(key, log_w, m)]
    kde = fit_kde(pts, 1.0, size=n_e)
    h = 1.0
    for g in range(kde.chols.shape[0] - 1 if kde.chols.shape[0] > 1 else 1):
        member = kde.group == g
        share = member.mean()
        if share == 0:
            continue
        cov = np.atleast_2d(np.cov(pts[member], rowvar=False))
        narrow = np.sqrt(max(np.linalg.eigvalsh(cov)[0], 0.0))
        h = min(h, silverman(max(share * n_e, 1.0), d) * narrow)
    clusters = max(kde.chols.shape[0] - 1, 1)
    return float(min(h * _heterogeneity(pts), SMOOTH_CAP)), int(clusters)


def _spread_ratio(x, k):
    """Distance of each distinct point of ``x`` (m, d) to its ``k``-th neighbour: the
    ratio of its 10% to its 90% quantile (small where dense and sparse regions mix)."""
    from scipy.spatial import cKDTree

    r = cKDTree(x).query(x, k + 1)[0][:, -1]
    lo, hi = np.quantile(r, [0.1, 0.9])
    return lo / max(hi, 1e-300)


def _heterogeneity(pts, k=10):
    """``min(1, rho / rho_gauss)``: the spread ratio of :func:`_spread_ratio` for the
    distinct points ``pts`` (whitened) against that of as many standard normal draws.
    A narrow spike on a wide base (sbibm's gaussian_mixture: sds 0.1 and 1) gives about
    0.1: the kernel of the whole cluster must not blur the spike."""
    x = np.unique(np.asarray(pts, np.float64), axis=0)
    m, d = x.shape
    if m <= 2 * k:
        return 1.0
    ref = np.random.default_rng(0).normal(size=(m, d))
    return float(min(1.0, _spread_ratio(x, k) / _spread_ratio(ref, k)))


def _kde_logpdf(kde, x):
    return np.asarray(kde_logpdf(kde, x), np.float64) if len(x) else np.zeros(0)
