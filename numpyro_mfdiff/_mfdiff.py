"""The user-facing inference object: a thin orchestrator over the pure modules.

:class:`MFDiff` holds a frozen :class:`~numpyro_mfdiff._config.Config` (its settings),
a frozen :class:`~numpyro_mfdiff._state.State` (what the stages built: the simulations
and their :class:`~numpyro_mfdiff._bank.PriorBank`, the triples, the generators) that
each stage replaces, and the :class:`~numpyro_mfdiff._state.Diagnostics`.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import _model, _pooled
from ._bank import build_bank, check_generator, compile_ess, low_generator
from ._checks import (
    chain_count,
    count_failures,
    data_observations,
    model_callable,
    positive_int,
    real,
    split_run_arguments,
)
from ._config import Config
from ._label import label_triples
from ._network import fit_generator, generate
from ._pooled import FOCUS_SHARE, batch_checks
from ._progress import progress
from ._refinement import OdeConfig
from ._sampling import compile_deterministic, finish, make_draws, ode_low, prior_fns
from ._schedule import AbstractSchedule
from ._state import Diagnostics, LabelStats, OdeStats, SimulationStats, State, Timings, obs_key

__all__ = ["MFDiff"]


def _setting(name, doc, settable=False):
    """A property reading ``name`` of the config (settable: replacing the config)."""

    def get(self):
        return getattr(self._config, name)

    def set_(self, value):
        self._config = self._config.replace(**{name: value})

    return property(get, set_ if settable else None, doc=doc)


def _built(name, doc):
    """A read-only property reading ``name`` of the state."""
    return property(lambda self: getattr(self._state, name), doc=doc)


class MFDiff:
    """Amortized posterior sampling for a NumPyro model with a training-free diffusion.

    ``MFDiff(model).run(key)`` simulates the model from its prior once, labels
    ``(y, z, theta)`` triples by integrating the reverse-time probability-flow
    ODE with a Monte Carlo score over the prior simulations, and fits a
    generator ``G_low(y, z) -> theta``. Afterwards :meth:`get_samples` draws
    posterior samples for any observation with one network pass per sample.

    Latent sites (the prior) may have any shape and continuous support; the
    diffusion runs in their unconstrained coordinates (``biject_to``). Observed
    sites carry the simulator output and its noise.

    Args:
        model: a NumPyro model.
        num_simulations: prior simulations ``N``.
        observed_sites: names of the observed sites. Default: the sites the
            data given to :meth:`run` observes, else the sample sites no other
            site depends on.
        num_labels: labelled triples used to fit the generator.
        num_steps: ODE steps.
        solver: ``"dpm2m"`` (second-order exponential multistep), ``"dpm3m"`` (third
            order) or ``"ddim"`` (first order).
        grid: ``"geometric"`` (steps concentrated near ``t = 0``) or ``"uniform"``.
        t_min, t_max: end points of the time grid.
        schedule: forward-diffusion schedule (default :class:`LinearSchedule`).
        label_points: most prior points a labelling chunk weighs (those of
            largest likelihood); the dropped likelihood mass is reported, with a
            warning above 1%.
        prune_tol: likelihood mass :meth:`sample_ode` and labelling may drop per
            observation: points below it are skipped, exactly (see
            :func:`~numpyro_mfdiff._score.support_order`), so the target moves by
            at most ``prune_tol`` in total variation (1e-4 labels the quadratic 9%
            faster, and its ODE KL rises by about 1e-4: docs/benchmarks.md).
        label_smoothing: label each triple from its observation's weighted prior
            points smoothed by a Gaussian kernel, so that ``G_low`` does not
            learn the discrete points themselves. The kernel is chosen per
            observation: Silverman's factor from its likelihood-weight ESS and
            the dimension (at most 0.5) times the sd of its posterior's narrowest
            direction; the ODE stops where its noise reaches that sd, and the
            label is shrunk so that it keeps the weighted mean and covariance.
            Observations whose weighted points look multimodal or spiky along
            an axis of their covariance (bimodality coefficient >= 0.5 or
            kurtosis >= 5) are not smoothed. ``False``: the ODE's end point.
        width, depth, activation: generator MLP.
        heads, gate_scale: the output is a softmax-gated mixture of ``heads``
            values per coordinate, gates sharpened by ``gate_scale``, so the
            network can switch between modes without blurring between them.
        train_steps, batch_size, learning_rate, loss: generator fit.
        chunk_size: triples labelled per compiled call.
        simulation_chunk_size: prior simulations per compiled call (and per
            checkpoint file).
        ess_warning: warn when the likelihood-weight ESS of an observation is
            below this.
        progress_bar: show progress bars.
        max_failure_fraction: fraction of simulations, in ``[0, 1)``, that may
            fail (non-finite output, or an exception inside a simulator wrapped
            by :func:`external_simulator`). Failed simulations are left out
            with a warning giving the count and the first errors; beyond this
            fraction :meth:`simulate` stops with a ``RuntimeError``.
        checkpoint_dir: directory where prior simulation chunks are written
            as they finish (``<dir>/prior``). Rerunning with the same key and
            settings loads the finished chunks instead of simulating them
            again, so a killed run resumes; a directory written for another
            run is a ``ValueError``.
        executor: a ``concurrent.futures.Executor`` (a process pool, a Dask
            ``Client.get_executor()``, Ray's...) that runs the calls of
            simulators wrapped by :func:`external_simulator`. Results are
            gathered in order: the same as without it.
    """

    # internal switch: False forces the generic log_prob path in labelling (tests, benchmarks)
    _fast_likelihood = True

    def __init__(
        self,
        model,
        num_simulations: int = 20_000,
        *,
        observed_sites: Sequence[str] | None = None,
        num_labels: int = 20_000,
        num_steps: int = 100,
        solver: str = "dpm2m",
        grid: str = "geometric",
        t_min: float = 1e-4,
        t_max: float = 1.0 - 1e-4,
        schedule: AbstractSchedule | None = None,
        label_points: int = 65_536,
        prune_tol: float = 1e-6,
        label_smoothing: bool = True,
        width: int = 128,
        depth: int = 3,
        activation=jax.nn.gelu,
        heads: int = 4,
        gate_scale: float = 10.0,
        train_steps: int = 10_000,
        batch_size: int = 512,
        learning_rate: float = 5e-3,
        loss: str = "l1",
        chunk_size: int = 256,
        simulation_chunk_size: int = 10_000,
        ess_warning: float = 50.0,
        progress_bar: bool = True,
        max_failure_fraction: float = 0.2,
        checkpoint_dir: str | os.PathLike | None = None,
        executor=None,
    ):
        model_callable(model)
        config = Config(
            num_simulations=num_simulations,
            observed_sites=observed_sites,
            num_labels=num_labels,
            num_steps=num_steps,
            solver=solver,
            grid=grid,
            t_min=t_min,
            t_max=t_max,
            schedule=schedule,
            label_points=label_points,
            prune_tol=prune_tol,
            label_smoothing=label_smoothing,
            width=width,
            depth=depth,
            activation=activation,
            heads=heads,
            gate_scale=gate_scale,
            train_steps=train_steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            loss=loss,
            chunk_size=chunk_size,
            simulation_chunk_size=simulation_chunk_size,
            ess_warning=ess_warning,
            progress_bar=progress_bar,
            max_failure_fraction=max_failure_fraction,
            checkpoint_dir=checkpoint_dir,
            executor=executor,
        )
        self._setup(model, config, State(), Diagnostics())

    def _setup(self, model, config, state, diagnostics):
        self.model = model
        self._config, self._state, self.diagnostics = config, state, diagnostics
        self._compiled = {}  # compiled functions of the state, built on first use
        return self

    # ------------------------------------------------------- read-only views
    config = property(lambda self: self._config, doc="The settings (a frozen ``Config``).")
    state = property(lambda self: self._state, doc="What the stages built (a frozen ``State``).")
    bank = _built("bank", "The prior bank (``PriorBank``): the weighted prior points.")
    spec = _built("spec", "The model's sites (``ModelSpec``), after :meth:`simulate`.")
    simulations = _built("simulations", "The prior simulations (``Simulations``).")
    triples = _built("triples", "The labelled triples of the last :meth:`label` (a dict).")
    generator = _built("generator", "``G_low`` once fitted, else None.")
    default_observations = _built("default_observations", "The data given to :meth:`run`.")
    num_simulations = _setting("num_simulations", "Prior simulations ``N``.")
    observed_sites = _setting("observed_sites", "The observed sites asked for (or None).")
    num_labels = _setting("num_labels", "Labelled triples used to fit the generator.")
    num_steps = _setting("num_steps", "ODE steps.")
    solver = _setting("solver", "The ODE solver.")
    grid = _setting("time_grid", "The ODE's decreasing times.")
    schedule = _setting("schedule", "The forward-diffusion schedule.")
    label_points = _setting("label_points", "Most prior points a labelling chunk weighs.")
    prune_tol = _setting("prune_tol", "Likelihood mass the ODE may drop per observation.")
    label_smoothing = _setting("label_smoothing", "Whether labels are kernel-smoothed.")
    net_config = _setting("net_config", "The generator network's settings (a dict).")
    fit_config = _setting("fit_config", "The generator fit's settings (a dict).")
    chunk_size = _setting("chunk_size", "Triples labelled per compiled call.")
    simulation_chunk_size = _setting("simulation_chunk_size", "Simulations per compiled call.")
    ess_warning = _setting("ess_warning", "The ESS below which sampling warns.")
    progress_bar = _setting("progress_bar", "Whether progress bars show.")
    max_failure_fraction = _setting("max_failure_fraction", "Simulations that may fail.")
    checkpoint_dir = _setting("checkpoint_dir", "Where simulations are checkpointed.", True)
    executor = _setting("executor", "The executor of external simulators.", True)

    # ------------------------------------------------------------------ run
    def run(self, rng_key, *args, **kwargs):
        """Simulate the prior, label triples and fit ``G_low``; returns ``self``.

        ``args``/``kwargs`` are passed to the model, as in ``MCMC.run``:
        covariates as they are, and the data too, e.g. ``run(key, X, y=y_obs)``
        for ``def model(X, y=None)`` with ``numpyro.sample("y", ..., obs=y)``.
        An argument is data when leaving it out (``None``) turns observed
        sites into sampled ones; the prior simulations run without it, and its
        values become the default observations (``default_observations``) of
        :meth:`get_samples`, :meth:`sample_ode`, :meth:`ess` and
        :meth:`to_inference_data` when they are called without observations.
        With data given, the observed sites are the sites it observes (unless
        ``observed_sites`` says otherwise; the data must then cover them all).

        Raises ``ValueError`` naming the site, before any simulation, for what
        the method cannot handle: discrete or improper latent sites, latent
        supports that depend on other latents, ``numpyro.factor`` sites, scaled
        sites (subsampled plates, ``handlers.scale``) and sites observed with
        data that is not a separate argument. ``numpyro.plate``,
        ``numpyro.deterministic`` (computed from the draws and returned by
        :meth:`get_samples`), several observed sites and discrete observed
        sites are supported.
        """
        k_sim, k_label, k_fit = jax.random.split(rng_key, 3)
        t0 = time.perf_counter()
        self.simulate(k_sim, *args, **kwargs)
        t_sim = time.perf_counter() - t0
        t0 = time.perf_counter()
        triples = self.label(k_label)
        t_label = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.fit(k_fit, triples)
        self.diagnostics.record(Timings(t_sim, t_label, time.perf_counter() - t0))
        return self

    def simulate(self, rng_key, *args, **kwargs):
        """Stage 1: check the model and simulate it ``num_simulations`` times from the prior.

        Stores and returns the simulations; enough for :meth:`sample_ode` and
        :meth:`ess` without fitting a generator. Failed simulations are left
        out with a warning; more than ``max_failure_fraction`` of them is a
        ``RuntimeError``. With ``checkpoint_dir`` finished chunks are written
        to disk and reused by a rerun with the same key.
        """
        cfg = self._config
        args, kwargs, data, observed = split_run_arguments(
            self.model, args, kwargs, cfg.observed_sites
        )
        spec = _model.inspect_model(self.model, args, kwargs, observed)
        default = data_observations(spec, data)
        self._state = self._state.replace(
            spec=spec, args=args, kwargs=kwargs, default_observations=default
        )
        ckpt = None if cfg.checkpoint_dir is None else cfg.checkpoint_dir / "prior"
        with progress(cfg.num_simulations, "simulating", cfg.progress_bar) as update:
            sims = _model.simulate(
                rng_key,
                self.model,
                spec,
                cfg.num_simulations,
                args,
                kwargs,
                cfg.simulation_chunk_size,
                update,
                checkpoint=ckpt,
                executor=cfg.executor,
                max_failure_fraction=cfg.max_failure_fraction,
            )
        failed = count_failures(sims, cfg.num_simulations)
        self._state = self._state.replace(simulations=sims, bank=build_bank(spec, sims))
        self._compiled = {}
        self.diagnostics.record(SimulationStats(cfg.num_simulations, failed, list(sims.errors)))
        return sims

    def label(self, rng_key):
        """Stage 2: labelled triples ``(y, z, theta)`` from the Monte Carlo-score ODE.

        Returns a dict of arrays ``y`` (T, M), ``z`` (T, D), ``theta`` (T, D)
        (standardised coordinates) and ``dropped`` (T,); also kept in
        ``.triples`` (saved by :meth:`save`). The observations are the simulated ones,
        drawn uniformly; after a batched :meth:`refine`, a quarter of the labels are at
        the batch's observations instead. The log-likelihoods of observed sites that
        are exponential families (Normal, Binomial, Poisson, Bernoulli, Categorical,
        Gamma, ...: :mod:`~numpyro_mfdiff._expfam`) are one matmul per chunk; other
        sites call ``log_prob`` for every (observation, simulation) pair.
        """
        self._require_sims()
        cfg, bank, sims = self._config, self.bank, self.simulations
        k_idx, k_z = jax.random.split(rng_key)
        valid_idx = np.flatnonzero(sims.valid)
        T = cfg.num_labels
        focus = self._state.focus
        n_focus = 0 if focus is None else int(FOCUS_SHARE * T)
        idx = np.asarray(
            jax.random.choice(
                k_idx, valid_idx, (T - n_focus,), replace=T - n_focus > valid_idx.size
            )
        )
        y = sims.y[idx]
        if n_focus:  # after a batched refinement, a share at the batch's observations
            y = np.concatenate([y, np.asarray(focus)[np.arange(n_focus) % focus.shape[0]]])
        y_std = bank.standardise_y(y)
        z = np.asarray(jax.random.normal(k_z, (T, self.spec.dim)))
        with progress(T, "labelling", cfg.progress_bar) as update:
            order, theta, dropped, used = label_triples(
                y,
                y_std,
                z,
                partial(bank.log_weights, fast=self._fast_likelihood),
                bank.points,
                cfg.schedule,
                cfg.time_grid,
                cfg.label_points,
                cfg.solver,
                cfg.chunk_size,
                update,
                tol=cfg.prune_tol,
                smooth=cfg.label_smoothing,
            )
        y_std, z = y_std[order], z[order]
        stats = LabelStats(float(dropped.max()), float(dropped.mean()), float(used.mean()))
        self.diagnostics.record(stats)
        triples = dict(y=y_std.astype(np.float32), z=z, theta=theta, dropped=dropped)
        self._state = self._state.replace(triples=triples)
        return triples

    def fit(self, rng_key, triples=None):
        """Stage 3: fit ``G_low`` on labelled triples (stored in ``.generator``).

        ``triples`` defaults to ``.triples``, the last :meth:`label` output
        (or the triples loaded by :meth:`load`).
        """
        self._require_sims()
        if triples is None:
            if self.triples is None:
                raise RuntimeError("no labelled triples yet: call .label(rng_key) first")
            triples = self.triples
        cfg = self._config
        k_init, k_fit = jax.random.split(rng_key)
        gen = low_generator(k_init, self.spec, self.bank, cfg.net_config)
        with progress(cfg.train_steps, "training", cfg.progress_bar) as update:
            gen, history = fit_generator(
                k_fit,
                gen,
                triples["y"],
                triples["z"],
                triples["theta"],
                progress=update,
                **cfg.fit_config,
            )
        self._state = self._state.replace(generator=gen)
        self.diagnostics.record(train_history=history)
        sims, key = self.simulations, jax.random.fold_in(rng_key, 1)
        check = check_generator(key, self.bank, gen, sims.y, sims.valid, self._fast_likelihood)
        self.diagnostics.record(generator_check=check)
        return gen

    # ------------------------------------------------------------- sampling
    def get_samples(
        self,
        rng_key,
        observations=None,
        num_samples: int = 1000,
        fidelity=None,
        *,
        group_by_chain: bool = False,
        num_chains: int = 1,
    ):
        """Posterior samples for one observation or a batch, one network pass each.

        Args:
            rng_key: a ``jax.random`` key.
            observations: dict from observed site name to value, at the
                site's shape or with a leading batch axis ``B`` on every site.
                ``None`` (default): the data passed to :meth:`run` as model
                arguments (``default_observations``); a ``ValueError`` if
                there is none.
            num_samples: samples per observation.
            fidelity: ``None`` (default) draws from ``G_high`` for an
                observation refined with :meth:`refine` and from ``G_low``
                otherwise; ``"low"`` always uses ``G_low``; ``"high"`` requires
                a refined observation.
            group_by_chain: split the draws into ``num_chains`` chains, as
                ``MCMC.get_samples(group_by_chain=True)``: shapes
                ``(num_chains, num_samples // num_chains, *site_shape)``
                (after the batch axis ``B`` for a batch). The draws are
                independent; chain ``c`` is the ``c``-th block of consecutive
                draws, so the same key gives the same draws either way.
            num_chains: a divisor of ``num_samples`` (as in
                :meth:`to_inference_data`).

        Returns:
            Dict from site name to constrained samples, shape
            ``(num_samples, *site_shape)``, or ``(B, num_samples, *site_shape)``
            for a batch: the latent sites, and the model's
            ``numpyro.deterministic`` sites computed from them (with the
            observed sites set to the observation, as ``MCMC`` does; under
            ``jit``, so a deterministic site that does not need the simulator
            does not run it).
        """
        num_samples = positive_int("num_samples", num_samples)
        num_chains = chain_count(num_samples, num_chains)
        y = self._check(observations, fidelity=fidelity)
        z = jax.random.normal(rng_key, (num_samples, self.spec.dim))
        rows = [y] if y.ndim == 1 else list(y)
        refs = [self._refinement(yi, fidelity) for yi in rows]
        if any(r is None for r in refs):
            self._require_generator()
        if y.ndim == 1:
            out = self._draw_refined(refs[0], y, z)
        elif all(r is None for r in refs):
            out = self._draws()[1](self.generator, jnp.asarray(y), z)
        else:
            outs = [self._draw_refined(r, yi, z) for r, yi in zip(refs, rows, strict=True)]
            out = jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
        return finish(self._deterministic(), out, y, group_by_chain, num_chains)

    def _draw_refined(self, ref, y, z):
        draw = self._draws()[0]
        if ref is None:
            return draw(self.generator, jnp.asarray(y), z)
        return draw(ref.generator, jnp.zeros((0,), jnp.float32), z)

    def sample_ode(
        self,
        rng_key,
        observations=None,
        num_samples: int = 1000,
        batch_size: int = 4096,
        fidelity=None,
        *,
        group_by_chain: bool = False,
        num_chains: int = 1,
    ):
        """Posterior samples from the Monte Carlo-score ODE, without the network.

        Slower than :meth:`get_samples` and more accurate. Points whose weight
        is negligible (at most ``prune_tol`` of the mass in total) are dropped
        first. For a refined observation (``fidelity`` as in
        :meth:`get_samples`) the ODE runs over the high-fidelity simulations
        with their importance weights. Same arguments (``observations=None``:
        the data passed to :meth:`run`; ``group_by_chain``, ``num_chains``) and
        return value (deterministic sites included) as :meth:`get_samples`.
        """
        self._require_sims()
        num_samples = positive_int("num_samples", num_samples)
        batch_size = positive_int("batch_size", batch_size)
        num_chains = chain_count(num_samples, num_chains)
        y = self._check(observations, fidelity=fidelity)
        if y.ndim == 2:
            keys = jax.random.split(rng_key, y.shape[0])
            outs = [
                self._ode_constrained(k, yi, num_samples, batch_size, fidelity)
                for k, yi in zip(keys, y, strict=True)
            ]
            out = jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
        else:
            out = self._ode_constrained(rng_key, y, num_samples, batch_size, fidelity)
        return finish(self._deterministic(), out, y, group_by_chain, num_chains)

    def _ode_constrained(self, rng_key, y, num_samples, batch_size, fidelity):
        """Constrained latent ODE draws (S, ...) for one flat observation ``y`` (M,)."""
        z = jax.random.normal(rng_key, (num_samples, self.spec.dim))
        theta, n_points, dropped = self._ode_unconstrained(y, z, fidelity, batch_size)
        self.diagnostics.record(OdeStats(n_points, dropped))
        return jax.vmap(self.spec.constrain)(jnp.asarray(theta))

    def _ode_unconstrained(self, y, z, fidelity=None, batch_size=4096):
        """Unconstrained ODE draws (S, D) for flat ``y`` and noise ``z`` (S, D), with the
        points used and the weight dropped: the refined weights when ``y`` is refined
        (and ``fidelity`` allows), else the likelihood weights of the prior simulations."""
        ref = self._refinement(y, fidelity)
        if ref is not None:
            from ._refine import ode_draw

            return ode_draw(self._config.ode, ref, z, batch_size)
        return ode_low(self.bank, self._config, y, z, batch_size)

    def ess(self, observations=None, fidelity=None):
        """Effective sample size of the weights the samplers use, per observation.

        For ``G_low``: the likelihood weights over the prior simulations; for a
        refined observation: the importance weights over the high-fidelity
        simulations (``fidelity`` as in :meth:`get_samples`). Returns a float,
        or an array (B,) for a batch. Small values (tens) mean the estimator
        rests on few simulations. ``observations=None``: the data passed to :meth:`run`.
        """
        self._require_sims()
        observations = self._observations(observations)
        y = self._check(observations, warn=False, fidelity=fidelity)
        rows = np.atleast_2d(y)
        refs = [self._refinement(yi, fidelity) for yi in rows]
        ess_low = self._cached("ess", lambda: compile_ess(self.bank))
        out = np.asarray(ess_low(jnp.asarray(rows)), np.float64)  # one compiled call
        out = np.asarray([out[i] if r is None else r.ess for i, r in enumerate(refs)])
        return float(out[0]) if y.ndim == 1 else out

    def fidelity(self, observations=None) -> str:
        """Which generator serves a single observation: ``"high"`` once refined, else ``"low"``."""
        y = _model.check_observations(self.spec, self._observations(observations))
        return "high" if self._refinement(y, None) is not None else "low"

    def print_summary(
        self,
        rng_key,
        observations=None,
        num_samples: int = 1000,
        prob: float = 0.9,
        *,
        num_chains: int = 1,
        fidelity=None,
        exclude_deterministic: bool = True,
    ):
        """Print the posterior of one observation as ``MCMC.print_summary`` does.

        Draws ``num_samples`` with :meth:`get_samples` (the key is required:
        nothing is stored between calls, so the table is reproducible),
        prints ``numpyro.diagnostics.print_summary`` of them (mean, std,
        median, the ``prob`` HPDI, n_eff, r_hat; the draws are independent,
        split into ``num_chains`` chains as in :meth:`get_samples`), then a
        line naming the sampler that served (``G_low``, or ``G_high`` for an
        observation refined with :meth:`refine`) with the ESS of its weights
        (:meth:`ess`). ``observations=None``: the data passed to :meth:`run`;
        ``fidelity`` as in :meth:`get_samples`; deterministic sites are left
        out unless ``exclude_deterministic=False``.
        """
        from numpyro.diagnostics import print_summary

        real("prob", prob, 0.0, 1.0, low_open=True, high_open=True)
        y = self._check(observations, warn=False)
        if y.ndim != 1:
            raise ValueError("print_summary takes a single observation, not a batch")
        samples = self.get_samples(
            rng_key, observations, num_samples, fidelity, group_by_chain=True, num_chains=num_chains
        )
        if exclude_deterministic:
            samples = {k: v for k, v in samples.items() if k in self.spec.latent_shapes}
        print_summary({k: np.asarray(v) for k, v in samples.items()}, prob=prob)
        ref = self._refinement(y, fidelity)
        ess = self.ess(observations, fidelity=fidelity)
        if ref is None:
            n = int(np.sum(self.simulations.valid))
            print(
                f"sampler: G_low (amortized generator); likelihood-weight ESS {ess:.1f} "
                f"of {n} prior simulations"
            )
        else:
            print(
                f"sampler: G_high (refined with {ref.num_high_fidelity} high-fidelity "
                f"simulations); importance-weight ESS {ess:.1f} (G_low's likelihood-weight "
                f"ESS {self.ess(observations, fidelity='low'):.1f})"
            )

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
    ):
        """Refine the posterior of one observation (or a batch) with more simulations.

        Adaptive sequential importance sampling (METHOD.md, sections 5 and 8),
        in stages. Each stage targets ``p(theta) p(y | theta)^lam``, raising the
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
                posterior (temperature 1) reaches it.
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

        Returns:
            ``self``. Diagnostics (ESS before/after, simulations per fidelity,
            the stages with their temperatures, KDE bandwidths, the smoothing,
            timings) are in ``diagnostics["refinements"]``.
        """
        from . import _refine

        self._require_sims()
        y = _model.check_observations(self.spec, observations)
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
        )
        st = self._state
        high = _refine.high_fidelity_model(
            st.spec, self.model, st.args, st.kwargs, model, model_args, model_kwargs
        )
        if y.ndim == 2:
            given = dict(num_simulations=num_simulations, target_ess=target_ess)
            given.update(num_labels=num_labels, train_steps=train_steps, smoothing=smoothing)
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
        ess_before = self._cached("ess", lambda: compile_ess(self.bank))(jnp.asarray(ys))
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
            ess = np.asarray(self._cached("ess", lambda: compile_ess(self.bank))(jnp.asarray(ys)))
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
                self.model,
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

    def _refinement(self, y, fidelity):
        """The refinement record serving flat observation ``y`` (M,) at ``fidelity``, or None."""
        if fidelity not in (None, "low", "high"):
            raise ValueError(f"fidelity must be None, 'low' or 'high', got {fidelity!r}")
        if fidelity == "low":
            return None
        ref = self._state.refinements.get(obs_key(y))
        if ref is None and fidelity == "high":
            raise ValueError(
                "no high-fidelity generator for this observation: call .refine(key, "
                "observations, model=...) first"
            )
        return ref

    def to_inference_data(self, rng_key, observations=None, num_samples=1000, **kwargs):
        """Posterior for one observation as ``az.InferenceData``.

        ``observations=None``: the data passed to :meth:`run` (``default_observations``).

        ``posterior`` (latent and deterministic sites, as :meth:`get_samples`
        with ``group_by_chain=True``) has dims ``chain``/``draw``; also ``observed_data``,
        ``prior``/``prior_predictive`` (``prior=True``), ``posterior_predictive``
        (``posterior_predictive=True``), ``log_likelihood`` (default on, for
        ``az.loo``/``az.compare``) and the method's diagnostics in ``attrs``.
        Keyword arguments: ``num_chains``, ``prior``, ``posterior_predictive``,
        ``log_likelihood``, ``method`` (``"generator"`` or ``"ode"``).
        """
        from ._arviz import to_inference_data

        if kwargs.get("method", "generator") == "generator":
            self._require_generator()
        self._require_sims()
        observations = self._observations(observations)
        return to_inference_data(
            rng_key,
            observations,
            num_samples,
            model=self.model,
            state=self._state,
            check=partial(self._check, warn=False),
            samplers={"generator": self.get_samples, "ode": self.sample_ode},
            refinement=self._refinement,
            low_ess=partial(self.ess, fidelity="low"),
            deterministic=self._deterministic(),
            diagnostics=self.diagnostics,
            **kwargs,
        )

    # ------------------------------------------------------------ save/load
    def save(self, path):
        """Save the prior simulations, the labelled triples and the generator to ``path``.

        One ``.npz`` file: simulations as arrays, the triples of the last
        :meth:`label` (if any), the generator with ``eqx.tree_serialise_leaves``
        (if fitted), the settings, a format version, the model's site shapes
        and a fingerprint of the model arguments. Load it with
        :meth:`MFDiff.load` and the same model.
        """
        from ._io import save

        self._require_sims()
        save(path, self._config, self._state, self.diagnostics)

    @classmethod
    def load(cls, path, model, *args, **kwargs):
        """Rebuild an :class:`MFDiff` for ``model`` from a file written by :meth:`save`.

        ``args``/``kwargs`` are the model arguments used in ``run``; data among
        them is taken out as in :meth:`run` (data keywords may be left out:
        the default observations are saved, and data given here replaces
        them). The result draws the same samples as the saved object for the
        same key. A file of
        another format version, a corrupted file, or one saved for other site
        shapes or other model arguments is a ``ValueError``. ``checkpoint_dir``
        and ``executor`` are not saved; set them on the returned object.
        """
        from ._io import load

        config, state, diagnostics = load(path, model, args, kwargs)
        return cls.__new__(cls)._setup(model, config, state, diagnostics)

    # -------------------------------------------------------------- helpers
    def _cached(self, name, build):
        """``build()``, compiled once per state of the simulations."""
        if name not in self._compiled:
            self._compiled[name] = build()
        return self._compiled[name]

    def _draws(self):
        """Compiled generator draws, single and batched (:func:`make_draws`)."""
        return self._cached("draws", lambda: make_draws(self.spec.constrain))

    def _deterministic(self):
        """Compiled deterministic sites (:func:`compile_deterministic`), or None."""
        st = self._state
        return self._cached(
            "deterministic", lambda: compile_deterministic(self.model, st.spec, st.args, st.kwargs)
        )

    def _prior_fns(self):
        """Compiled ``log p(theta)`` (unconstrained, batched) and prior draws from keys."""
        st = self._state
        return self._cached("prior", lambda: prior_fns(self.model, st.spec, st.args, st.kwargs))

    def _observations(self, observations):
        """``observations``, or the default ones (data given to :meth:`run`) when None."""
        if observations is not None:
            return observations
        if self.default_observations is None:
            raise ValueError(
                "no observations given and none stored: pass observations={site: value}, "
                "or pass the data to run as a model argument (run(key, ..., y=data))"
            )
        return self.default_observations

    def _check(self, observations, warn=True, fidelity=None):
        self._require_sims()
        observations = self._observations(observations)
        y = _model.check_observations(self.spec, observations)
        if warn:
            e = np.atleast_1d(self.ess(observations, fidelity=fidelity))
            if np.any(e < self.ess_warning):
                warnings.warn(
                    f"the effective sample size of the likelihood weights is {e.min():.1f} "
                    f"(< {self.ess_warning:g}): few prior simulations inform this posterior; "
                    "increase num_simulations or refine",
                    stacklevel=3,
                )
        return y

    def _require_sims(self):
        if self.simulations is None:
            raise RuntimeError("no prior simulations yet: call .run(rng_key, ...) first")

    def _require_generator(self):
        if self.generator is None:
            raise RuntimeError("no generator yet: call .run(rng_key, ...) first")
