"""Refinement of a built inference as functions of its settings and state: one
observation (:func:`refine_observation`, through :mod:`~numpyro_mfdiff._refine`) or a
batch (:func:`refine_batch`, through :mod:`~numpyro_mfdiff._pooled`). Each returns a
new :class:`~numpyro_mfdiff._state.State` and the records of what it did."""

from __future__ import annotations

import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import _compiled as C
from . import _pooled, _stages
from ._bank import build_bank
from ._refinement import HighFidelity, check_settings, high_fidelity_model
from ._state import obs_key

__all__ = ["settings", "high_fidelity", "refine_observation", "refine_batch"]


def settings(config, **given) -> dict:
    """The arguments of ``refine`` validated (:func:`~numpyro_mfdiff._refinement.check_settings`),
    ``num_labels`` and ``train_steps`` defaulting to the config's."""
    given["num_labels"] = given["num_labels"] or config.num_labels
    given["train_steps"] = given["train_steps"] or config.train_steps
    return check_settings(**given)


def high_fidelity(state, model=None, model_args=None, model_kwargs=None) -> HighFidelity:
    """The model refinement simulates (default: the state's), checked against its spec."""
    return high_fidelity_model(
        state.spec,
        C.inner_model(state),
        state.args,
        state.kwargs,
        C.high_model(state, model),
        model_args,
        model_kwargs,
    )


def refine_observation(config, state, rng_key, y, s, high, low_draw, cache=None):
    """Refine flat observation ``y`` (M,) with the settings ``s`` of :func:`settings`,
    simulating ``high`` (:func:`high_fidelity`); continues the state's refinement of
    ``y`` when there is one. ``low_draw(config, state, key, y, n) -> (n, D)``: the
    low-fidelity sampler the first stage starts from
    (:func:`~numpyro_mfdiff._samplers.low_draw`). Returns ``(state with the
    refinement, its record)``."""
    from . import _refine

    log_prior, prior_draw = C.prior(state, cache)
    key = obs_key(y)
    ref = state.refinements.get(key)
    if ref is None:
        ref = _refine.new_refinement(
            y,
            state.spec.dim,
            state.bank.log_likelihood(jnp.asarray(y)),
            state.simulations.theta if high.same else None,
            log_prior,
            state.proposals,
            state.bank.log_weight,
        )
    ref = _refine.refine(
        rng_key,
        y,
        ref,
        high,
        config.refine_context(state.spec),
        **s,
        log_prior=log_prior,
        prior_draw=prior_draw,
        low_draw=partial(low_draw, config, state),
        low=HighFidelity(C.inner_model(state), state.args, state.kwargs, state.spec, True),
    )
    return state.with_refinement(key, ref), ref


def refine_batch(
    config, state, rng_key, ys, s, low_draw, record=None, cache=None, fast_likelihood=True
):
    """The rounds of a batched refinement of flat observations ``ys`` (B, M) with the
    settings ``s`` of :func:`settings`, each proposing around ``low_draw``'s draws (as
    :func:`refine_observation`), continuing the ``pooled`` ``record`` (a dict, or
    None). Returns ``(state, record, stage records)``: the bank joined by the rounds'
    simulations and ``G_low`` relabelled and refitted; the stage records (label stats,
    training history, generator check per round) in order, for the diagnostics."""
    plans = _pooled.plan_rounds(s["budget"], ys.shape[0], s["max_stages"], s["prior_fraction"])
    log_prior, prior_draw = C.prior(state, cache)
    proposals = state.proposals or _pooled.Proposals(int(state.simulations.theta.shape[0]))
    ess_before = list(C.low_summary(state, ys, cache=cache))[1]
    record = record or dict(num_simulations=0, rounds=[])
    records = []
    for plan in plans:
        t0 = time.perf_counter()
        rng_key, k_prop, k_sim, k_label, k_fit = jax.random.split(rng_key, 5)
        draw = partial(low_draw, config, state)
        theta, kde = _pooled.propose(
            k_prop, draw, ys, plan, prior_draw, s["inflation"], state.spec.dim
        )
        stage = len(proposals.kdes) + 1
        new = _stages.run_simulations(
            config,
            state,
            k_sim,
            theta.shape[0],
            theta,
            desc=f"refining the batch (round {stage})",
            checkpoint=f"pooled/round-{stage}",
        )
        sims = _pooled.join(state.simulations, new)
        proposals = _pooled.add_round(proposals, kde, plan)
        lw = _pooled.bank_log_weight(log_prior(jnp.asarray(sims.theta)), proposals, sims.theta)
        bank = build_bank(state.spec, sims, lw, num_prior=config.num_simulations)
        state = state.replace(
            simulations=sims, bank=bank, proposals=proposals, focus=np.asarray(ys)
        )
        ess = list(C.low_summary(state, ys, cache=cache))[1]
        state, triples, stats = _stages.label(config, state, k_label, fast_likelihood)
        state, history, check = _stages.fit(config, state, k_fit, triples, fast_likelihood)
        records += [stats, dict(train_history=history), check]
        record["num_simulations"] += theta.shape[0]
        record["rounds"].append(_pooled.round_record(plan, new, ess, time.perf_counter() - t0))
    record.update(
        num_observations=int(ys.shape[0]),
        ess_before=np.asarray(ess_before).tolist(),
        ess_after=ess.tolist(),
    )
    return state, record, records
