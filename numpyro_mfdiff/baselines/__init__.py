"""MCMC / SMC reference samplers for NumPyro models (BlackJAX NUTS and adaptive tempered SMC).

Both samplers work on the model's unconstrained space (``numpyro.infer.util.initialize_model``),
flatten the latent sites into one vector, and map the draws back to constrained sites (plus
``numpyro.deterministic`` sites) with the model's ``postprocess_fn``. They return
``arviz.InferenceData`` with the groups of :meth:`MFDiff.to_inference_data` (``log_likelihood``
pointwise per observed site, ``observed_data``, and on request ``prior``/``prior_predictive``
and ``posterior_predictive``), so that ``az.loo``, ``az.compare({"mfdiff": ..., "nuts": ...})``,
``az.summary`` and the metrics in :mod:`numpyro_mfdiff.metrics` apply directly.

Modules: ``_problem`` (the conditioned model and its densities, shared), ``_nuts``,
``_smc``.
"""

from ._nuts import nuts
from ._smc import smc

__all__ = ["nuts", "smc"]
