"""Result types of the calibration diagnostics: ``NamedTuple``s of arrays with ``to_dataset()``."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["SBC", "Coverage", "TARP", "Misspecification", "PosteriorDraws"]


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

    def __repr__(self):
        """The per-observation statistics and the number of references, not the
        references themselves (hundreds of numbers)."""

        def show(v):
            v = np.asarray(v)
            if v.dtype.kind in "US":
                return repr(v.item()) if v.ndim == 0 else np.array2string(v, threshold=8)
            if v.ndim == 0:
                return f"{float(v):.4g}"
            return np.array2string(v, precision=4, threshold=8)

        per = ", ".join(f"{k}={show(getattr(self, k))}" for k in (*self._fields[:4], "fidelity"))
        return f"Misspecification({per}, references={np.size(self.reference_ess)})"

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
