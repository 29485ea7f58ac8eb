"""All ArviZ conversion lives here (arviz 0.23: ``az.InferenceData``)."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import numpy as np

from ._checks import chain_count, group_chains

with warnings.catch_warnings():
    # arviz 0.23 emits a once-a-day FutureWarning about its refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

__all__ = ["to_inference_data", "from_draws", "Groups", "sample_prior"]


def _numpy(samples):
    return {k: np.asarray(v) for k, v in samples.items()}


def _flat(samples):
    """(chains, draws, *shape) -> (chains * draws, *shape)."""
    return {k: v.reshape((-1,) + v.shape[2:]) for k, v in samples.items()}


class Groups(NamedTuple):
    """The groups of :func:`from_draws` beside ``posterior`` and ``observed_data``.

    ``posterior_predictive``: simulate the observed sites at every draw
    (``numpyro.infer.Predictive``), (chains, draws, *site_shape).
    ``log_likelihood``: pointwise log density of each observed site at every
    draw (``numpyro.infer.log_likelihood``: event dimensions summed, plate
    dimensions kept), (chains, draws, *batch_shape), for ``az.loo`` and
    ``az.compare``. ``prior``, ``prior_predictive``: draws (S, *site_shape) of
    the latent and of the observed sites, stored as one chain.
    ``sample_stats``, ``attrs``: as ``az.from_dict`` takes them (``attrs``
    also on ``sample_stats``).
    """

    posterior_predictive: bool = False
    log_likelihood: bool = True
    prior: dict | None = None
    prior_predictive: dict | None = None
    sample_stats: dict | None = None
    attrs: dict | None = None


def from_draws(
    model,
    posterior,
    observations,
    rng_key=None,
    *,
    observed_sites,
    model_args=(),
    model_kwargs=None,
    groups: Groups | None = None,
):
    """``az.InferenceData`` from posterior draws of a NumPyro model (MFDiff and baselines).

    Args:
        model: the NumPyro model; ``model_args``/``model_kwargs`` its arguments,
            with the data left out (``None``) when ``posterior_predictive`` is
            asked, so that the observed sites are simulated.
        posterior: site name -> draws (chains, draws, *site_shape): latent and
            deterministic sites.
        observations: observed site name -> value (``observed_data``; the
            model is conditioned on it for the log likelihood).
        rng_key: ``jax.random`` key of the posterior predictive draws.
        observed_sites: the observed sites (those of ``log_likelihood`` and
            ``posterior_predictive``).
        groups: the other groups, :class:`Groups` (default: ``Groups()``, the log
            likelihood only).
    """
    from numpyro import handlers
    from numpyro.infer import Predictive
    from numpyro.infer import log_likelihood as numpyro_log_likelihood

    model_kwargs = model_kwargs or {}
    g = Groups() if groups is None else groups
    num_chains = next(iter(posterior.values())).shape[0]
    flat = _flat(posterior)
    out = dict(posterior=_numpy(posterior), observed_data=_numpy(observations))
    if g.posterior_predictive:
        pred = Predictive(model, posterior_samples=flat, return_sites=list(observed_sites))
        pp = pred(rng_key, *model_args, **model_kwargs)
        out["posterior_predictive"] = group_chains(_numpy(pp), num_chains)
    if g.log_likelihood:
        conditioned = handlers.condition(model, data=observations)
        ll = numpyro_log_likelihood(conditioned, flat, *model_args, **model_kwargs)
        ll = {k: v for k, v in ll.items() if k in observed_sites}
        out["log_likelihood"] = group_chains(_numpy(ll), num_chains)
    if g.prior is not None:
        out["prior"] = group_chains(_numpy(g.prior), 1)
    if g.prior_predictive is not None:
        out["prior_predictive"] = group_chains(_numpy(g.prior_predictive), 1)
    if g.sample_stats is not None:
        out["sample_stats"] = _numpy(g.sample_stats)
        out["sample_stats_attrs"] = dict(g.attrs or {})
    return az.from_dict(**out, attrs=dict(g.attrs or {}))


def sample_prior(
    model, rng_key, num_samples, sites, observed_sites, model_args=(), model_kwargs=None
):
    """``(prior, prior_predictive)``: ``num_samples`` draws (S, *site_shape) of ``sites``
    (latent and deterministic) and of ``observed_sites`` from the model (``model_args``
    without the data, so that the observed sites are simulated)."""
    from numpyro.infer import Predictive

    pred = Predictive(model, num_samples=num_samples, return_sites=[*sites, *observed_sites])
    draws = pred(rng_key, *model_args, **(model_kwargs or {}))
    return (
        {k: draws[k] for k in sites},
        {k: draws[k] for k in observed_sites},
    )


def to_inference_data(
    rng_key,
    observations,
    num_samples=1000,
    *,
    model,
    state,
    check,
    samplers,
    refinement,
    low_ess,
    deterministic,
    diagnostics,
    num_chains=1,
    prior=True,
    posterior_predictive=False,
    log_likelihood=True,
    method="generator",
    fidelity=None,
):
    """Posterior samples for one observation as ``az.InferenceData``.

    Groups: ``posterior`` (latent and deterministic sites, dims
    ``chain``/``draw``, sample shapes kept), ``observed_data``, and, when
    asked, ``prior`` and ``prior_predictive`` (from the stored prior
    simulations, one chain of at most ``num_samples``) and
    ``posterior_predictive`` (the model simulated at the posterior draws) and
    ``log_likelihood`` (pointwise log density of the observed sites at the
    posterior draws, for ``az.loo`` and ``az.compare``); see :func:`from_draws`.
    The method's diagnostics (likelihood-weight ESS, number of simulations and
    failures, sampler used) go in ``attrs``.
    ``method``: ``"generator"`` (:meth:`MFDiff.get_samples`) or ``"ode"``
    (:meth:`MFDiff.sample_ode`); ``fidelity`` as in :meth:`MFDiff.get_samples`.
    For a refined observation ``attrs`` also hold the refinement's importance
    ESS before and after, the simulations spent at each fidelity and the KDE
    bandwidths.

    What it reads of the inference is explicit: ``model`` and ``state`` (its spec,
    arguments and simulations), ``check(observations) -> flat y``, ``samplers`` (method
    -> the sampler), ``refinement(y, fidelity)`` (the refinement serving ``y`` or None),
    ``low_ess(observations)`` (the likelihood-weight ESS), ``deterministic``
    (:func:`~numpyro_mfdiff._sampling.compile_deterministic`) and ``diagnostics``.
    """
    chain_count(num_samples, num_chains)
    if method not in ("generator", "ode"):
        raise ValueError(f"method must be 'generator' or 'ode', got {method!r}")
    y = np.asarray(check(observations))
    if y.ndim != 1:
        raise ValueError("to_inference_data takes a single observation, not a batch")
    k_post, k_pp = jax.random.split(rng_key)
    post = samplers[method](
        k_post,
        observations,
        num_samples,
        fidelity=fidelity,
        group_by_chain=True,
        num_chains=num_chains,
    )
    prior_draws, prior_predictive = (
        _stored_prior(state, deterministic, num_samples) if prior else (None, None)
    )
    ref = refinement(y, fidelity)
    attrs = _attrs(method, ref, low_ess(observations), diagnostics)
    groups = Groups(
        posterior_predictive, log_likelihood, prior_draws, prior_predictive, attrs=attrs
    )
    return from_draws(
        model,
        post,
        {k: np.asarray(v) for k, v in observations.items()},
        k_pp,
        observed_sites=list(state.spec.observed_shapes),
        model_args=state.args,
        model_kwargs=state.kwargs,
        groups=groups,
    )


def _stored_prior(state, deterministic, num_samples):
    """``(prior, prior_predictive)`` from the first ``num_samples`` valid stored prior
    simulations: constrained latent and deterministic sites, observed sites."""
    from ._sampling import with_deterministic

    sims, spec = state.simulations, state.spec
    idx = np.flatnonzero(sims.valid)[:num_samples]
    theta = jax.vmap(spec.constrain)(sims.theta[idx])
    return (
        with_deterministic(deterministic, theta, sims.y[idx]),
        jax.vmap(spec.unravel_obs)(sims.y[idx]),
    )


def _attrs(method, ref, ess_low, diagnostics):
    """``attrs`` of :func:`to_inference_data`: the sampler, the likelihood-weight ESS, the
    simulations spent and, for a refined observation (``ref``), the refinement's figures."""
    attrs = dict(
        inference_library="numpyro_mfdiff",
        sampler=method,
        fidelity="high" if ref is not None else "low",
        ess_likelihood=float(ess_low),
        num_simulations=int(diagnostics.get("num_simulations", 0)),
        num_failed_simulations=int(diagnostics.get("num_failed", 0)),
    )
    if ref is not None:
        attrs.update(
            ess_refined=ref.ess,
            num_high_fidelity_simulations=ref.num_high_fidelity,
            refinement_rounds=len(ref.rounds),
            kde_bandwidth=[float(b) for k in ref.kdes for b in k.bandwidth],
        )
    return attrs
