"""The user-facing inference object :class:`MFDiff`: a thin driver holding one frozen
:class:`~numpyro_mfdiff._config.Config` and one frozen :class:`~numpyro_mfdiff._state.State`
(replaced by each stage) over the functions of ``_stages``, ``_samplers``, ``_refining``."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import jax

from . import _compiled as C
from . import _refining, _samplers, _stages
from ._checks import model_callable
from ._config import Config, setting_property
from ._refining import RefineSettings
from ._state import Diagnostics, State, Timings, built_property, obs_key
from .diffusion._schedule import AbstractSchedule
from .refine._pooled import batch_checks

__all__ = ["MFDiff"]


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
        num_simulations, observed_sites, ...: the settings, each a field of
            :class:`~numpyro_mfdiff.Config` (its default and meaning there), validated
            there: a ``ValueError`` (``TypeError`` for ``checkpoint_dir`` and
            ``executor``) names the first bad one. ``inf.config`` holds them.
    """

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
        config = Config(**{k: v for k, v in locals().items() if k not in ("self", "model")})
        self._setup(config, State(model=model), Diagnostics())

    def _setup(self, config, state, diagnostics):
        self._config, self._state, self.diagnostics = config, state, diagnostics
        self._compiled = C.Compiled()  # compiled functions of the state, built on first use
        return self

    # ------------------------------------------------------- read-only views
    config = property(lambda self: self._config, doc="The settings (a frozen ``Config``).")
    state = property(lambda self: self._state, doc="What the stages built (a frozen ``State``).")
    model = built_property("model", "The NumPyro model.")
    bank = built_property("bank", "The prior bank (``PriorBank``): the weighted prior points.")
    spec = built_property("spec", "The model's sites (``ModelSpec``), after :meth:`simulate`.")
    simulations = built_property("simulations", "The prior simulations (``Simulations``).")
    triples = built_property("triples", "The labelled triples of the last :meth:`label` (a dict).")
    generator = built_property("generator", "``G_low`` once fitted, else None.")
    default_observations = built_property("default_observations", "The data given to :meth:`run`.")
    grid = property(lambda self: self._config.time_grid, doc="The ODE's decreasing times.")

    # ------------------------------------------------------------------ run
    def run(self, rng_key, *args, **kwargs):
        """Simulate the prior, label triples and fit ``G_low``; returns ``self``.

        ``args``/``kwargs`` go to the model as in ``MCMC.run``, data included, e.g.
        ``run(key, X, y=y_obs)`` for ``def model(X, y=None)``. An argument is data when
        leaving it out turns observed sites into sampled ones; the simulations run
        without it, and it becomes the ``default_observations`` of the samplers called
        without observations. With data, the observed sites are those it observes
        (unless ``observed_sites`` says otherwise; the data must then cover them all).

        A ``ValueError`` names the site, before any simulation, for what the method
        cannot handle: discrete, improper or dependent-support latent sites,
        ``numpyro.factor``, scaled sites (subsampled plates, ``handlers.scale``), sites
        observed with data that is not a separate argument. Plates, deterministic
        sites (returned by :meth:`get_samples`), several or discrete observed sites
        are supported.
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
        self._state, stats = _stages.simulate(self._config, self._state, rng_key, args, kwargs)
        self.diagnostics.record(stats)
        return self._state.simulations

    def label(self, rng_key):
        """Stage 2: labelled triples ``(y, z, theta)`` from the Monte Carlo-score ODE.

        Returns a dict of arrays ``y`` (T, M), ``z`` (T, D), ``theta`` (T, D)
        (standardised) and ``dropped`` (T,), also kept in ``.triples``. The observations
        are simulated ones drawn uniformly (after a batched :meth:`refine`, a quarter
        at the batch's). Exponential-family observed sites weigh by one matmul per chunk
        (:mod:`~numpyro_mfdiff._model._expfam`), others by ``log_prob`` per pair.
        """
        C.require_sims(self._state)
        self._state, triples, stats = _stages.label(self._config, self._state, rng_key)
        self.diagnostics.record(stats)
        return triples

    def fit(self, rng_key, triples=None):
        """Stage 3: fit ``G_low`` on labelled triples (stored in ``.generator``).

        ``triples`` defaults to ``.triples``, the last :meth:`label` output
        (or the triples loaded by :meth:`load`).
        """
        C.require_sims(self._state)
        if triples is None:
            if self.triples is None:
                raise RuntimeError("no labelled triples yet: call .label(rng_key) first")
            triples = self.triples
        self._state, history, check = _stages.fit(self._config, self._state, rng_key, triples)
        self.diagnostics.record(train_history=history)
        self.diagnostics.record(generator_check=check)
        return self.generator

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
            Dict site name -> constrained samples ``(num_samples, *site_shape)`` (``(B,
            ...)`` for a batch): the latent sites and the deterministic sites computed
            from them with the observed sites set to the observation, as ``MCMC``.
        """
        args = (rng_key, observations, num_samples, fidelity, group_by_chain, num_chains)
        return _samplers.get_samples(self._config, self._state, *args, self._compiled)

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

        Slower than :meth:`get_samples` and more accurate; points holding at most
        ``prune_tol`` of the weight are dropped first. A refined observation's ODE runs
        over its high-fidelity simulations and importance weights. Arguments and
        return value as :meth:`get_samples`.
        """
        args = (observations, num_samples, batch_size, fidelity, group_by_chain, num_chains)
        out, stats = _samplers.sample_ode(self._config, self._state, rng_key, *args, self._compiled)
        self.diagnostics.record_all(stats)
        return out

    def ess(self, observations=None, fidelity=None):
        """Effective sample size of the weights the samplers use, per observation.

        ``G_low``'s likelihood weights over the prior simulations, or a refined
        observation's importance weights (arguments as in :meth:`get_samples`): a float,
        or (B,) for a batch. Tens mean the estimator rests on few simulations.
        """
        return _samplers.ess(self._config, self._state, observations, fidelity, self._compiled)

    def fidelity(self, observations=None) -> str:
        """Which generator serves a single observation: ``"high"`` once refined, else ``"low"``."""
        return _samplers.fidelity(self._state, observations)

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

        ``numpyro.diagnostics.print_summary`` of ``num_samples`` draws of
        :meth:`get_samples` (same key, same table; independent draws split into
        ``num_chains`` chains), then the sampler that served (``G_low``, or ``G_high``
        once refined) with the ESS of its weights. Arguments as in :meth:`get_samples`;
        deterministic sites left out unless ``exclude_deterministic=False``.
        """
        args = (rng_key, observations, num_samples, prob, num_chains, fidelity)
        args += (exclude_deterministic, self._compiled)
        _samplers.print_summary(self._config, self._state, *args)

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
        samplers = {"generator": self.get_samples, "ode": self.sample_ode}
        args = (rng_key, observations, num_samples, samplers, self.diagnostics, self._compiled)
        return _samplers.to_inference_data(self._config, self._state, *args, **kwargs)

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

        One observation: adaptive importance sampling in stages (``engine="is"``, up
        to 10 latent coordinates with ``"auto"``) or tempered SMC on BlackJAX's kernels
        (``"smc"``, above), simulating ``model`` at proposed parameters and weighting
        every simulation; then the weighted Monte Carlo-score ODE labels an
        unconditional ``G_high(z)``, which :meth:`get_samples` uses for this
        observation afterwards. A further call adds stages with the engine of the
        first. ``refine(key, obs, model=hf, max_simulations=B)`` spends at most ``B``
        evaluations of ``hf`` and chooses the rest (stages, temperatures, smoothing).
        The engines in detail: :func:`~numpyro_mfdiff._refining.refine_observation`.

        A batch (a leading axis on every site), at the same fidelity, shares one budget:
        simulations around ``G_low``'s draws join the bank, weighted, and ``G_low`` is
        refitted (:func:`~numpyro_mfdiff._refining.refine_batch`; ``diagnostics["pooled"]``).

        Args:
            rng_key: a ``jax.random`` key.
            observations: one observation (dict site name -> value), or a batch.
            model: the high-fidelity NumPyro model, with the same latent and
                observed sites (names, shapes, supports). Default: the model
                of this inference (sequential refinement at the same fidelity,
                where the prior simulations also count as draws).
            num_simulations, rounds, target_ess, ..., engine: the settings of the call
                (also ``max_simulations``, ``inflation``, ``prior_fraction``,
                ``num_labels``, ``train_steps``, ``smoothing``), fields of
                :class:`~numpyro_mfdiff.RefineSettings` (defaults and meanings there).
            model_args, model_kwargs: arguments of ``model`` (default: those of :meth:`run`).

        Returns:
            ``self``; the stages, ESS before and after, simulations, bandwidths and
            timings are in ``diagnostics["refinements"]``.
        """
        cfg, st = self._config, self._state
        C.require_sims(st)
        y = C.check(cfg, st, observations, warn=False, sampler="refine", cache=self._compiled)
        rs = RefineSettings(num_simulations, rounds, target_ess, max_simulations, inflation)
        rs = rs.replace(prior_fraction=prior_fraction, num_labels=num_labels)
        rs = rs.replace(train_steps=train_steps, smoothing=smoothing, engine=engine)
        s = rs.plan(cfg)
        high = _refining.high_fidelity(st, model, model_args, model_kwargs)
        if y.ndim == 2:
            batch_checks(high.same, rs.batch_given())
            args = (_samplers.low_draw, self.diagnostics.get("pooled"), self._compiled)
            self._state, record, records = _refining.refine_batch(cfg, st, rng_key, y, s, *args)
            self.diagnostics.record_all([*records, dict(pooled=record)])
            return self
        self._state, ref = _refining.refine_observation(
            cfg, st, rng_key, y, s, high, _samplers.low_draw, self._compiled
        )
        self.diagnostics.record_refinement(obs_key(y), observations, ref)
        return self

    # ------------------------------------------------------------ save/load
    def save(self, path):
        """Save the prior simulations, the labelled triples and the generator to ``path``.

        One ``.npz`` file (:mod:`~numpyro_mfdiff._io`): simulations, triples, generators,
        refinements, settings, site shapes and a fingerprint of the model arguments.
        Load it with :meth:`MFDiff.load` and the same model.
        """
        from ._io import save

        C.require_sims(self._state)
        save(path, self._config, self._state, self.diagnostics)

    @classmethod
    def load(cls, path, model, *args, **kwargs):
        """Rebuild an :class:`MFDiff` for ``model`` from a file written by :meth:`save`.

        ``args``/``kwargs``: the model arguments of ``run`` (data may be left out: it is
        saved; data given replaces it). Same key, same draws as the saved object. Another
        format version, a corrupted file, other site shapes or other model arguments are
        a ``ValueError``; ``checkpoint_dir`` and ``executor`` are not saved.
        """
        from ._io import load

        config, state, diagnostics = load(path, model, args, kwargs)
        return cls.__new__(cls)._setup(config, state.replace(model=model), diagnostics)


# the settings read as attributes (``inf.num_steps``), and those set on a built inference
_READ = "num_simulations observed_sites num_labels num_steps solver schedule label_points"
_READ += " prune_tol label_smoothing net_config fit_config chunk_size simulation_chunk_size"
_READ += " ess_warning progress_bar max_failure_fraction"
for _name in _READ.split():
    setattr(MFDiff, _name, setting_property(_name))
for _name in ("checkpoint_dir", "executor", "domain_check"):
    setattr(MFDiff, _name, setting_property(_name, settable=True))
