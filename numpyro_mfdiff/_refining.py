"""Refinement of a built inference as functions of its settings and state: one
observation (:func:`refine_observation`, through :mod:`~numpyro_mfdiff.refine._refine`) or a
batch (:func:`refine_batch`, through :mod:`~numpyro_mfdiff.refine._pooled`). Each returns a
new :class:`~numpyro_mfdiff._state.State` and the records of what it did."""

from __future__ import annotations

import dataclasses
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import _compiled as C
from . import _stages
from ._bank import build_bank
from ._state import obs_key
from .refine import _pooled
from .refine._refinement import HighFidelity, check_settings, high_fidelity_model, new_refinement

__all__ = ["RefineSettings", "high_fidelity", "refine_observation", "refine_batch"]


@dataclasses.dataclass(frozen=True)
class RefineSettings:
    """The settings of one :meth:`MFDiff.refine <numpyro_mfdiff.MFDiff.refine>` call, its
    keyword arguments but the model's; :meth:`plan` validates them (a ``ValueError``
    naming the first bad one) into the budget, stage size and stage count.

    Attributes:
        num_simulations: simulations per stage (default: chosen from the
            budget: :func:`refine_observation`).
        rounds: the most stages (default: until the budget is spent).
        target_ess: stop after the stage whose importance ESS at the
            posterior (temperature 1) reaches it; a warning when the budget
            runs out first.
        max_simulations: budget of simulations of ``model`` for this call
            (default: ``rounds * num_simulations`` when ``num_simulations``
            is set, else 2,000).
        inflation: factor on the KDE bandwidth (> 0); above 1 widens the
            proposal around the simulations.
        prior_fraction: share of each stage's proposals drawn from the
            prior, in [0, 1).
        num_labels: ODE-labelled noise/parameter pairs for ``G_high``
            (default: ``num_labels`` of this inference).
        train_steps: training steps of ``G_high`` (default: those of ``G_low``).
        smoothing: kernel sd ``h`` in [0, 1), in units of the refined
            posterior's whitened sd, of the refined ODE's end point
            (``G_high``'s labels and ``sample_ode``): the ODE stops
            early on points shrunk towards their mean, a kernel smoothing
            that keeps the weighted mean and covariance (Liu & West).
            Without it the ODE returns the weighted simulations themselves
            and ``G_high`` regresses a piecewise-constant map, too narrow.
            Default ``None``: Silverman's bandwidth from the ESS and the
            dimension, per cluster of the weighted points, times the sd of
            the narrowest cluster's narrowest direction, so that separate
            modes keep their width, and lowered for a model with non-centred
            sites until it widens no centred coordinate by over 5% (see
            ``diagnostics``); 0 turns it off.
        engine: ``"auto"`` (default), ``"is"`` (importance sampling) or ``"smc"``
            (tempered SMC): :func:`refine_observation`. A batch always uses the pooled rounds.
    """

    num_simulations: int | None = None
    rounds: int | None = None
    target_ess: float | None = None
    max_simulations: int | None = None
    inflation: float = 1.5
    prior_fraction: float = 0.1
    num_labels: int | None = None
    train_steps: int | None = None
    smoothing: float | None = None
    engine: str = "auto"

    def replace(self, **changes) -> RefineSettings:
        return dataclasses.replace(self, **changes)

    def plan(self, config) -> dict:
        """The settings validated and converted
        (:func:`~numpyro_mfdiff.refine._refinement.check_settings`: ``budget``, ``stage``,
        ``max_stages``...), ``num_labels`` and ``train_steps`` defaulting to the
        ``config``'s."""
        return check_settings(
            rounds=self.rounds,
            num_simulations=self.num_simulations,
            max_simulations=self.max_simulations,
            num_labels=self.num_labels or config.num_labels,
            train_steps=self.train_steps or config.train_steps,
            inflation=self.inflation,
            prior_fraction=self.prior_fraction,
            target_ess=self.target_ess,
            smoothing=self.smoothing,
            engine=self.engine,
        )

    def batch_given(self) -> dict:
        """The settings given that only one observation's refinement takes (a batch's
        refinement refuses them: :func:`~numpyro_mfdiff.refine._pooled.batch_checks`)."""
        given = dict(num_simulations=self.num_simulations, target_ess=self.target_ess)
        given.update(num_labels=self.num_labels, train_steps=self.train_steps)
        given.update(smoothing=self.smoothing)
        given.update(engine=None if self.engine == "auto" else self.engine)
        return {k: v for k, v in given.items() if v is not None}


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
    """Refine flat observation ``y`` (M,) with the settings ``s`` of :meth:`RefineSettings.plan`,
    simulating ``high`` (:func:`high_fidelity`); continues the state's refinement of
    ``y`` when there is one. ``low_draw(config, state, key, y, n) -> (n, D)``: the
    low-fidelity sampler the first stage starts from
    (:func:`~numpyro_mfdiff._samplers.low_draw`). Returns ``(state with the
    refinement, its record)``.

    Two engines for one observation (``engine``; ``"auto"`` picks SMC above 10
    latent coordinates; up to 10, for a model JAX differentiates, when ``G_low``'s
    draws spread at most 4 times the variance of SMC's Laplace start ``q``, it draws
    a first stage from ``q`` (at most a quarter of the budget) and continues by
    importance sampling from ``q`` (engine ``"smc"``) when those draws keep an ESS of
    half their number at the posterior;
    else importance sampling from KDEs (``"is"``, the probe its first round); a
    further call continues with the engine of the first; the choice is in
    ``diagnostics["refinements"][...]["engine"]``, docs/method.md section 6).

    ``engine="smc"``: adaptive tempered SMC with MCMC moves (BlackJAX; docs/method.md,
    section 6). Particles (as many as let the budget pay max(24, 0.6 d) stages, 60 to
    1,000) drawn from a Gaussian (for models JAX differentiates a Laplace approximation
    found from the mean of ``G_low``'s draws at ``y``, covariance times 1.1^2; else the mean and
    covariance of those draws times ``inflation^2``) mixed with a ``prior_fraction``
    of prior draws. When that start ``q`` is close (the first stage's importance
    weights at the posterior keep an ESS of half the particles), the rest of the
    budget is plain importance sampling from ``q`` (stages ``"is"``). Otherwise the
    particles move along the
    bridge ``q^(1 - l) (p(theta) p(y | theta))^l``, each stage raising ``l`` so that the
    ESS of the increment is half the particles, resampling a twentieth of them and
    running from each a chain of 19 MCMC moves whose every state is kept (waste-free
    SMC; the random walk instead moves every particle 5 times): HMC with 5 leapfrog
    steps for models JAX differentiates (mass matrix the particles' covariance, step
    size tuned to the last stage's acceptance), random-walk Metropolis for external
    simulators (proposal covariance ``2.38^2 / d`` times the particles').
    ``max_simulations`` counts every evaluation of ``model``: each log- likelihood, each
    gradient (one per leapfrog step; the value comes with it) and each simulation of an
    external model, the Laplace search's included; a stage of ``N`` particles costs
    about ``6.8 N`` with HMC and ``8 N`` with the random walk, and each stage's
    evaluations are in the diagnostics' rounds. Once at ``l = 1`` the budget left moves
    the particles further at the posterior, and the particles of every stage at ``l =
    1`` form the refined pool that ``sample_ode`` and ``G_high`` are labelled from
    (``G_high``, when the pool is one cluster, then mapped affinely onto the pool's
    weighted mean and covariance: a regression fit shrinks in high dimension; for a
    model with non-centred sites, fitted and mapped in their centred coordinates,
    docs/method.md).
    ``num_simulations`` does not size SMC's stages; ``rounds`` caps their number.

    ``engine="is"``: adaptive sequential importance sampling (METHOD.md,
    sections 5 and 8), in stages. Each stage targets ``p(theta) p(y | theta)^lam``, raising the
    temperature ``lam`` from 0 as far as the simulations gathered so far
    still represent it (a pooled ESS of at least half a stage, or a
    conditional ESS of the increment of 1/2, as adaptive tempered SMC),
    then proposes from a Gaussian KDE of those simulations resampled at
    that temperature (per cluster, Scott's bandwidth from the ESS times
    ``inflation``) and, for a ``prior_fraction``, from the prior, and
    simulates ``model`` there. The first stage of a refinement with
    another model proposes around ``G_low``'s draws; at the same fidelity
    the prior simulations are the starting pool. Every simulation is kept,
    weighted ``p(y | theta) p(theta) / q(theta)`` with ``q`` the mixture of
    all proposals so far (the prior included). Finally the weighted
    Monte Carlo-score ODE labels ``(z, theta)`` pairs for an unconditional
    generator ``G_high(z)``; afterwards ``get_samples`` for this
    observation draws from ``G_high``. Calling ``refine`` again adds
    stages to the same observation.

    ``refine(key, obs, model=hf, max_simulations=B)`` spends at most ``B``
    simulations of ``hf`` and chooses the rest: stages of ``B / 10``
    (100 to 2,000), the temperatures, and the smoothing.
    """
    from .refine import _refine

    log_prior, prior_draw = C.prior(state, cache)
    key = obs_key(y)
    ref = state.refinements.get(key)
    if ref is None:
        ref = new_refinement(
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
        config.refine_context(state.spec, C.centring(state, cache)),
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
    settings ``s`` of :meth:`RefineSettings.plan`, each proposing around ``low_draw``'s draws (as
    :func:`refine_observation`), continuing the ``pooled`` ``record`` (a dict, or
    None). Returns ``(state, record, stage records)``: the bank joined by the rounds'
    simulations and ``G_low`` relabelled and refitted; the stage records (label stats,
    training history, generator check per round) in order, for the diagnostics.

    A batch of observations (a leading axis ``B`` on every site) shares one
    budget and one amortized generator instead, at the same fidelity: each
    round draws from ``G_low`` at every observation of the batch, puts a
    Gaussian kernel on each draw (Scott's factor times ``inflation`` on the
    covariance of that observation's draws), adds a ``prior_fraction`` of
    prior draws, and simulates this inference's model there. The simulations
    join the prior bank, every point weighted ``p(theta) / q(theta)`` with
    ``q`` the mixture of the prior and all rounds' kernels, and ``G_low`` is
    relabelled from the weighted bank (a quarter of its labels at the batch's
    observations) and fitted again. The budget goes into two equal rounds
    (the second proposes from the relabelled ``G_low``) when each gives every
    observation at least two kernels, else one; ``rounds`` overrides it.
    Afterwards ``get_samples``, ``sample_ode`` and ``ess`` use
    the weighted bank for any observation; the rounds, the simulations and
    the batch's ESS before and after are in ``diagnostics["pooled"]``.
    """
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
        # the check is None when no row has enough ESS to judge G_low by (as in fit)
        records += [stats, dict(train_history=history, generator_check=check)]
        record["num_simulations"] += theta.shape[0]
        record["rounds"].append(_pooled.round_record(plan, new, ess, time.perf_counter() - t0))
    record.update(
        num_observations=int(ys.shape[0]),
        ess_before=np.asarray(ess_before).tolist(),
        ess_after=ess.tolist(),
    )
    return state, record, records
