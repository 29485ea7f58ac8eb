"""MCMC / SMC reference samplers for NumPyro models (BlackJAX NUTS and adaptive tempered SMC).

Both samplers work on the model's unconstrained space (``numpyro.infer.util.initialize_model``),
flatten the latent sites into one vector, and map the draws back to constrained sites (plus
``numpyro.deterministic`` sites) with the model's ``postprocess_fn``. They return
``arviz.InferenceData`` with the groups of :meth:`MFDiff.to_inference_data` (``log_likelihood``
pointwise per observed site, ``observed_data``, and on request ``prior``/``prior_predictive``
and ``posterior_predictive``), so that ``az.loo``, ``az.compare({"mfdiff": ..., "nuts": ...})``,
``az.summary`` and the metrics in :mod:`numpyro_mfdiff.metrics` apply directly.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from blackjax.adaptation.base import get_filter_adapt_info_fn
from blackjax.smc.resampling import systematic
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer import init_to_sample
from numpyro.infer.util import constrain_fn, initialize_model, potential_energy

from . import _model
from ._arviz import az, from_draws, sample_prior

__all__ = ["nuts", "smc"]

_MAX_TEMPERING_STEPS = 1000
_SMC_TARGET_ACCEPT = 0.65
_SMC_LEAPFROG_STEPS = 5


# ----------------------------------------------------------------------------- helpers


def _raw_key(rng_key) -> jax.Array:
    """Return a raw ``uint32[2]`` key for either a typed or a raw ``jax.random`` key."""
    rng_key = jnp.asarray(rng_key)
    if jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(rng_key)
    return rng_key


def _check_positive(name: str, value: int) -> None:
    if int(value) != value or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")


class _Problem:
    """A model conditioned on observations, with its unconstrained log densities on a flat vector.

    Attributes:
        model: the conditioned model (``raw_model``: as given).
        latent_names: sorted names of the latent (unobserved) sample sites.
        deterministic_names: names of the ``numpyro.deterministic`` sites.
        observed_values: observed site name -> value, from ``observations`` or the model
            arguments (``numpyro.factor`` sites left out).
        free_args: with ``predictive=True``, the ``(args, kwargs)`` of prior and posterior
            predictive draws (:meth:`data_free_arguments`), else None.
        unravel: flat vector (d,) -> dict of unconstrained latent values.
        log_joint: flat (d,) -> scalar, log prior + log likelihood + log|Jacobian|.
        postprocess: flat (d,) -> dict of constrained latent and deterministic sites.
    """

    def __init__(self, model, observations, model_args, model_kwargs, rng_key, predictive=False):
        if not isinstance(observations, dict):
            raise ValueError(
                "`observations` must be a dict mapping observed site names to values, "
                f"got {type(observations).__name__}"
            )
        self.args = tuple(model_args)
        self.kwargs = {} if model_kwargs is None else dict(model_kwargs)
        self.observations = {k: jnp.asarray(v) for k, v in observations.items()}
        self.raw_model = model
        self.model = handlers.condition(model, data=self.observations)

        tr = handlers.trace(handlers.seed(self.model, rng_seed=0)).get_trace(
            *self.args, **self.kwargs
        )
        sample_sites = {k for k, s in tr.items() if s["type"] == "sample"}
        unknown = sorted(set(self.observations) - sample_sites)
        if unknown:
            raise ValueError(
                f"`observations` names {unknown} that are not sample sites of the model "
                f"(sample sites: {sorted(sample_sites)})"
            )
        self.latent_names = sorted(
            k for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]
        )
        # Observed sites of the conditioned model (incl. ``numpyro.factor`` sites): the
        # likelihood. Recorded by name so that the Jacobian factors that numpyro's potential
        # adds for constrained latents (also observed sites) stay in the prior.
        self.observed_names = frozenset(
            k for k, s in tr.items() if s["type"] == "sample" and s["is_observed"]
        )
        self.observed_values = {
            k: np.asarray(tr[k]["value"])
            for k in sorted(self.observed_names)
            if not _model._is_factor(tr[k]["fn"])
        }
        self.deterministic_names = [k for k, s in tr.items() if s["type"] == "deterministic"]
        # arguments of prior/posterior predictive draws, checked before any sampling
        self.free_args = self.data_free_arguments() if predictive else None
        if not self.latent_names:
            raise ValueError("the model has no latent sample sites left after conditioning")

        info = initialize_model(
            _raw_key(rng_key),
            self.model,
            init_strategy=init_to_sample,
            model_args=self.args,
            model_kwargs=self.kwargs,
        )
        flat, self.unravel = ravel_pytree(info.param_info.z)
        self.dim = flat.shape[0]
        self._potential = info.potential_fn
        self._postprocess = info.postprocess_fn

    # -- densities on the flat unconstrained vector
    def log_joint(self, x: jax.Array) -> jax.Array:
        return -self._potential(self.unravel(x))

    def log_prior(self, x: jax.Array) -> jax.Array:
        """Log prior density in unconstrained space (Jacobian included), observed sites off."""
        model = _DropSites(self.model, self.observed_names)
        return -potential_energy(model, self.args, self.kwargs, self.unravel(x))

    def log_likelihood(self, x: jax.Array) -> jax.Array:
        """Sum of the observed sites' log probabilities (scaled as in the model)."""
        params = constrain_fn(self.model, self.args, self.kwargs, self.unravel(x))
        sub = handlers.substitute(handlers.seed(self.model, rng_seed=0), data=params)
        tr = handlers.trace(sub).get_trace(*self.args, **self.kwargs)
        total = jnp.zeros(())
        for site in tr.values():
            if site["type"] == "sample" and site["name"] in self.observed_names:
                lp = site["fn"].log_prob(site["value"])
                if site["scale"] is not None:
                    lp = site["scale"] * lp
                total = total + jnp.sum(lp)
        return total

    def postprocess(self, x: jax.Array) -> dict[str, jax.Array]:
        return self._postprocess(self.unravel(x))

    # -- prior draws, flattened in unconstrained space
    def prior_draw(self, rng_key: jax.Array) -> jax.Array:
        tr = handlers.trace(handlers.seed(self.model, rng_seed=rng_key)).get_trace(
            *self.args, **self.kwargs
        )
        z = {k: biject_to(tr[k]["fn"].support).inv(tr[k]["value"]) for k in self.latent_names}
        return ravel_pytree(z)[0]

    def data_free_arguments(self) -> tuple[tuple, dict]:
        """Model arguments with the data left out (``None``), so that the model as given
        simulates every observed site (``_model.split_data_arguments``); a ``ValueError``
        names the sites whose data is fixed inside the model."""
        args, kwargs, data = _model.split_data_arguments(self.raw_model, self.args, self.kwargs)
        fixed = sorted(set(self.observed_values) - set(self.observations) - set(data))
        if fixed:
            raise ValueError(
                f"prior and posterior_predictive simulate the observed sites, but site(s) "
                f"{fixed} carry data fixed inside the model: pass it in `observations`, or as "
                "a model argument that defaults to None"
            )
        return args, kwargs

    def inference_data(
        self, rng_key, posterior, sample_stats, meta, *, prior, posterior_predictive, log_likelihood
    ) -> az.InferenceData:
        """``az.InferenceData`` of ``posterior`` (chains, draws, *site_shape) with the groups of
        ``MFDiff.to_inference_data`` (``_arviz.from_draws``); the prior draws (one chain, as
        many as the posterior's) and the posterior predictive use keys folded from ``rng_key``.
        """
        k_prior, k_pp = jax.random.split(jax.random.fold_in(rng_key, 1))
        args, kwargs = (self.args, self.kwargs) if self.free_args is None else self.free_args
        draws = prior_predictive = None
        if prior:
            n = int(np.prod(next(iter(posterior.values())).shape[:2]))
            sites = [*self.latent_names, *self.deterministic_names]
            draws, prior_predictive = sample_prior(
                self.raw_model, k_prior, n, sites, list(self.observed_values), args, kwargs
            )
        return from_draws(
            self.raw_model,
            posterior,
            self.observed_values,
            k_pp,
            observed_sites=list(self.observed_values),
            model_args=args,
            model_kwargs=kwargs,
            posterior_predictive=posterior_predictive,
            log_likelihood=log_likelihood,
            prior=draws,
            prior_predictive=prior_predictive,
            sample_stats=sample_stats,
            attrs=meta,
        )


