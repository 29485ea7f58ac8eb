"""The refinement methods of :class:`~numpyro_mfdiff.MFDiff`: one observation or a
batch (a mixin over :class:`~numpyro_mfdiff._core.Core`)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from . import _model, _pooled
from ._bank import build_bank
from ._core import Core
from ._network import generate
from ._pooled import batch_checks
from ._progress import progress
from ._refinement import HighFidelity, OdeConfig
from ._state import obs_key

__all__ = ["RefineMethods"]


class RefineMethods(Core):
    """Refinement of one observation or a batch."""

    # ----------------------------------------------------------- refinement
    def refine(
        self,
        rng_key,
        observations,
        model=None,
        num_simulations: int | None = None,
        *,
        rounds: int | None = None,
        target_ess: float | None = None,
        max_simulations: int | None = None,
        inflation: float = 1.5,
        prior_fraction: float = 0.1,
        num_labels: int | None = None,
        train_steps: int | None = None,
        smoothing: float | None = None,
        model_args=None,
        model_kwargs=None,
        engine: str = "auto",
    ):
        """Refine the posterior of one observation (or a batch) with more simulations.

        Two engines for one observation (``engine``; ``"auto"`` picks SMC above 10
        latent coordinates; up to 10, for a model JAX differentiates, when ``G_low``'s
        draws spread at most 4 times the variance of SMC's Laplace start ``q``, it draws
        a first stage from ``q`` and continues by importance sampling from ``q`` (engine
        ``"smc"``) when those draws keep an ESS of half their number at the posterior;
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
        1`` form the refined pool that :meth:`sample_ode` and ``G_high`` are labelled from
        (``G_high``, when the pool is one cluster, then mapped affinely onto the pool's
        weighted mean and covariance: a regression fit shrinks in high dimension).
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
        generator ``G_high(z)``; afterwards :meth:`get_samples` for this
        observation draws from ``G_high``. Calling ``refine`` again adds
        stages to the same observation.

        ``refine(key, obs, model=hf, max_simulations=B)`` spends at most ``B``
        simulations of ``hf`` and chooses the rest: stages of ``B / 10``
        (100 to 2,000), the temperatures, and the smoothing.

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
        Afterwards :meth:`get_samples`, :meth:`sample_ode` and :meth:`ess` use
        the weighted bank for any observation; the rounds, the simulations and
        the batch's ESS before and after are in ``diagnostics["pooled"]``.

        Args:
            rng_key: a ``jax.random`` key.
            observations: one observation (dict site name -> value), or a batch
                of them (a leading axis on every site; see above).
            model: the high-fidelity NumPyro model, with the same latent and
                observed sites (names, shapes, supports). Default: the model
                of this inference (sequential refinement at the same fidelity,
                where the prior simulations also count as draws).
            num_simulations: simulations per stage (default: chosen from the
                budget, see above).
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
                (``G_high``'s labels and :meth:`sample_ode`): the ODE stops
                early on points shrunk towards their mean, a kernel smoothing
                that keeps the weighted mean and covariance (Liu & West).
                Without it the ODE returns the weighted simulations themselves
                and ``G_high`` regresses a piecewise-constant map, too narrow.
                Default ``None``: Silverman's bandwidth from the ESS and the
                dimension, per cluster of the weighted points, times the sd of
                the narrowest cluster's narrowest direction, so that separate
                modes keep their width (see ``diagnostics``); 0 turns it off.
            model_args, model_kwargs: arguments of ``model`` (default: those of :meth:`run`).
            engine: ``"auto"`` (default), ``"is"`` (importance sampling) or ``"smc"``
                (tempered SMC); see above. A batch always uses the pooled rounds.

        Returns:
            ``self``. Diagnostics (ESS before/after, simulations per fidelity,
            the stages with their temperatures, KDE bandwidths, the smoothing,
            timings) are in ``diagnostics["refinements"]``.
        """
        from . import _refine

        self._require_sims()
        y = self._check(observations, warn=False, sampler="refine")
        settings = _refine.check_settings(
            rounds=rounds,
            num_simulations=num_simulations,
            max_simulations=max_simulations,
            num_labels=num_labels or self.num_labels,
            train_steps=train_steps or self._config.train_steps,
            inflation=inflation,
            prior_fraction=prior_fraction,
            target_ess=target_ess,
            smoothing=smoothing,
            engine=engine,
        )
        st = self._state
        high = _refine.high_fidelity_model(
            st.spec,
            self._inner_model(),
            st.args,
            st.kwargs,
            self._high_model(model),
            model_args,
            model_kwargs,
        )
        if y.ndim == 2:
            given = dict(num_simulations=num_simulations, target_ess=target_ess)
            given.update(num_labels=num_labels, train_steps=train_steps, smoothing=smoothing)
            given.update(engine=None if engine == "auto" else engine)
            batch_checks(high.same, {k: v for k, v in given.items() if v is not None})
            return self._refine_batch(rng_key, y, settings)
        log_prior, prior_draw = self._prior_fns()
        key = obs_key(y)
        ref = st.refinements.get(key)
        if ref is None:
            prior_theta = st.simulations.theta if high.same else None
            ref = _refine.new_refinement(
                y,
                st.spec.dim,
                st.bank.log_likelihood(jnp.asarray(y)),
                prior_theta,
                log_prior,
                st.proposals,
                st.bank.log_weight,
            )
        ref = _refine.refine(
            rng_key,
            y,
            ref,
            high,
            self._config.refine_context(st.spec),
            **settings,
            log_prior=log_prior,
            prior_draw=prior_draw,
            low_draw=self._low_draw,
            low=HighFidelity(self._inner_model(), st.args, st.kwargs, st.spec, True),
        )
        self._state = self._state.with_refinement(key, ref)
        self.diagnostics.record_refinement(key, observations, ref)
        return self

    def _refine_batch(self, rng_key, ys, s):
        """The rounds of a batched refinement of flat observations ``ys`` (B, M) with the
        settings ``s`` of ``check_settings`` (:mod:`~numpyro_mfdiff._pooled`)."""
        cfg, st = self._config, self._state
        plans = _pooled.plan_rounds(s["budget"], ys.shape[0], s["max_stages"], s["prior_fraction"])
        log_prior, prior_draw = self._prior_fns()
        proposals = st.proposals or _pooled.Proposals(int(st.simulations.theta.shape[0]))
        ess_before = list(self._low_summary(ys))[1]
        record = self.diagnostics.get("pooled") or dict(num_simulations=0, rounds=[])
        for plan in plans:
            t0 = time.perf_counter()
            rng_key, k_prop, k_sim, k_label, k_fit = jax.random.split(rng_key, 5)
            theta, kde = _pooled.propose(
                k_prop, self._low_draw, ys, plan, prior_draw, s["inflation"], self.spec.dim
            )
            stage = len(proposals.kdes) + 1
            new = self._simulate_at(k_sim, theta, f"refining the batch (round {stage})", stage)
            sims = _pooled.join(st.simulations, new)
            proposals = _pooled.add_round(proposals, kde, plan)
            lw = _pooled.bank_log_weight(log_prior(jnp.asarray(sims.theta)), proposals, sims.theta)
            bank = build_bank(self.spec, sims, lw, num_prior=cfg.num_simulations)
            self._state = st = st.replace(
                simulations=sims, bank=bank, proposals=proposals, focus=np.asarray(ys)
            )
            self._compiled = {}
            ess = list(self._low_summary(ys))[1]
            self.fit(k_fit, self.label(k_label))
            record["num_simulations"] += theta.shape[0]
            record["rounds"].append(_pooled.round_record(plan, new, ess, time.perf_counter() - t0))
        record.update(
            num_observations=int(ys.shape[0]),
            ess_before=np.asarray(ess_before).tolist(),
            ess_after=ess.tolist(),
        )
        self.diagnostics.record(pooled=record)
        return self

    def _simulate_at(self, key, theta, desc, stage):
        """Simulations (:class:`~numpyro_mfdiff._model.Simulations`) of this inference's
        model at unconstrained ``theta`` (n, D), with its progress bar, checkpoints
        (``<checkpoint_dir>/pooled/round-<stage>``) and executor."""
        cfg, st = self._config, self._state
        ckpt = None
        if cfg.checkpoint_dir is not None:
            ckpt = cfg.checkpoint_dir / "pooled" / f"round-{stage}"
        with progress(theta.shape[0], desc, cfg.progress_bar) as update:
            return _model.simulate(
                key,
                self._inner_model(),
                st.spec,
                theta.shape[0],
                st.args,
                st.kwargs,
                cfg.simulation_chunk_size,
                update,
                theta=jnp.asarray(theta),
                checkpoint=ckpt,
                executor=cfg.executor,
                max_failure_fraction=cfg.max_failure_fraction,
            )

    @property
    def ode_config(self) -> OdeConfig:
        """The ODE settings (schedule, time grid, solver, ``prune_tol``) of the refined
        Monte Carlo-score ODE, as :func:`~numpyro_mfdiff._refine.ode_draw` takes them."""
        return self._config.ode

    def _low_draw(self, key, y, n):
        """Unconstrained (n, D) draws for flat ``y`` (M,) from the low-fidelity sampler:
        ``G_low`` when fitted, else the ODE over the prior simulations."""
        z = jax.random.normal(key, (n, self.spec.dim))
        if self.generator is not None:
            return np.asarray(generate(self.generator, jnp.asarray(y), z))
        return self._ode_unconstrained(y, z, fidelity="low")[0]
