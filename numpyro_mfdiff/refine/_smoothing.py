"""The end-point smoothing of the refined ODE in the centred coordinates of non-centred sites.

The kernel of :func:`~numpyro_mfdiff.refine._sequential.smoothing_bandwidth` is
Gaussian in the whitened, non-centred coordinates ``u`` with the Liu & West shrinkage,
so it keeps the weighted particles' mean and covariance there; a centred site
``theta = loc + scale * decentred`` is not linear in ``u``, and the kernel mixes
``scale`` and ``decentred`` across particles, so the smoothed draws come out wider
there than the particles (eight schools, ``h = 0.47``: ``theta_j`` 8-17% wider, the
refined ODE's and ``G_high``'s labels alike). :func:`centred_bandwidth` lowers ``h``
until the widening in the centred coordinates is within ``SMOOTH_WIDEN``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import _sequential

__all__ = [
    "SMOOTH_FACTORS",
    "SMOOTH_POINTS",
    "SMOOTH_WIDEN",
    "centred_bandwidth",
    "centred_widening",
]

# the largest sd change in the centred coordinates the smoothing may make, and the
# fractions of the ESS-based bandwidth tried, largest first
SMOOTH_WIDEN = 0.05
SMOOTH_FACTORS = (1.0, 0.8, 0.6, 0.45, 0.3, 0.2, 0.1)
# smoothed copies of the points in the check (a heavy-tailed sd is noisy)
SMOOTH_POINTS = 32_768


def _widening(key, theta, log_w, centring, num_points):
    """``h -> `` :func:`centred_widening` of the weighted points at bandwidth ``h``: the
    whitening, the noise and the points' own centred sds are made once per ``key``."""
    mean, chol = _sequential.whitening(theta, log_w)
    x = _sequential.whiten(theta, mean, chol)
    w = np.exp(log_w - np.max(log_w))
    w = w / w.sum()
    copies = -(-num_points // x.shape[0])
    eps = np.asarray(jax.random.normal(key, (copies,) + x.shape), np.float64)

    def centred_sd(white, wt):
        c = centring.rows_centred(jnp.asarray(mean + white @ chol.T, jnp.float32))
        c = np.asarray(c, np.float64)
        return np.sqrt(np.maximum(wt @ (c - wt @ c) ** 2, 1e-24))

    plain, w_copies = centred_sd(x, w), np.tile(w, copies) / copies

    def widening(h):
        smooth = (np.sqrt(1.0 - h**2) * x + h * eps).reshape(-1, x.shape[1])
        return float(np.max(np.abs(np.log(centred_sd(smooth, w_copies) / plain))))

    return widening


def centred_widening(key, theta, log_w, h, centring, num_points=SMOOTH_POINTS) -> float:
    """The largest change of a centred coordinate's weighted sd (as ``|log ratio|``)
    that the smoothing of bandwidth ``h`` (whitened units) makes to the weighted points
    ``theta`` (n, D) with ``log_w`` (n,): the points against their smoothed copies
    ``sqrt(1 - h^2) x + h eps`` (whitened, as :func:`~numpyro_mfdiff.refine._refine.ode_draw`
    draws them; each point copied ``ceil(num_points / n)`` times with its own ``eps``),
    both mapped by ``centring.rows_centred``; the same ``eps`` for every ``h`` of one
    ``key``."""
    return _widening(key, theta, log_w, centring, num_points)(h)


def centred_bandwidth(key, theta, log_w, h, centring, widen=None) -> float:
    """The largest of ``h * SMOOTH_FACTORS`` whose :func:`centred_widening` is at most
    ``widen`` (default ``SMOOTH_WIDEN``; 0 when none is), for the weighted points
    ``theta`` (n, D) with ``log_w`` (n,) of a model with non-centred sites
    (``centring``); ``h`` itself when ``centring`` is None (the kernel keeps the
    moments of ``u``) or ``h`` is 0."""
    if centring is None or h <= 0:
        return float(h)
    widen = SMOOTH_WIDEN if widen is None else widen
    widening = _widening(key, theta, log_w, centring, SMOOTH_POINTS)
    for f in SMOOTH_FACTORS:
        if widening(h * f) <= widen:
            return float(h * f)
    return 0.0
