"""Calibration diagnostics: SBC, expected coverage, TARP and a misspecification score.

An amortized sampler makes these cheap: ``G_low`` draws posteriors for a
thousand fresh prior-predictive datasets in one batched forward pass, where
an MCMC user would run a thousand chains. Two layers, as BlackJAX and ArviZ
write them:

* pure functions on arrays, testable without :class:`~numpyro_mfdiff.MFDiff`:
  :func:`ranks` and :func:`sbc_from_samples` (simulation-based calibration,
  Talts et al. 2018, with the simultaneous ECDF band of Saeilynoja et al.
  2022), :func:`coverage_from_samples` (central and highest-density
  intervals), :func:`tarp_from_samples` (Lemos et al. 2023);
* wrappers taking the inference object: :func:`posterior_draws` (true
  parameters from the prior, datasets simulated from the model, posterior
  draws from ``G_low``), then :func:`sbc`, :func:`expected_coverage`,
  :func:`tarp`, and :func:`misspecification` for one observation.

Shapes: ``B`` datasets, ``S`` posterior draws per dataset, ``D`` latent
coordinates (the flat *unconstrained* coordinates of the model, where the
diffusion runs; ranks and central intervals equal those of the constrained
values for elementwise monotone supports such as intervals and positive
reals), ``K`` levels. Each result is a ``NamedTuple`` of arrays with a
``to_dataset()`` method returning an ``xarray.Dataset`` (dims ``dataset``,
``coordinate``, ``level``...) that can sit beside an ``InferenceData``.
Plots (``plot_sbc_ecdf``, ``plot_coverage``, ``plot_tarp``) draw with
matplotlib in ArviZ's style and return the axes.

The wrappers are amortized diagnostics of ``G_low``: after :meth:`MFDiff.refine`
a refined observation is served by ``G_high``, which these checks do not
cover (SBC needs a posterior for every simulated dataset); the
misspecification score reports which sampler serves an observation.
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _model
from ._checks import positive_int, real
from ._score import ess as _ess
from .metrics import _scott_chol

__all__ = [
    "PosteriorDraws",
    "SBC",
    "Coverage",
    "TARP",
    "Misspecification",
    "ranks",
    "sbc_from_samples",
    "coverage_from_samples",
    "tarp_from_samples",
    "posterior_draws",
    "sbc",
    "expected_coverage",
    "tarp",
    "misspecification",
    "plot_sbc_ecdf",
    "plot_coverage",
    "plot_tarp",
]

_DEFAULT_LEVELS = tuple(np.round(np.linspace(0.05, 0.95, 19), 2))


# ----------------------------------------------------------------------------- results


def _dataset(data_vars, coords, attrs):
    import xarray as xr

    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


class SBC(NamedTuple):
    """Simulation-based calibration of a posterior sampler.

    ``ranks`` (B, D) int: rank of the true coordinate among the ``num_samples``
    (``L``) posterior draws of its dataset, in ``0..L`` (uniform under
    calibration); ``ecdf_pvalue`` (D,): the simultaneous ECDF test (the
    fraction of uniform-rank trials whose smallest pointwise binomial p-value
    is at most the observed one); ``chi2_pvalue`` (D,): a chi-square test of
    the ranks in ``bins`` bins; ``points`` (K,) fractional ranks where the
    ECDF is tested, with the simultaneous band ``lower``/``upper`` (K,) at
    probability ``prob``; ``names`` (D,) coordinate labels.
    """

    ranks: Any
    num_samples: int
    ecdf_pvalue: Any
    chi2_pvalue: Any
    points: Any
    lower: Any
    upper: Any
    prob: float
    bins: int
    names: tuple

    def ecdf(self):
        """ECDF of the ranks at ``points``: array (K, D)."""
        k = np.round(self.points * (self.num_samples + 1)).astype(int) - 1
        r = np.asarray(self.ranks)
        return (r[None, :, :] <= k[:, None, None]).mean(axis=1)

    def to_dataset(self):
        """``xarray.Dataset``: ``ranks`` (dataset, coordinate), the p-values
        (coordinate), ``ecdf``/``lower``/``upper`` (point, ...); attrs the settings."""
        return _dataset(
            dict(
                ranks=(("dataset", "coordinate"), np.asarray(self.ranks)),
                ecdf_pvalue=(("coordinate",), np.asarray(self.ecdf_pvalue)),
                chi2_pvalue=(("coordinate",), np.asarray(self.chi2_pvalue)),
                ecdf=(("point", "coordinate"), self.ecdf()),
                lower=(("point",), np.asarray(self.lower)),
                upper=(("point",), np.asarray(self.upper)),
            ),
            dict(coordinate=list(self.names), point=np.asarray(self.points)),
            dict(num_samples=self.num_samples, prob=self.prob, bins=self.bins),
        )


class Coverage(NamedTuple):
    """Expected coverage: nominal ``levels`` (K,) against the empirical coverage.

    ``central`` (K, D): fraction of datasets whose true coordinate lies in the
    central (equal-tailed) interval of each level; ``hdr`` (K,): fraction
    whose true parameter vector lies in the highest-density region of each
    level (the density estimated from the draws, or given: see
    :func:`coverage_from_samples`);
    ``stderr`` (K,): the binomial Monte Carlo error ``sqrt(q (1 - q) / B)`` of a
    calibrated sampler; ``num_datasets`` ``B``; ``names`` (D,).
    Above the diagonal: too wide (conservative); below: overconfident.
    """

    levels: Any
    central: Any
    hdr: Any
    stderr: Any
    num_datasets: int
    names: tuple

    def to_dataset(self):
        """``xarray.Dataset``: ``central`` (level, coordinate), ``hdr``, ``stderr`` (level)."""
        return _dataset(
            dict(
                central=(("level", "coordinate"), np.asarray(self.central)),
                hdr=(("level",), np.asarray(self.hdr)),
                stderr=(("level",), np.asarray(self.stderr)),
            ),
            dict(level=np.asarray(self.levels), coordinate=list(self.names)),
            dict(num_datasets=self.num_datasets),
        )


class TARP(NamedTuple):
    """Tests of Accuracy with Random Points (Lemos et al. 2023).

    ``alpha`` (K,) credibility levels and ``ecp`` (K,) the expected coverage
    probability of the balls around random reference points (the diagonal
    under calibration); ``credibility`` (B,): per dataset, the fraction of
    draws closer to the reference than the truth (mid-rank ``(r + 1/2) / (S + 1)``); ``atc``: area
    between the curve and the diagonal for ``alpha > 1/2``,
    ``int_{1/2}^1 (ecp - alpha)``; ``ks_statistic``/``ks_pvalue``: the
    Kolmogorov-Smirnov test of ``credibility`` against Uniform(0, 1).
    """

    alpha: Any
    ecp: Any
    credibility: Any
    atc: float
    ks_statistic: float
    ks_pvalue: float

    def to_dataset(self):
        """``xarray.Dataset``: ``ecp`` (alpha), ``credibility`` (dataset); attrs the statistics."""
        return _dataset(
            dict(
                ecp=(("alpha",), np.asarray(self.ecp)),
                credibility=(("dataset",), np.asarray(self.credibility)),
            ),
            dict(alpha=np.asarray(self.alpha)),
            dict(atc=self.atc, ks_statistic=self.ks_statistic, ks_pvalue=self.ks_pvalue),
        )


class Misspecification(NamedTuple):
    """Where observations fall in the prior predictive of ``G_low``'s simulations.

    Per observation (arrays (B,), or scalars for one): ``ess`` the
    likelihood-weight ESS over the prior simulations and ``log_evidence`` the
    Monte Carlo prior-predictive log density ``log mean_j p(y | theta_j)``;
    ``ess_pvalue``/``evidence_pvalue`` their lower-tail p-values against the
    same statistics of ``R`` fresh prior-predictive observations
    (``(1 + #{ref <= obs}) / (1 + R)``: small means the observation is unlike
    what the model simulates); ``reference_ess``/``reference_log_evidence``
    (R,); ``fidelity`` which sampler serves each observation (``"high"`` once
    refined, the statistics still describe the low-fidelity prior predictive).
    """

    ess: Any
    log_evidence: Any
    ess_pvalue: Any
    evidence_pvalue: Any
    reference_ess: Any
    reference_log_evidence: Any
    fidelity: Any

    def to_dataset(self):
        """``xarray.Dataset``: the per-observation statistics (observation) and the
        reference distribution (reference)."""
        one = np.ndim(self.ess) == 0
        per = {k: np.atleast_1d(np.asarray(getattr(self, k))) for k in self._fields[:4]}
        data = {k: (("observation",), v) for k, v in per.items()}
        data["fidelity"] = (("observation",), np.atleast_1d(np.asarray(self.fidelity)))
        data["reference_ess"] = (("reference",), np.asarray(self.reference_ess))
        data["reference_log_evidence"] = (("reference",), np.asarray(self.reference_log_evidence))
        return _dataset(data, {}, dict(single_observation=int(one)))


class PosteriorDraws(NamedTuple):
    """Prior-predictive datasets with posterior draws for each, all unconstrained.

    ``theta`` (B, D) true parameters drawn from the prior; ``y`` (B, M) the
    flat observations simulated at them; ``samples`` (B, S, D) posterior draws
    for each ``y``; ``names`` (D,) coordinate labels.
    """

    theta: Any
    y: Any
    samples: Any
    names: tuple


# ----------------------------------------------------------------------------- array core


def _check_pair(samples, truth):
    """``samples`` (B, S, D) and ``truth`` (B, D) as float arrays ((B, S) and (B,): D = 1)."""
    samples, truth = jnp.asarray(samples, jnp.float32), jnp.asarray(truth, jnp.float32)
    if samples.ndim == 2:
        samples = samples[..., None]
    if truth.ndim == 1:
        truth = truth[:, None]
    if samples.ndim != 3 or truth.ndim != 2:
        raise ValueError(
            f"samples must have shape (B, S, D) and truth (B, D), got {samples.shape} and "
            f"{truth.shape}"
        )
    if samples.shape[0] != truth.shape[0] or samples.shape[2] != truth.shape[1]:
        raise ValueError(
            f"samples {samples.shape} and truth {truth.shape} disagree: expected samples "
            f"(B, S, D) for truth (B, D)"
        )
    if samples.shape[0] < 2 or samples.shape[1] < 1:
        raise ValueError(f"need at least 2 datasets and 1 draw each, got samples {samples.shape}")
    for name, x in (("samples", samples), ("truth", truth)):
        if not bool(jnp.all(jnp.isfinite(x))):
            raise ValueError(f"{name} contains NaN or infinite values")
    return samples, truth


def _names(dim, names):
    if names is None:
        return tuple(f"theta[{i}]" for i in range(dim))
    names = tuple(str(n) for n in names)
    if len(names) != dim:
        raise ValueError(f"names must have {dim} entries (one per coordinate), got {len(names)}")
    return names


def _check_levels(levels):
    levels = np.asarray(_DEFAULT_LEVELS if levels is None else levels, np.float64)
    if levels.ndim != 1 or levels.size == 0 or not np.all((levels >= 0) & (levels <= 1)):
        raise ValueError(f"levels must be a non-empty 1-D array in [0, 1], got {levels!r}")
    return levels


@jax.jit
def ranks(samples, truth):
    """Rank of each true coordinate among its dataset's draws: ``#{s < truth}``.

    Args:
        samples: (B, S, D) posterior draws per dataset.
        truth: (B, D) true values.

    Returns:
        int32 (B, D) in ``0..S``; uniform on ``0..S`` for a calibrated sampler.
    """
    return jnp.sum(samples < truth[:, None, :], axis=1, dtype=jnp.int32)


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


def sbc_from_samples(
    samples,
    truth,
    rng_key,
    *,
    prob: float = 0.95,
    num_points: int = 100,
    num_trials: int = 1000,
    bins: int | None = None,
    names=None,
) -> SBC:
    """Simulation-based calibration from posterior draws of prior-predictive datasets.

    The ranks (:func:`ranks`) of a calibrated sampler are uniform on
    ``0..S``. Their ECDF is tested at ``K <= num_points`` fractional ranks
    against a simultaneous band (Saeilynoja et al. 2022): ``num_trials``
    sets of ``B`` uniform ranks give the distribution of the smallest pointwise
    two-sided binomial p-value; the band is the pointwise binomial interval at
    its ``1 - prob`` quantile, and ``ecdf_pvalue`` is the share of trials at
    least as extreme as the data. A chi-square test of the ranks in ``bins``
    bins (default ``min(20, S + 1, B // 5)``) is reported too.

    Args:
        samples: (B, S, D) draws (or (B, S) for D = 1); datasets independent.
        truth: (B, D) (or (B,)) the parameters each dataset was simulated at.
        rng_key: ``jax.random`` key of the uniform-rank trials; same key, same result.
        prob: probability of the simultaneous band, in (0, 1).
        num_points, num_trials: ECDF points tested and trials simulated.
        bins: chi-square bins.
        names: (D,) coordinate labels (default ``theta[i]``).

    Returns:
        :class:`SBC`.
    """
    samples, truth = _check_pair(samples, truth)
    real("prob", prob, 0.0, 1.0, low_open=True, high_open=True)
    num_points = positive_int("num_points", num_points)
    num_trials = positive_int("num_trials", num_trials)
    B, S, D = samples.shape
    bins = min(20, S + 1, max(2, B // 5)) if bins is None else positive_int("bins", bins, 2)
    if bins > S + 1:
        raise ValueError(f"bins must be at most num_samples + 1 = {S + 1}, got {bins}")
    names = _names(D, names)
    r = ranks(samples, truth)
    return _sbc_from_ranks(r, S, rng_key, prob, num_points, num_trials, bins, names)


def _sbc_from_ranks(r, S, rng_key, prob, num_points, num_trials, bins, names):
    B = r.shape[0]
    k = _ecdf_thresholds(S, num_points)
    z = (k + 1.0) / (S + 1.0)
    cdf, sf = _binomial_tails(B, z)
    rows = np.arange(k.size)

    def min_pvalue(counts):  # (..., K) -> (...,)
        p = np.minimum(1.0, 2.0 * np.minimum(cdf[rows, counts], sf[rows, counts]))
        return p.min(axis=-1)

    null = jax.random.randint(rng_key, (num_trials, B), 0, S + 1)
    null_min = min_pvalue(_ecdf_counts(null, k, S))
    obs_min = min_pvalue(_ecdf_counts(r.T, k, S))
    ecdf_p = (1.0 + (null_min[None, :] <= obs_min[:, None]).sum(axis=1)) / (1.0 + num_trials)
    gamma = float(np.quantile(null_min, 1.0 - prob))
    lower = np.argmax(cdf >= gamma / 2, axis=1) / B
    upper = np.argmax(cdf >= 1.0 - gamma / 2, axis=1) / B
    # chi-square on binned ranks, with the exact expected share of each bin
    which = np.arange(S + 1) * bins // (S + 1)
    expected = np.bincount(which, minlength=bins) / (S + 1.0) * B
    counts = np.stack([np.bincount(which[np.asarray(c)], minlength=bins) for c in r.T])
    stat = (((counts - expected) ** 2) / expected).sum(axis=1)
    chi2_p = np.array([_chi2_sf(x, bins - 1) for x in stat])
    return SBC(
        ranks=r,
        num_samples=int(S),
        ecdf_pvalue=ecdf_p,
        chi2_pvalue=chi2_p,
        points=z,
        lower=lower,
        upper=upper,
        prob=float(prob),
        bins=int(bins),
        names=names,
    )


_DENSITIES = ("kde", "knn")


@partial(jax.jit, static_argnames=("density", "neighbours"))
def _higher_density(samples, truth, density="kde", neighbours=5):
    """Per dataset, how many draws have a higher estimated density than the truth: (B,).

    In coordinates whitened by the draws' covariance, from the ``S^2`` pairwise
    distances (datasets in blocks): ``"kde"`` a Gaussian KDE with Scott's
    bandwidth, ``"knn"`` the distance to the ``neighbours``-th nearest draw
    (density ``~ 1 / (n r^D)``); each draw is scored without itself.
    """
    S, D = samples.shape[1:]

    def one(a):
        s, t = a
        chol = _scott_chol(s, None if density == "kde" else 1.0)
        w = jax.scipy.linalg.solve_triangular(chol, s.T, lower=True).T
        wt = jax.scipy.linalg.solve_triangular(chol, t, lower=True)
        sq = jnp.sum((w[:, None, :] - w[None, :, :]) ** 2, axis=-1)
        sq = jnp.where(jnp.eye(S, dtype=bool), jnp.inf, sq)
        sq_t = jnp.sum((w - wt) ** 2, axis=-1)
        if density == "kde":  # log of the kernel means over S - 1 and S draws
            at_draws = jax.nn.logsumexp(-0.5 * sq, axis=1) - jnp.log(S - 1.0)
            at_truth = jax.nn.logsumexp(-0.5 * sq_t) - jnp.log(1.0 * S)
        else:
            kth = lambda x: -jax.lax.top_k(-x, neighbours)[0][..., -1]  # noqa: E731
            at_draws = -jnp.log(S - 1.0) - 0.5 * D * jnp.log(kth(sq))
            at_truth = -jnp.log(1.0 * S) - 0.5 * D * jnp.log(kth(sq_t))
        return jnp.sum(at_draws > at_truth)

    return jax.lax.map(one, (samples, truth), batch_size=max(1, 2**22 // (S * S)))


def coverage_from_samples(
    samples, truth, levels=None, *, density="knn", neighbours: int = 5, names=None
) -> Coverage:
    """Expected coverage of central and highest-density intervals at ``levels``.

    A dataset's truth lies in the central interval of level ``q`` when its PIT
    ``u`` satisfies ``|2u - 1| <= q``, and in the highest-density region of
    level ``q`` when at most a share ``q`` of the draws has a higher density;
    each level is spread uniformly over the cell ``[r, r + 1] / (S + 1)`` of
    its count ``r`` (the randomised PIT, averaged), so a calibrated sampler's
    curve is the diagonal whatever ``S``. Without a density, it is estimated from the
    draws (``S^2`` distances per dataset): ``"knn"`` (default), the distance to
    the ``neighbours``-th nearest draw, follows separated modes; ``"kde"``, a
    Gaussian KDE with Scott's bandwidth, blurs them together. Both are noisy,
    which lifts the curve at low levels: with ``S = 100`` exact draws, level
    0.05 reads 0.08 (``"knn"``) and 0.28 (``"kde"``) on the bimodal quadratic,
    0.06 and 0.09 on a 2-D Gaussian, 0.50 +- 0.02 at level 0.5 for both. Give
    exact log densities where they exist. A calibrated sampler covers ``q``
    of the datasets, within ``stderr``.

    Args:
        samples: (B, S, D) draws (or (B, S)); truth: (B, D) (or (B,)).
        levels: (K,) credibility levels in [0, 1] (default 0.05, 0.10, ..., 0.95).
        density: ``"knn"``, ``"kde"``, an array (B, S + 1) of log densities (the
            truth's first, then the draws': exact highest-density regions), or
            ``None`` (no highest-density coverage: ``hdr`` is NaN).
        neighbours: the ``k`` of ``"knn"``.
        names: (D,) coordinate labels.

    Returns:
        :class:`Coverage`.
    """
    samples, truth = _check_pair(samples, truth)
    levels = _check_levels(levels)
    B, S, D = samples.shape
    if isinstance(density, str) or density is None:
        if density is not None and density not in _DENSITIES:
            raise ValueError(f"density must be 'kde', 'knn', an array or None, got {density!r}")
        neighbours = positive_int("neighbours", neighbours)
        if density is not None and S < max(D + 2, neighbours + 1):
            raise ValueError(
                f"density={density!r} needs at least max(D + 2, neighbours + 1) = "
                f"{max(D + 2, neighbours + 1)} draws per dataset, got {S}"
            )
        higher = None if density is None else _higher_density(samples, truth, density, neighbours)
    else:
        logp = np.asarray(density, np.float64)
        if logp.shape != (B, S + 1) or np.any(np.isnan(logp)):
            raise ValueError(
                f"density as an array must be log densities of shape (B, S + 1) = {(B, S + 1)} "
                f"without NaN, got shape {logp.shape}"
            )
        higher = (logp[:, 1:] > logp[:, :1]).sum(axis=1)
    central = _cell_coverage(ranks(samples, truth), S, (1.0 - levels) / 2, (1.0 + levels) / 2)
    if higher is None:
        hdr = np.full(levels.size, np.nan)
    else:
        hdr = _cell_coverage(higher, S, np.zeros_like(levels), levels)
    return Coverage(
        levels=levels,
        central=central,
        hdr=hdr,
        stderr=np.sqrt(levels * (1.0 - levels) / B),
        num_datasets=int(B),
        names=_names(D, names),
    )


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


@jax.jit
def _closer(samples, truth, references):
    d_draws = jnp.sum((samples - references[:, None, :]) ** 2, axis=-1)
    d_truth = jnp.sum((truth - references) ** 2, axis=-1)
    return jnp.sum(d_draws < d_truth[:, None], axis=1)


def tarp_from_samples(
    samples,
    truth,
    rng_key,
    *,
    references="prior",
    z_score: bool = True,
    num_alpha: int = 101,
) -> TARP:
    """TARP (Lemos et al. 2023): coverage of balls around random reference points.

    For dataset ``i`` with reference ``r_i``, its credibility is the share of
    draws closer to ``r_i`` than the truth (Euclidean); the expected
    coverage probability ``ecp(alpha)`` is the share of datasets with
    credibility at most ``alpha`` (each spread over its rank cell, as in
    :func:`coverage_from_samples`), the diagonal for a calibrated sampler, with
    random references a necessary and sufficient check.

    Args:
        samples: (B, S, D) draws (or (B, S)); truth: (B, D) (or (B,)).
        rng_key: ``jax.random`` key of the references.
        references: ``"prior"`` (another dataset's truth, a prior draw
            independent of dataset ``i``: the truths rolled by a random shift),
            ``"box"`` (uniform in the truths' bounding box, as sbi) or an array (B, D).
        z_score: standardise every coordinate by the truths' mean and sd first.
        num_alpha: points of the ``alpha`` grid on [0, 1].

    Returns:
        :class:`TARP`.
    """
    samples, truth = _check_pair(samples, truth)
    num_alpha = positive_int("num_alpha", num_alpha, 3)
    B, S, D = samples.shape
    if isinstance(references, str):
        if references == "prior":
            shift = jax.random.randint(rng_key, (), 1, B)
            refs = jnp.roll(truth, shift, axis=0)
        elif references == "box":
            lo, hi = truth.min(0), truth.max(0)
            refs = lo + (hi - lo) * jax.random.uniform(rng_key, truth.shape)
        else:
            raise ValueError(f"references must be 'prior', 'box' or an array, got {references!r}")
    else:
        refs = jnp.asarray(references, jnp.float32)
        if refs.shape != truth.shape or not bool(jnp.all(jnp.isfinite(refs))):
            raise ValueError(
                f"references must be a finite array of the truth's shape {truth.shape}, got "
                f"{refs.shape}"
            )
    if z_score:
        mean, sd = truth.mean(0), truth.std(0)
        sd = jnp.where(sd > 0, sd, 1.0)
        samples, truth, refs = ((x - mean) / sd for x in (samples, truth, refs))
    closer = np.asarray(_closer(samples, truth, refs), np.float64)
    u = (closer + 0.5) / (S + 1.0)  # mid-rank
    alpha = np.linspace(0.0, 1.0, num_alpha)
    ecp = _cell_coverage(closer, S, np.zeros_like(alpha), alpha)
    half = alpha >= 0.5
    srt = np.sort(u)
    i = np.arange(1, B + 1)
    ks = float(max(np.max(i / B - srt), np.max(srt - (i - 1) / B)))
    return TARP(
        alpha=alpha,
        ecp=ecp,
        credibility=u,
        atc=float(np.trapezoid(ecp[half] - alpha[half], alpha[half])),
        ks_statistic=ks,
        ks_pvalue=_kolmogorov_pvalue(ks, B),
    )


# ----------------------------------------------------------------------------- MFDiff wrappers


def _coordinate_names(spec) -> tuple:
    """Labels of the D unconstrained coordinates: ``site`` or ``site[i,j]``, ravel order."""
    shapes = jax.eval_shape(spec.unravel_latent, jax.ShapeDtypeStruct((spec.dim,), jnp.float32))
    out = []
    for name, s in shapes.items():
        if s.shape == ():
            out.append(name)
        else:
            out.extend(f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(*s.shape))
    return tuple(out)


@eqx.filter_jit
def _generate_batch(gen, y, z):
    """``G(y_b, z_bs)`` for ``y`` (B, M) and ``z`` (B, S, D): (B, S, D), about 4096 rows a step."""
    per = jax.vmap(gen, (None, 0))
    return jax.lax.map(lambda a: per(*a), (y, z), batch_size=max(1, 4096 // z.shape[1]))


def _prior_predictive(inf, rng_key, num, model, model_args, model_kwargs):
    """Valid simulations ``(theta (n, D), y (n, M))`` of ``model`` (default ``inf``'s) from
    the prior, through ``inf``'s executor; failed ones left out with a warning."""
    from ._refine import high_fidelity_model

    model, args, kwargs, spec, _ = high_fidelity_model(inf, model, model_args, model_kwargs)
    sims = _model.simulate(
        rng_key,
        model,
        spec,
        num,
        args,
        kwargs,
        inf.simulation_chunk_size,
        executor=inf.executor,
        max_failure_fraction=inf.max_failure_fraction,
    )
    valid = np.asarray(sims.valid)
    if not valid.all():
        warnings.warn(
            f"{int((~valid).sum())} of {num} prior-predictive simulations failed and are left out",
            stacklevel=3,
        )
    if valid.sum() < 2:
        raise RuntimeError(
            f"only {int(valid.sum())} of {num} prior-predictive simulations are finite"
        )
    return np.asarray(sims.theta)[valid], np.asarray(sims.y)[valid]


def _draw_kwargs(kwargs):
    """Take the keyword arguments of :func:`posterior_draws` out of ``kwargs``."""
    return {k: kwargs.pop(k) for k in ("model", "model_args", "model_kwargs") if k in kwargs}


def posterior_draws(
    inf,
    rng_key,
    num_datasets: int = 1000,
    num_samples: int = 1000,
    *,
    model=None,
    model_args=None,
    model_kwargs=None,
) -> PosteriorDraws:
    """True parameters from the prior, datasets simulated at them, ``G_low`` draws for each.

    The datasets are fresh simulations (not the stored ones ``G_low`` was
    built from), run in JAX or, for simulators wrapped by
    :func:`~numpyro_mfdiff.external_simulator`, through ``inf.executor``; the
    posterior draws come from ``G_low`` for all datasets in one batched forward
    pass with independent noise per dataset. ``G_low`` serves every dataset,
    refined observations included: SBC checks the amortized sampler.

    Args:
        inf: a fitted :class:`~numpyro_mfdiff.MFDiff`.
        rng_key: ``jax.random`` key.
        num_datasets: ``B`` prior-predictive datasets (>= 2).
        num_samples: ``S`` posterior draws per dataset.
        model, model_args, model_kwargs: simulate the datasets with another model
            of the same latent and observed sites (a high-fidelity simulator, as
            in :meth:`MFDiff.refine`): does ``G_low`` stay calibrated for data
            from it? Default: ``inf``'s model and arguments.

    Returns:
        :class:`PosteriorDraws` (unconstrained coordinates); failed simulations
        are left out (with a warning), so ``B`` may be smaller.
    """
    num_datasets = positive_int("num_datasets", num_datasets, 2)
    num_samples = positive_int("num_samples", num_samples)
    inf._require_generator()
    k_sim, k_z = jax.random.split(rng_key)
    theta, y = _prior_predictive(inf, k_sim, num_datasets, model, model_args, model_kwargs)
    z = jax.random.normal(k_z, (theta.shape[0], num_samples, inf.spec.dim))
    samples = _generate_batch(inf.generator, jnp.asarray(y), z)
    return PosteriorDraws(
        theta=jnp.asarray(theta),
        y=jnp.asarray(y),
        samples=samples,
        names=_coordinate_names(inf.spec),
    )


def sbc(inf, rng_key, num_datasets: int = 1000, num_samples: int = 100, **kwargs) -> SBC:
    """Simulation-based calibration of ``G_low`` on ``num_datasets`` fresh prior draws.

    :func:`posterior_draws` then :func:`sbc_from_samples`. Keyword arguments
    go to either (``model``, ``model_args``, ``model_kwargs``; ``prob``,
    ``num_points``, ``num_trials``, ``bins``). Ranks (B, D) per unconstrained
    coordinate, labelled by site (``"theta"``, ``"x[0]"``...).
    """
    draw_kw = _draw_kwargs(kwargs)
    k_draw, k_test = jax.random.split(rng_key)
    d = posterior_draws(inf, k_draw, num_datasets, num_samples, **draw_kw)
    return sbc_from_samples(d.samples, d.theta, k_test, names=d.names, **kwargs)


def expected_coverage(
    inf, rng_key, num_datasets: int = 1000, num_samples: int = 500, levels=None, **kwargs
) -> Coverage:
    """Expected coverage of ``G_low``'s central and highest-density intervals.

    :func:`posterior_draws` then :func:`coverage_from_samples`; keyword
    arguments go to either (``model``, ``model_args``, ``model_kwargs``;
    ``density``, ``neighbours``).
    """
    levels = _check_levels(levels)
    draw_kw = _draw_kwargs(kwargs)
    d = posterior_draws(inf, rng_key, num_datasets, num_samples, **draw_kw)
    return coverage_from_samples(d.samples, d.theta, levels, names=d.names, **kwargs)


def tarp(inf, rng_key, num_datasets: int = 1000, num_samples: int = 500, **kwargs) -> TARP:
    """TARP of ``G_low`` on fresh prior draws; references from the prior by default.

    :func:`posterior_draws` then :func:`tarp_from_samples`; keyword arguments
    go to either. Coordinates are standardised by the truths' mean and sd.
    """
    draw_kw = _draw_kwargs(kwargs)
    k_draw, k_ref = jax.random.split(rng_key)
    d = posterior_draws(inf, k_draw, num_datasets, num_samples, **draw_kw)
    return tarp_from_samples(d.samples, d.theta, k_ref, **kwargs)


def misspecification(inf, rng_key, observations=None, num_datasets: int = 1000) -> Misspecification:
    """How typical observations are of the prior predictive the simulations represent.

    The likelihood-weight ESS over the prior simulations (what
    ``inf.ess(obs, fidelity="low")`` reports) and the Monte Carlo log evidence
    ``log mean_j p(y | theta_j)`` of each observation, each against its
    distribution over ``num_datasets`` fresh prior-predictive observations
    (simulated as :func:`posterior_draws` does): a p-value near ``1 / (R + 1)``
    says the observation lies outside what the model simulates, where no
    sampler built on these simulations, nor SBC, can be trusted.

    Args:
        inf: an :class:`~numpyro_mfdiff.MFDiff` with simulations.
        rng_key: ``jax.random`` key of the reference simulations.
        observations: one observation or a batch (dict site -> value); ``None``:
            the data passed to :meth:`MFDiff.run`.
        num_datasets: ``R`` reference observations (>= 2).

    Returns:
        :class:`Misspecification` (scalars for one observation, arrays (B,) for a batch).
    """
    num_datasets = positive_int("num_datasets", num_datasets, 2)
    inf._require_sims()
    observations = inf._observations(observations)
    y = inf._check(observations, warn=False)
    rows = np.atleast_2d(y)
    fid = ["low" if inf._refinement(r, None) is None else "high" for r in rows]
    _, y_ref = _prior_predictive(inf, rng_key, num_datasets, None, None, None)
    stats = jax.jit(
        lambda ys: jax.lax.map(lambda yi: _ess_and_evidence(inf._loglik(yi)), ys, batch_size=16)
    )
    ess_obs, ev_obs = (np.asarray(x, np.float64) for x in stats(jnp.asarray(rows)))
    ess_ref, ev_ref = (np.asarray(x, np.float64) for x in stats(jnp.asarray(y_ref)))
    R = ess_ref.size

    def pvalue(ref, obs):
        return (1.0 + (ref[None, :] <= obs[:, None]).sum(axis=1)) / (1.0 + R)

    out = [ess_obs, ev_obs, pvalue(ess_ref, ess_obs), pvalue(ev_ref, ev_obs)]
    if y.ndim == 1:
        out = [float(x[0]) for x in out]
        fid = fid[0]
    return Misspecification(*out, ess_ref, ev_ref, fid if y.ndim == 1 else np.asarray(fid))


def _ess_and_evidence(ll):
    """ESS and ``log mean exp`` of log-likelihoods (N,) over the finite ones."""
    n = jnp.sum(jnp.isfinite(ll))
    return _ess(ll), jax.nn.logsumexp(ll) - jnp.log(n)


# ----------------------------------------------------------------------------- plots


def _axes(n, axes, width=3.6, height=2.8):
    import matplotlib.pyplot as plt

    if axes is None:
        cols = min(n, 4)
        rows = -(-n // cols)
        _, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    axes = np.atleast_1d(np.asarray(axes, dtype=object)).ravel()
    if axes.size < n:
        raise ValueError(f"need {n} axes (one per coordinate), got {axes.size}")
    return axes


def plot_sbc_ecdf(result: SBC, *, difference: bool = True, axes=None, color="C0"):
    """ECDF of the SBC ranks with the simultaneous band, one panel per coordinate.

    As ``az.plot_ecdf(..., pit=True, confidence_bands=True)``: the ECDF of the
    fractional ranks at ``result.points``, minus the uniform CDF when
    ``difference`` (default), inside the band of probability ``result.prob``
    for a calibrated sampler. A U shape means too narrow posteriors, an
    inverted U too wide ones, a one-sided bulge a bias.

    Returns:
        numpy array of matplotlib axes (one per coordinate, more are left empty).
    """
    names, z = result.names, np.asarray(result.points)
    axes = _axes(len(names), axes)
    ecdf = result.ecdf()
    base = z if difference else 0.0
    for i, (ax, name) in enumerate(zip(axes, names, strict=False)):
        ax.fill_between(z, result.lower - base, result.upper - base, color=color, alpha=0.2, lw=0)
        ax.plot(z, ecdf[:, i] - base, color=color, lw=1.5)
        if difference:
            ax.axhline(0.0, color="k", lw=0.6)
        else:
            ax.plot([0, 1], [0, 1], "k", lw=0.6)
        ax.set_title(f"{name}: p = {float(result.ecdf_pvalue[i]):.3g}", fontsize=10)
        ax.set_xlabel("fractional rank")
        ax.set_ylabel("ECDF difference" if difference else "ECDF")
    return axes


def plot_coverage(result: Coverage, *, ax=None, central: bool = True, hdr: bool = True):
    """Empirical against nominal coverage, with the ``2 stderr`` band of a calibrated sampler.

    One line per coordinate for the central intervals and one for the
    highest-density regions. Returns the matplotlib axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0))
    q = np.asarray(result.levels)
    ax.fill_between(q, q - 2 * result.stderr, q + 2 * result.stderr, color="0.8", lw=0)
    ax.plot([0, 1], [0, 1], "k", lw=0.8)
    if central:
        for i, name in enumerate(result.names):
            ax.plot(q, np.asarray(result.central)[:, i], "o-", ms=3, label=f"central {name}")
    if hdr and not np.all(np.isnan(result.hdr)):
        ax.plot(q, result.hdr, "s-", ms=3, color="k", label="highest density")
    ax.set(xlabel="nominal coverage", ylabel="empirical coverage", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    return ax


def plot_tarp(result: TARP, *, ax=None, label: str | None = None):
    """TARP's expected coverage probability against the credibility level; returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], "k", lw=0.8)
    text = f"ATC {result.atc:+.3f}, KS p {result.ks_pvalue:.2g}"
    ax.plot(result.alpha, result.ecp, lw=1.5, label=text if label is None else f"{label}: {text}")
    ax.set(xlabel="credibility level", ylabel="expected coverage", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    return ax
