"""BlackJAX adaptive tempered SMC with HMC moves, resampled and moved once more at ``t = 1``."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import blackjax
import jax
import jax.numpy as jnp
from blackjax.smc.resampling import systematic

from .._arviz import az
from .._checks import positive_int, real
from ._problem import _Problem, _raw_key

__all__ = ["smc"]

_MAX_TEMPERING_STEPS = 1000
_SMC_TARGET_ACCEPT = 0.65
_SMC_LEAPFROG_STEPS = 5


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
    num_particles = positive_int("num_particles", num_particles, 2)
    num_mcmc_steps = positive_int("num_mcmc_steps", num_mcmc_steps)
    target_ess = real("target_ess", target_ess, 0.0, 1.0, low_open=True, high_open=True)

    key = _raw_key(rng_key)
    key_setup, key_init, key_run, key_final = jax.random.split(key, 4)
    prob = _Problem(
        model, observations, model_args, model_kwargs, key_setup, prior or posterior_predictive
    )
    run = _tempered_run(prob, num_particles, num_mcmc_steps, target_ess)
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


def _tempered_run(prob, num_particles, num_mcmc_steps, target_ess):
    """``(key_init, key_run, key_final) -> (x (N, d), lp (N,), final temperature, tempering
    steps, log evidence)``: prior particles tempered to ``t = 1``, then :func:`_rejuvenate`."""
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
        x, lp = _rejuvenate(prob, hmc_step, key_final, state, step_size, num_mcmc_steps)
        return x, lp, state.tempering_param, n_steps, log_z

    return run


def _rejuvenate(prob, hmc_step, key_final, state, step_size, num_mcmc_steps):
    """Resample the particles at ``t = 1`` (systematic) and move each by ``num_mcmc_steps``
    HMC steps (dense mass matrix: their covariance); returns positions and log joints."""
    num_particles = state.particles.shape[0]
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

    return jax.vmap(move)(jax.random.split(key_move, num_particles), x)
