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

Modules: ``_results`` (the result types), ``_arrays`` (the array core),
``_wrappers`` (the functions taking the inference object), ``_plots``.

The wrappers are amortized diagnostics of ``G_low``: after :meth:`MFDiff.refine`
a refined observation is served by ``G_high``, which these checks do not
cover (SBC needs a posterior for every simulated dataset); the
misspecification score reports which sampler serves an observation.
"""

from __future__ import annotations

from ._arrays import coverage_from_samples, ranks, sbc_from_samples, tarp_from_samples
from ._plots import plot_coverage, plot_sbc_ecdf, plot_tarp
from ._results import SBC, TARP, Coverage, Misspecification, PosteriorDraws
from ._wrappers import expected_coverage, misspecification, posterior_draws, sbc, tarp

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
