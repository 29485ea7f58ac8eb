"""BlackJAX NUTS with Stan-style window adaptation, one ``vmap``-ed chain per key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.base import get_filter_adapt_info_fn
from jax.flatten_util import ravel_pytree
from numpyro.infer import init_to_sample
from numpyro.infer.util import initialize_model

from .._arviz import az
from .._checks import positive_int, real
from ._problem import _Problem, _raw_key

__all__ = ["nuts"]


def nuts(
    model: Callable,
    observations: dict[str, Any],
    rng_key: jax.Array,
    *,
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    target_accept: float = 0.8,
    prior: bool = False,
    posterior_predictive: bool = False,
    log_likelihood: bool = True,
) -> az.InferenceData:
    """Run BlackJAX NUTS (Stan-style window adaptation per chain) on ``model | observations``.

    Each chain gets its own key and an initial point drawn from the prior
    (``init_to_sample``), runs ``num_warmup`` steps of ``blackjax.window_adaptation`` (diagonal
    mass matrix, dual-averaging step size targeting ``target_accept``) and then ``num_samples``
    NUTS steps; chains are ``vmap``-ed.

    Args:
        model: NumPyro model callable.
        observations: observed site name -> value; the model is conditioned with
            ``numpyro.handlers.condition``.
        rng_key: ``jax.random`` key.
        num_chains, num_warmup, num_samples: chain layout (``num_warmup`` may be 0: no tuning,
            step size 0.1 and unit mass matrix).
        model_args, model_kwargs: passed to the model.
        target_accept: target mean acceptance probability of the step-size adaptation.
        prior, posterior_predictive, log_likelihood: groups as in
            :meth:`MFDiff.to_inference_data` (see the module docstring); ``prior`` (off by
            default here: it simulates the model) draws ``num_chains * num_samples`` prior
            and prior predictive samples as one chain.

    Returns:
        ``az.InferenceData`` with ``posterior`` (constrained latent and deterministic sites,
        shape ``(num_chains, num_samples, *site_shape)``), ``sample_stats`` (``diverging``,
        ``acceptance_rate``, ``step_size``, ``n_steps``, ``tree_depth``, ``energy``, ``lp`` =
        unconstrained log joint incl. Jacobian), ``observed_data`` (every observed site, from
        ``observations`` or the model arguments), ``log_likelihood`` (per observed site,
        ``(num_chains, num_samples, *batch_shape)``) and the groups asked for. ``idata.attrs`` holds
        ``num_gradient_evaluations`` (leapfrog steps of warmup and sampling, all chains, plus
        one initial gradient per chain: the number of model solves with gradients) and
        ``num_gradient_evaluations_warmup``.
    """
    num_chains = positive_int("num_chains", num_chains)
    num_samples = positive_int("num_samples", num_samples)
    num_warmup = positive_int("num_warmup", num_warmup, 0)
    target_accept = real("target_accept", target_accept, 0.0, 1.0, low_open=True, high_open=True)

    key = _raw_key(rng_key)
    key_setup, key_init, key_run = jax.random.split(key, 3)
    prob = _Problem(
        model, observations, model_args, model_kwargs, key_setup, prior or posterior_predictive
    )

    init_keys = jax.random.split(key_init, num_chains)
    init_info = initialize_model(
        init_keys,
        prob.model,
        init_strategy=init_to_sample,
        model_args=prob.args,
        model_kwargs=prob.kwargs,
    )
    x0 = jax.vmap(lambda z: ravel_pytree(z)[0])(init_info.param_info.z)  # (C, d)
    one_chain = _chain(prob.log_joint, prob.dim, num_warmup, num_samples, target_accept)
    xs, stats, warm_steps = jax.jit(jax.vmap(one_chain))(jax.random.split(key_run, num_chains), x0)
    posterior = jax.jit(jax.vmap(jax.vmap(prob.postprocess)))(xs)
    meta = _meta(num_warmup, target_accept, num_chains, stats["n_steps"], warm_steps)
    return prob.inference_data(
        key,
        posterior,
        stats,
        meta,
        prior=prior,
        posterior_predictive=posterior_predictive,
        log_likelihood=log_likelihood,
    )


def _chain(logdensity, dim, num_warmup, num_samples, target_accept):
    """``(key, x_init (d,)) -> (draws (S, d), stats, warmup leapfrog steps)``: one NUTS chain
    (window adaptation unless ``num_warmup`` is 0: then step size 0.1, unit mass matrix)."""

    def one_chain(key, x_init):
        key_warm, key_sample = jax.random.split(key)
        if num_warmup > 0:
            warmup = blackjax.window_adaptation(
                blackjax.nuts,
                logdensity,
                target_acceptance_rate=target_accept,
                adaptation_info_fn=get_filter_adapt_info_fn(info_keys={"num_integration_steps"}),
            )
            (state, params), winfo = warmup.run(key_warm, x_init, num_steps=int(num_warmup))
            warm_steps = jnp.sum(winfo.info.num_integration_steps)
        else:
            state = blackjax.nuts.init(x_init, logdensity)
            params = {"step_size": jnp.asarray(0.1), "inverse_mass_matrix": jnp.ones(dim)}
            warm_steps = jnp.zeros((), jnp.int32)
        step = blackjax.nuts(logdensity, **params).step

        def body(s, k):
            s, info = step(k, s)
            stats = {
                "diverging": info.is_divergent,
                "acceptance_rate": info.acceptance_rate,
                "n_steps": info.num_integration_steps,
                "tree_depth": info.num_trajectory_expansions,
                "energy": info.energy,
                "lp": s.logdensity,
            }
            return s, (s.position, stats)

        _, (xs, stats) = jax.lax.scan(body, state, jax.random.split(key_sample, num_samples))
        stats["step_size"] = jnp.full((num_samples,), params["step_size"])
        return xs, stats, warm_steps

    return one_chain


def _meta(num_warmup, target_accept, num_chains, n_steps, warm_steps):
    """``idata.attrs`` of a NUTS run: one gradient of the log density per leapfrog step
    (+ one per chain at the start)."""
    warm = int(np.sum(np.asarray(warm_steps, np.int64)))
    return {
        "inference_library": "blackjax",
        "sampler": "nuts",
        "num_warmup": int(num_warmup),
        "target_accept": float(target_accept),
        "num_gradient_evaluations_warmup": warm,
        "num_gradient_evaluations": warm
        + int(np.sum(np.asarray(n_steps, np.int64)))
        + int(num_chains),
    }