class _DropSites(numpyro.primitives.Messenger):
    """Handler that zeroes the log probability of the sample sites named in ``names``."""

    def __init__(self, fn, names):
        self.names = names
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["name"] in self.names:
            msg["fn"] = msg["fn"].mask(False)


# ----------------------------------------------------------------------------- NUTS


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
    _check_positive("num_chains", num_chains)
    _check_positive("num_samples", num_samples)
    if int(num_warmup) != num_warmup or num_warmup < 0:
        raise ValueError(f"`num_warmup` must be a non-negative integer, got {num_warmup!r}")
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"`target_accept` must lie in (0, 1), got {target_accept!r}")

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
    logdensity = prob.log_joint

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
            params = {"step_size": jnp.asarray(0.1), "inverse_mass_matrix": jnp.ones(prob.dim)}
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

    xs, stats, warm_steps = jax.jit(jax.vmap(one_chain))(jax.random.split(key_run, num_chains), x0)
    posterior = jax.jit(jax.vmap(jax.vmap(prob.postprocess)))(xs)
    # one gradient of the log density per leapfrog step (+ one per chain at the start)
    sample_steps = int(np.sum(np.asarray(stats["n_steps"], np.int64)))
    meta = {
        "inference_library": "blackjax",
        "sampler": "nuts",
        "num_warmup": int(num_warmup),
        "target_accept": float(target_accept),
        "num_gradient_evaluations_warmup": int(np.sum(np.asarray(warm_steps, np.int64))),
        "num_gradient_evaluations": int(np.sum(np.asarray(warm_steps, np.int64)))
        + sample_steps
        + int(num_chains),
    }
    return prob.inference_data(
        key,
        posterior,
        stats,
        meta,
        prior=prior,
        posterior_predictive=posterior_predictive,
        log_likelihood=log_likelihood,
    )


