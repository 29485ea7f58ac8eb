"""Where the particles of a tempered-SMC refinement start (:mod:`~numpyro_mfdiff._smc`).

The initial proposal ``q``: a Gaussian mixed with a defensive share of the prior
(:class:`Proposal`, :func:`proposal_logpdf`, :func:`proposal_sample`), the Gaussian a
Laplace approximation for a differentiable model (:func:`laplace_proposal`, searched from
``G_low``'s mean) or fitted to ``G_low``'s draws (:func:`fit_proposal`); and
:func:`refine_stages`, the SMC stages of one ``refine`` call from there.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc import resampling

from . import _external
from ._smc import Target, model_target, num_particles, run, stage_cost

__all__ = [
    "Proposal",
    "fit_proposal",
    "laplace_proposal",
    "proposal_logpdf",
    "proposal_sample",
    "refine_stages",
]

# where the particles start: "low" (a Gaussian fitted to G_low's draws and the prior)
# or "prior"
START = "low"
# the most L-BFGS iterations of the Laplace start
LAPLACE_ITER = 200


class Proposal(NamedTuple):
    """The initial proposal: a Gaussian (``mean`` (D,), Cholesky factor ``chol`` (D, D))
    with weight ``1 - prior_fraction``, and the prior with weight ``prior_fraction``."""

    mean: np.ndarray
    chol: np.ndarray
    prior_fraction: float


def fit_proposal(draws, inflation: float, prior_fraction: float) -> Proposal:
    """A :class:`Proposal` from low-fidelity ``draws`` (n, D): their mean and covariance
    (times ``inflation^2``, a small ridge added), and the defensive ``prior_fraction``."""
    draws = np.asarray(draws, np.float64)
    draws = draws[np.all(np.isfinite(draws), axis=1)]
    mean = draws.mean(0)
    cov = np.atleast_2d(np.cov(draws, rowvar=False)) * inflation**2
    cov += np.diag(1e-6 * np.maximum(np.diag(cov), 1e-6))
    return Proposal(mean, np.linalg.cholesky(cov), float(prior_fraction))


def laplace_proposal(target: Target, start, inflation, prior_fraction, max_iter=LAPLACE_ITER):
    """A :class:`Proposal` around the posterior mode of a differentiable ``target``:
    L-BFGS (SciPy) from ``start`` (D,) on ``-(log p + log L)``, then the Gaussian of
    the Hessian there (eigenvalues floored), its covariance times ``inflation^2``.
    Returns ``(proposal, evaluations)``: the function-and-gradient evaluations of the
    search plus ``D`` for the Hessian (forward over reverse: one gradient per column)."""
    from scipy.optimize import minimize

    def neg(theta):
        return -(target.logprior(theta) + target.loglik(theta))

    vg = jax.jit(jax.value_and_grad(neg))

    def fun(th):
        v, g = vg(jnp.asarray(th, jnp.float32))
        v, g = float(v), np.asarray(g, np.float64)
        return (v, g) if np.isfinite(v) and np.all(np.isfinite(g)) else (1e30, np.zeros_like(g))

    start = np.asarray(start, np.float64)
    res = minimize(fun, start, jac=True, method="L-BFGS-B", options=dict(maxiter=max_iter))
    mode = res.x if np.isfinite(res.fun) and res.fun < 1e30 else start
    h = np.asarray(jax.jit(jax.hessian(neg))(jnp.asarray(mode, jnp.float32)), np.float64)
    vals, vecs = np.linalg.eigh(0.5 * (h + h.T))
    vals = np.maximum(vals, 1e-3 * max(vals.max(), 1e-6))
    cov = (vecs / vals) @ vecs.T * inflation**2
    chol = np.linalg.cholesky(cov + 1e-9 * np.eye(cov.shape[0]))
    return Proposal(mode, chol, float(prior_fraction)), int(res.nfev) + mode.size


def proposal_logpdf(prop: Proposal, logprior: Callable, theta):
    """``log q(theta)`` for theta (D,): the Gaussian and prior mixture of ``prop``."""
    mean, chol = jnp.asarray(prop.mean, theta.dtype), jnp.asarray(prop.chol, theta.dtype)
    u = jax.scipy.linalg.solve_triangular(chol, theta - mean, lower=True)
    gauss = -0.5 * u @ u - jnp.sum(jnp.log(jnp.diag(chol))) - 0.5 * theta.size * jnp.log(2 * jnp.pi)
    if prop.prior_fraction == 0:
        return gauss
    a = prop.prior_fraction
    return jnp.logaddexp(jnp.log1p(-a) + gauss, jnp.log(a) + logprior(theta))


def proposal_sample(key, prop: Proposal, prior_draw: Callable, n: int) -> np.ndarray:
    """``n`` draws (n, D) from ``prop``: ``round(prior_fraction n)`` of them from the prior
    (``prior_draw``: keys (k,) -> (k, D)), the rest from the Gaussian."""
    k_gauss, k_prior = jax.random.split(key)
    n_prior = int(round(prop.prior_fraction * n))
    z = np.asarray(jax.random.normal(k_gauss, (n - n_prior, prop.mean.size)), np.float64)
    out = [prop.mean + z @ prop.chol.T]
    if n_prior:
        out.append(np.asarray(prior_draw(jax.random.split(k_prior, n_prior)), np.float64))
    return np.concatenate(out).astype(np.float32)


def refine_stages(key, y, ref, high, log_prior, prior_draw, low_draw, s, executor=None):
    """The SMC stages of one ``refine`` call for flat ``y`` (M,) on the model of ``high``
    (a :class:`~numpyro_mfdiff._refinement.HighFidelity`) within the settings ``s`` of
    ``check_settings``: from ``q`` fitted to ``low_draw(key, y, n)`` (``G_low``), or,
    when ``ref`` is an SMC record already, from its particles resampled at ``l = 1``.
    Returns the :class:`SMCResult`; a ``ValueError`` when the budget cannot pay a stage."""
    target = model_target(high.model, high.spec, high.args, high.kwargs, y, log_prior)
    move = "hmc" if target.differentiable else "rmh"
    n = num_particles(s["budget"], move)
    if s["budget"] < stage_cost(move, n) + n:
        raise ValueError(
            f"max_simulations={s['budget']} is below one SMC stage of {n} particles "
            f"({stage_cost(move, n) + n} model evaluations); raise it or use engine='is'"
        )
    k_q, k_x, k_run = jax.random.split(key, 3)
    pre = 0  # evaluations before the stages (the Laplace start)
    if ref.engine == "smc" and ref.theta.shape[0]:  # continue at the posterior
        w = np.exp(ref.log_w - np.max(ref.log_w))
        idx = np.asarray(resampling.systematic(k_x, jnp.asarray(w / w.sum()), n))
        x, lam, log_q = ref.theta[idx], 1.0, target.logprior
    elif START == "prior":
        x, lam, log_q = np.asarray(prior_draw(jax.random.split(k_x, n))), 0.0, target.logprior
    else:
        draws = low_draw(k_q, y, max(4 * n, 2_000))
        prop = fit_proposal(draws, s["inflation"], s["prior_fraction"])
        if target.differentiable:  # G_low's mean starts the search for the mode
            prop, pre = laplace_proposal(target, prop.mean, s["inflation"], s["prior_fraction"])
        x, lam = proposal_sample(k_x, prop, prior_draw, n), 0.0
        log_q = partial(proposal_logpdf, prop, target.logprior)
    with _external.session(executor):
        res = run(
            k_run,
            target,
            log_q,
            x,
            s["budget"] - pre,
            lam=lam,
            move=move,
            max_stages=s["max_stages"],
            target_ess=s["target_ess"],
        )
    return res._replace(evaluations=res.evaluations + pre)
