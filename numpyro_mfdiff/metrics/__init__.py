"""Sample-based accuracy metrics: histogram and KDE KL divergences, C2ST and MMD.

Every metric accepts samples as

* an array of shape ``(n, d)`` or ``(n,)`` (``(n,)`` is read as ``d = 1``; arrays with more
  than two axes are flattened after the first),
* a dict ``site name -> array`` with the sample axis first; each site is flattened to
  ``(n, -1)`` and the sites are concatenated in sorted key order,
* an ``arviz.InferenceData``; its ``posterior`` group is used, ``chain`` and ``draw`` are
  stacked into the sample axis and the variables are concatenated in sorted name order.

See :func:`flatten_samples`. All metrics return scalar ``jax.Array`` values.
"""

from ._classifier import c2st, mmd
from ._samples import flatten_samples, kl_divergence_hist, kl_divergence_kde

__all__ = ["flatten_samples", "kl_divergence_hist", "kl_divergence_kde", "c2st", "mmd"]