# ----------------------------------------------------------------------------- SMC


def _weighted_cov(x: jax.Array, w: jax.Array) -> jax.Array:
    """Weighted covariance of particles ``x`` (N, d) with normalised weights ``w`` (N,)."""
    mean = w @ x
    xc = x - mean
    cov = (xc * w[:, None]).T @ xc
    return cov + 1e-6 * jnp.eye(x.shape[1]) * (1.0 + jnp.mean(jnp.diag(cov)))


def smc(
    model: Callable,
    observations: dict[str, Any],
    rng_key: jax.Array,
    *,
    num_particles: int = 2000,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    num_mcmc_steps: int = 10,
    target_ess: float = 0.5,
    prior: bool = False,
    posterior_predictive: bool = False,
    log_likelihood: bool = True,
) -> az.InferenceData:
    """Run BlackJAX adaptive tempered SMC on ``model | observations``.

    Particles start from the prior (latent sites sampled from the model and mapped to
    unconstrained space with ``biject_to(support).inv``). The target at temperature ``t`` is
    ``log prior(u) + t * log likelihood(u)`` on the unconstrained space ``u``, where the prior
    includes the Jacobian of the constraining transform and the likelihood is the sum of the
    observed sites' log probabilities (``numpyro.factor`` sites count as likelihood). The
    temperature schedule is chosen by ``blackjax.adaptive_tempered_smc`` so that each step keeps
    an ESS fraction of ``target_ess``; particles are moved by ``num_mcmc_steps`` HMC steps
    (5 leapfrog steps, dense mass matrix = weighted particle covariance, step size adapted
    between temperatures towards 65% acceptance). At ``t = 1`` the particles are resampled
    (systematic) and moved once more with the same HMC kernel, so the draws are equally
    weighted.

    Args:
        model: NumPyro model callable.
        observations: observed site name -> value (``numpyro.handlers.condition``).
        rng_key: ``jax.random`` key.
        num_particles: number of particles (= number of returned draws), at least 2.
        model_args, model_kwargs: passed to the model.
        num_mcmc_steps: HMC steps per tempering step.
        target_ess: ESS fraction in (0, 1) kept at each tempering step.
        prior, posterior_predictive, log_likelihood: as in :func:`nuts` (``prior``:
            ``num_particles`` draws).

    Returns:
        ``az.InferenceData`` with one chain of ``num_particles`` draws in ``posterior``,
        ``sample_stats`` (``lp`` = unconstrained log joint incl. Jacobian), ``observed_data``,
        ``log_likelihood`` and the groups asked for, laid out as in :func:`nuts`;
        ``idata.attrs`` and ``idata.sample_stats.attrs`` hold ``num_tempering_steps`` and
        ``log_marginal_likelihood`` (the SMC estimate of ``log p(observations)``).

    Raises:
        RuntimeError: if the temperature did not reach 1 in 1000 tempering steps.
    """
    _check_positive("num_particles", num_particles)
    if num_particles < 2:
        raise ValueError(f"`num_particles` must be at least 2, got {num_particles}")
    _check_positive("num_mcmc_steps", num_mcmc_steps)
    if not 0.0 < target_ess < 1.0:
        raise ValueError(f"`target_ess` must lie in (0, 1), got {target_ess!r}")

    key = _raw_key(rng_key)
    key_setup, key_init, key_run, key_final = jax.random.split(key, 4)
    prob = _Problem(
        model, observations, model_args, model_kwargs, key_setup, prior or posterior_predictive
    )
    num_mcmc_steps = int(num_mcmc_steps)

    hmc_step = partial(blackjax.hmc.build_kernel(), num_integration_steps=_SMC_LEAPFROG_STEPS)
    algo = blackjax.adaptive_tempered_smc
    kernel = algo.build_kernel(
        prob.log_prior,
        prob.log_likelihood,
        hmc_step,
        blackjax.hmc.init,
        systematic,
        target_ess,
    )

    def mcmc_params(particles, weights, step_size):
        return blackjax.smc.extend_params(
            {"step_size": step_size, "inverse_mass_matrix": _weighted_cov(particles, weights)}
        )

    def mean_acceptance(info):
        return jnp.mean(info.update_info.acceptance_rate)

    def adapt(step_size, acc):
        return step_size * jnp.clip(jnp.exp(2.0 * (acc - _SMC_TARGET_ACCEPT)), 0.5, 2.0)

    def run(key_init, key_run, key_final):
        x0 = jax.vmap(prob.prior_draw)(jax.random.split(key_init, num_particles))
        state = algo.init(x0)
        step0 = jnp.asarray(1.0 / prob.dim**0.25, dtype=x0.dtype)

        def cond(carry):
            _, state, _, n, _ = carry
            return (state.tempering_param < 1.0) & (n < _MAX_TEMPERING_STEPS)

        def body(carry):
            key, state, step_size, n, log_z = carry
            key, sub = jax.random.split(key)
            params = mcmc_params(state.particles, state.weights, step_size)
            state, info = kernel(sub, state, num_mcmc_steps, params)
            step_size = adapt(step_size, mean_acceptance(info))
            return key, state, step_size, n + 1, log_z + info.log_likelihood_increment

        init = (key_run, state, step0, jnp.asarray(0), jnp.asarray(0.0, dtype=x0.dtype))
        _, state, step_size, n_steps, log_z = jax.lax.while_loop(cond, body, init)

        # Final resampling at t = 1 followed by one HMC rejuvenation pass.
        key_res, key_move = jax.random.split(key_final)
        idx = systematic(key_res, state.weights, num_particles)
        x = state.particles[idx]
        inv_mass = _weighted_cov(x, jnp.full((num_particles,), 1.0 / num_particles))

        def move(key, x):
            s = blackjax.hmc.init(x, prob.log_joint)

            def one(s, k):
                s, info = hmc_step(k, s, prob.log_joint, step_size, inv_mass)
                return s, info.acceptance_rate

            s, _ = jax.lax.scan(one, s, jax.random.split(key, num_mcmc_steps))
            return s.position, s.logdensity

        x, lp = jax.vmap(move)(jax.random.split(key_move, num_particles), x)
        return x, lp, state.tempering_param, n_steps, log_z

    x, lp, t_final, n_steps, log_z = jax.jit(run)(key_init, key_run, key_final)
    if float(t_final) < 1.0:
        raise RuntimeError(
            f"adaptive tempered SMC stopped at temperature {float(t_final):.3g} after "
            f"{_MAX_TEMPERING_STEPS} steps (non-finite log likelihood?)"
        )
    posterior = jax.jit(jax.vmap(prob.postprocess))(x)
    posterior = {k: v[None] for k, v in posterior.items()}
    meta = {
        "inference_library": "blackjax",
        "sampler": "adaptive_tempered_smc",
        "num_tempering_steps": int(n_steps),
        "log_marginal_likelihood": float(log_z),
        "target_ess": float(target_ess),
        "num_mcmc_steps": num_mcmc_steps,
    }
    return prob.inference_data(
        key,
        posterior,
        {"lp": lp[None]},
        meta,
        prior=prior,
        posterior_predictive=posterior_predictive,
        log_likelihood=log_likelihood,
    )
