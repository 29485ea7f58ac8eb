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

from . import _compiled as C
from . import _refining, _samplers, _stages
from ._checks import model_callable, real
from ._config import Config
from ._pooled import batch_checks
from ._schedule import AbstractSchedule
from ._state import Diagnostics, State, Timings, obs_key

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
        self._setup(config, State(model=model), Diagnostics())

    def _setup(self, config, state, diagnostics):
        self._config, self._state, self.diagnostics = config, state, diagnostics
        self._compiled = C.Compiled()  # compiled functions of the state, built on first use
        return self

    # ------------------------------------------------------- read-only views
    config = property(lambda self: self._config, doc="The settings (a frozen ``Config``).")
    state = property(lambda self: self._state, doc="What the stages built (a frozen ``State``).")
    model = _built("model", "The NumPyro model.")
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
        self._state, stats = _stages.simulate(self._config, self._state, rng_key, args, kwargs)
        self.diagnostics.record(stats)
        return self._state.simulations

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
        C.require_sims(self._state)
        self._state, triples, stats = _stages.label(
            self._config, self._state, rng_key, self._fast_likelihood
        )
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
        self._state, history, check = _stages.fit(
            self._config, self._state, rng_key, triples, self._fast_likelihood
        )
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
            Dict from site name to constrained samples, shape
            ``(num_samples, *site_shape)``, or ``(B, num_samples, *site_shape)``
            for a batch: the latent sites, and the model's
            ``numpyro.deterministic`` sites computed from them (with the
            observed sites set to the observation, as ``MCMC`` does; under
            ``jit``, so a deterministic site that does not need the simulator
            does not run it).
        """
        return _samplers.get_samples(
            self._config,
            self._state,
            rng_key,
            observations,
            num_samples,
            fidelity,
            group_by_chain,
            num_chains,
            self._compiled,
        )

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
        out, stats = _samplers.sample_ode(
            self._config,
            self._state,
            rng_key,
            observations,
            num_samples,
            batch_size,
            fidelity,
            group_by_chain,
            num_chains,
            self._compiled,
        )
        self.diagnostics.record_all(stats)
        return out

    def ess(self, observations=None, fidelity=None):
        """Effective sample size of the weights the samplers use, per observation.

        For ``G_low``: the likelihood weights over the prior simulations; for a
        refined observation: the importance weights over the high-fidelity
        simulations (``fidelity`` as in :meth:`get_samples`). Returns a float,
        or an array (B,) for a batch. Small values (tens) mean the estimator
        rests on few simulations. ``observations=None``: the data passed to :meth:`run`.
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
        y = C.check(self._config, self._state, observations, warn=False)
        if y.ndim != 1:
            raise ValueError("print_summary takes a single observation, not a batch")
        samples = self.get_samples(
            rng_key, observations, num_samples, fidelity, group_by_chain=True, num_chains=num_chains
        )
        if exclude_deterministic:
            samples = {k: v for k, v in samples.items() if k in C.user_latents(self._state)}
        print_summary({k: np.asarray(v) for k, v in samples.items()}, prob=prob)
        ref = C.refinement_for(self._state, y, fidelity)
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

        st = self._state
        if kwargs.get("method", "generator") == "generator":
            C.require_generator(st)
        C.require_sims(st)
        observations = C.observations_or_default(st, observations)
        return to_inference_data(
            rng_key,
            observations,
            num_samples,
            model=self.model,
            state=st,
            check=partial(C.check, self._config, st, warn=False, cache=self._compiled),
            samplers={"generator": self.get_samples, "ode": self.sample_ode},
            refinement=partial(C.refinement_for, st),
            low_ess=partial(self.ess, fidelity="low"),
            deterministic=C.deterministic(st, self._compiled),
            diagnostics=self.diagnostics,
            **kwargs,
        )

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

        Two engines for one observation (``engine``; ``"auto"`` picks importance
        sampling up to 10 latent coordinates and SMC above, and a further call
        continues with the engine of the first; the choice is in
        ``diagnostics["refinements"][...]["engine"]``).

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
        cfg, st = self._config, self._state
        C.require_sims(st)
        y = C.check(cfg, st, observations, warn=False, sampler="refine", cache=self._compiled)
        given = dict(rounds=rounds, num_simulations=num_simulations, target_ess=target_ess)
        given.update(max_simulations=max_simulations, num_labels=num_labels)
        given.update(train_steps=train_steps, smoothing=smoothing, engine=engine)
        s = _refining.settings(cfg, inflation=inflation, prior_fraction=prior_fraction, **given)
        high = _refining.high_fidelity(st, model, model_args, model_kwargs)
        if y.ndim == 2:
            given = {k: given[k] for k in ("num_simulations", "target_ess", "num_labels")}
            given.update(train_steps=train_steps, smoothing=smoothing)
            given.update(engine=None if engine == "auto" else engine)
            batch_checks(high.same, {k: v for k, v in given.items() if v is not None})
            self._state, record, records = _refining.refine_batch(
                cfg,
                st,
                rng_key,
                y,
                s,
                _samplers.low_draw,
                self.diagnostics.get("pooled"),
                self._compiled,
                self._fast_likelihood,
            )
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

        One ``.npz`` file: simulations as arrays, the triples of the last
        :meth:`label` (if any), the generator with ``eqx.tree_serialise_leaves``
        (if fitted), the settings, a format version, the model's site shapes
        and a fingerprint of the model arguments. Load it with
        :meth:`MFDiff.load` and the same model.
        """
        from ._io import save

        C.require_sims(self._state)
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
        return cls.__new__(cls)._setup(config, state.replace(model=model), diagnostics)
