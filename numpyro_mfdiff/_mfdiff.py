"""The user-facing inference object: a thin orchestrator over the pure modules.

:class:`MFDiff` holds a frozen :class:`~numpyro_mfdiff._config.Config` (its settings),
a frozen :class:`~numpyro_mfdiff._state.State` (what the stages built: the simulations
and their :class:`~numpyro_mfdiff._bank.PriorBank`, the triples, the generators) that
each stage replaces, and the :class:`~numpyro_mfdiff._state.Diagnostics`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import partial

import jax
import numpy as np

from . import _model
from ._bank import build_bank, check_generator, low_generator
from ._checks import (
    count_failures,
    data_observations,
    model_callable,
    split_run_arguments,
)
from ._config import Config
from ._label import label_triples
from ._network import fit_generator
from ._pooled import FOCUS_SHARE
from ._progress import progress
from ._refine_api import RefineMethods
from ._sampling_api import SamplingMethods
from ._schedule import AbstractSchedule
from ._state import Diagnostics, LabelStats, SimulationStats, State, Timings

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


class MFDiff(SamplingMethods, RefineMethods):
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
        reparam: ``"auto"``: non-centre hierarchical latent sites before the
            inference runs. A latent sample site is non-centred when its
            distribution is a location-scale family (``Normal``, ``Laplace``,
            ``Cauchy``, ``Logistic``, ``StudentT``; expanded or ``to_event``
            allowed) and its parameters depend on another latent sample site
            (``numpyro.infer.inspect.get_model_relations``), e.g. ``theta_j ~
            N(mu, tau)``: the inference then runs on ``theta_decentered ~ N(0, 1)``
            with ``theta = mu + tau * theta_decentered``
            (``LocScaleReparam(centered=0)``), which turns the funnel between
            ``tau`` and ``theta`` into a nearly Gaussian posterior. Draws keep the
            user's sites (``theta``, not ``theta_decentered``); :attr:`spec`
            describes the coordinates the inference runs in (``theta_decentered``)
            and ``state.reparam`` names the non-centred sites. ``None``: the model
            as it is written.
        domain_check: ``"warn"`` (default), ``"error"`` or ``None``: what
            :meth:`get_samples` does for an observation outside the simulated ones
            ``G_low`` was trained on (:mod:`~numpyro_mfdiff._domain`: far below all of
            1,000 prior simulations in prior-predictive log evidence; measured false
            alarms on prior-predictive observations 0-0.02%).
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
        reparam: str | None = "auto",
        domain_check: str | None = "warn",
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
            reparam=reparam,
            domain_check=domain_check,
        )
        self._setup(model, config, State(), Diagnostics())

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
    domain_check = _setting("domain_check", "The domain check of G_low's answers.", True)

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
        args, kwargs, data, observed, data_args = split_run_arguments(
            self.model, args, kwargs, cfg.observed_sites
        )
        sites = ()
        if cfg.reparam == "auto":
            sites = _model.auto_reparam_sites(self.model, args, kwargs, observed)
        self._state = self._state.replace(reparam=sites, data_args=data_args)
        model = self._inner_model()
        spec = _model.inspect_model(model, args, kwargs, observed)
        default = data_observations(spec, data)
        self._state = self._state.replace(
            spec=spec, args=args, kwargs=kwargs, default_observations=default
        )
        ckpt = None if cfg.checkpoint_dir is None else cfg.checkpoint_dir / "prior"
        with progress(cfg.num_simulations, "simulating", cfg.progress_bar) as update:
            sims = _model.simulate(
                rng_key,
                model,
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
