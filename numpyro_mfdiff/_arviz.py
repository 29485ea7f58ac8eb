"""All ArviZ conversion lives here (arviz 0.23: ``az.InferenceData``)."""

from __future__ import annotations

import warnings

import jax
import numpy as np

with warnings.catch_warnings():
    # arviz 0.23 emits a once-a-day FutureWarning about its refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

__all__ = ["to_inference_data"]


def _chains(samples, num_chains):
    """(S, *shape) -> (chains, S // chains, *shape) numpy arrays."""
    out = {}
    for k, v in samples.items():
        v = np.asarray(v)
        out[k] = v.reshape((num_chains, v.shape[0] // num_chains) + v.shape[1:])
    return out


def to_inference_data(
    inf,
    rng_key,
    observations,
    num_samples=1000,
    *,
    num_chains=1,
    prior=True,
    posterior_predictive=False,
    log_likelihood=True,
    method="generator",
    fidelity=None,
):
    """Posterior samples for one observation as ``az.InferenceData``.

    Groups: ``posterior`` (latent sites, dims ``chain``/``draw``, sample shapes
    kept), ``observed_data``, and, when asked, ``prior`` and
    ``prior_predictive`` (from the stored prior simulations) and
    ``posterior_predictive`` (the model simulated at the posterior draws) and
    ``log_likelihood`` (pointwise log density of the observed sites at the
    posterior draws, for ``az.loo`` and ``az.compare``).
    The method's diagnostics (likelihood-weight ESS, number of simulations and
    failures, sampler used) go in ``attrs``.
    ``method``: ``"generator"`` (:meth:`MFDiff.get_samples`) or ``"ode"``
    (:meth:`MFDiff.sample_ode`); ``fidelity`` as in :meth:`MFDiff.get_samples`.
    For a refined observation ``attrs`` also hold the refinement's importance
    ESS before and after, the simulations spent at each fidelity and the KDE
    bandwidths.
    """
    if num_chains < 1 or num_samples % num_chains:
        raise ValueError(
            f"num_samples ({num_samples}) must be a positive multiple of num_chains ({num_chains})"
        )
    if method not in ("generator", "ode"):
        raise ValueError(f"method must be 'generator' or 'ode', got {method!r}")
    y = np.asarray(inf._check(observations, warn=False))
    if y.ndim != 1:
        raise ValueError("to_inference_data takes a single observation, not a batch")
    k_post, k_pp = jax.random.split(rng_key)
    sampler = inf.get_samples if method == "generator" else inf.sample_ode
    post = sampler(k_post, observations, num_samples, fidelity=fidelity)
    groups = dict(
        posterior=_chains(post, num_chains),
        observed_data={k: np.asarray(v) for k, v in observations.items()},
    )
    if posterior_predictive:
        from numpyro.infer import Predictive

        pred = Predictive(
            inf.model, posterior_samples=post, return_sites=list(inf.spec.observed_shapes)
        )
        pp = pred(k_pp, *inf._args, **inf._kwargs)
        groups["posterior_predictive"] = _chains(pp, num_chains)
    if log_likelihood:
        from numpyro import handlers
        from numpyro.infer import log_likelihood as numpyro_log_likelihood

        conditioned = handlers.condition(inf.model, data=observations)
        ll = numpyro_log_likelihood(conditioned, post, *inf._args, **inf._kwargs)
        groups["log_likelihood"] = _chains(
            {k: v for k, v in ll.items() if k in inf.spec.observed_shapes}, num_chains
        )
    if prior:
        sims = inf.simulations
        idx = np.flatnonzero(sims.valid)[:num_samples]
        theta = jax.vmap(inf.spec.constrain)(sims.theta[idx])
        ys = jax.vmap(inf.spec.unravel_obs)(sims.y[idx])
        groups["prior"] = _chains(theta, 1)
        groups["prior_predictive"] = _chains(ys, 1)
    ref = inf._refinement(y, fidelity)
    attrs = dict(
        inference_library="numpyro_mfdiff",
        sampler=method,
        fidelity="high" if ref is not None else "low",
        ess_likelihood=float(inf.ess(observations, fidelity="low")),
        num_simulations=int(inf.diagnostics.get("num_simulations", 0)),
        num_failed_simulations=int(inf.diagnostics.get("num_failed", 0)),
    )
    if ref is not None:
        attrs.update(
            ess_refined=ref.ess,
            num_high_fidelity_simulations=ref.num_high_fidelity,
            refinement_rounds=len(ref.rounds),
            kde_bandwidth=[float(b) for k in ref.kdes for b in k.bandwidth],
        )
    return az.from_dict(**groups, attrs=attrs)
