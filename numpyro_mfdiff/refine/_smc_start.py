"""Where the particles of a tempered-SMC refinement start (:mod:`~numpyro_mfdiff._smc`).

The initial proposal ``q``: a Gaussian mixed with a defensive share of the prior
(:class:`Proposal`, :func:`proposal_logpdf`, :func:`proposal_sample`), the Gaussian a
Laplace approximation for a differentiable model (:func:`laplace_proposal`, searched from
``G_low``'s mean) or fitted to ``G_low``'s draws (:func:`fit_proposal`); and
:func:`refine_stages`, the SMC stages of one ``refine`` call from there, on the
:class:`~numpyro_mfdiff._smc.Target` of :func:`model_target`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc import resampling

from .._model import _external
from .._model._density import substituted_trace as _substituted_trace
from . import _sequential, _smc
from ._kde import KDE
from ._smc import Target, num_particles, run, stage_cost
from ._weights import pool_by_ess

__all__ = [
    "Proposal",
    "fit_proposal",
    "hessian",
    "laplace_proposal",
    "model_target",
    "probe_start",
    "proposal_logpdf",
    "proposal_sample",
    "refine_stages",
]

# where the particles of a new refinement start (``settings["start"]``, see
# refine_stages): "proposal" (the Laplace Gaussian, or one fitted to G_low's draws, with
# the prior's share), "low" (multi-fidelity tempering from the low-fidelity posterior
# when refine is given another differentiable model, else "proposal") or "prior".
# "proposal" won on every example measured (benchmarks/bench_fidelity.py,
# docs/method.md section 6), so it is the default.
STARTS = ("proposal", "low", "prior")
# start "low"'s power g on the low-fidelity likelihood (``settings["low_power"]``): the
# particles start at p L_low^g, about 1/sqrt(g) wider than the low-fidelity posterior,
# and temper p L_low^(g (1 - l)) L_high^l (g = 1: the low-fidelity posterior; g -> 0:
# the prior). 1/4 was the only power tried that needed fewer high-fidelity evaluations
# than the prior start on OU, Burgers and runaway (within 0.1 sd, sd ratios 0.9-1.1 at
# seeds 0-2: 16,000 / 8,000 / 16,000, the prior > 16,000 / > 16,000 / 32,000; Lorenz 63
# 32,000, the prior 64,000; g = 1 more than the prior; benchmarks/bench_fidelity.py,
# docs/method.md)
LOW_POWER = 0.25
# the most L-BFGS iterations of the Laplace start, and the factor on its covariance's
# square root (a little wider than the posterior: the importance weights from q, when
# q is that close, keep ~60% of the particles, issue 26's logistic regression)
LAPLACE_ITER = 200
LAPLACE_INFLATION = 1.1
# engine="auto" at low dimension: importance sampling from the Laplace start when its
# draws keep an ESS of IS_ESS at the posterior and G_low's draws have at most SPREAD
# times its variance in every direction (else the KDE engine: several modes, heavy tails)
SPREAD = 4.0
# the probe's draws: a stage, but at most a quarter of the budget (a refinement of one
# stage, num_simulations = budget, is probed too; the KDE engine keeps three quarters
# when q fails) and at least PROBE_MIN, for an ESS to judge q by
PROBE_MIN = 50


class Proposal(NamedTuple):
    """The initial proposal: a Gaussian (``mean`` (D,), Cholesky factor ``chol`` (D, D))
    with weight ``1 - prior_fraction``, and the prior with weight ``prior_fraction``."""

    mean: np.ndarray
    chol: np.ndarray
    prior_fraction: float


def model_target(model, spec, args, kwargs, y, log_prior) -> Target:
    """The :class:`Target` of flat observation ``y`` (M,) under ``model``: the observed
    sites conditioned on ``y`` and the latent sites substituted with ``theta``
    constrained (NumPyro's ``substitute``/``condition``), their log densities summed
    (``-inf`` where not finite); ``log_prior`` (batched, (n, D) -> (n,)) the prior's."""
    obs = spec.unravel_obs(jnp.asarray(y))
    obs = {n: v.astype(spec.observed_dtypes[n]) for n, v in obs.items()}

    def loglik(theta):
        tr = _substituted_trace(model, args, kwargs or {}, spec.constrain(theta), obs)
        ll = sum(jnp.sum(tr[n]["fn"].log_prob(tr[n]["value"])) for n in spec.observed_shapes)
        return jnp.where(jnp.isfinite(ll), ll, -jnp.inf)

    def logprior(theta):
        return log_prior(theta[None])[0]

    calls = _external.count_traced_calls(lambda: jax.eval_shape(loglik, jnp.zeros(spec.dim)))
    return Target(loglik, logprior, calls == 0)


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
    search plus those of :func:`hessian`."""
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
    h, evaluations = hessian(neg, mode)
    vals, vecs = np.linalg.eigh(0.5 * (h + h.T))
    vals = np.maximum(vals, 1e-3 * max(vals.max(), 1e-6))
    cov = (vecs / vals) @ vecs.T * inflation**2
    chol = np.linalg.cholesky(cov + 1e-9 * np.eye(cov.shape[0]))
    return Proposal(mode, chol, float(prior_fraction)), int(res.nfev) + evaluations


def hessian(fn: Callable, x) -> tuple[np.ndarray, int]:
    """``(H (D, D), gradient evaluations)`` of scalar ``fn`` at ``x`` (D,): forward over
    reverse (``jax.hessian``, one gradient per column), or, where forward mode is not
    defined (a ``custom_vjp`` such as diffrax's checkpointed adjoint, which adaptive ODE
    solves use), central differences of the gradient (``2 D`` gradients, steps
    ``1e-3 max(1, |x_i|)``; exact for a Gaussian posterior, a proposal's accuracy
    elsewhere; not symmetrised: :func:`laplace_proposal` does)."""
    x = jnp.asarray(x, jnp.float32)
    try:
        return np.asarray(jax.jit(jax.hessian(fn))(x), np.float64), x.size
    except TypeError as e:  # "can't apply forward-mode autodiff (jvp) to a custom_vjp"
        if "jvp" not in str(e):
            raise
    steps = jnp.diag(1e-3 * jnp.maximum(1.0, jnp.abs(x)))
    up, down = x + steps, x - steps  # (D, D): row i moves coordinate i
    g = jax.jit(jax.vmap(jax.grad(fn)))
    diff = np.asarray(g(up), np.float64) - np.asarray(g(down), np.float64)
    return diff / np.asarray(jnp.diag(up - down), np.float64)[:, None], 2 * x.size


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


def _resampled(key, theta, log_w, n):
    """``n`` rows of ``theta`` (N, D) resampled (systematic) by the log-weights (N,)."""
    w = np.exp(log_w - np.max(log_w))
    return theta[np.asarray(resampling.systematic(key, jnp.asarray(w / w.sum()), n))]


def _proposal_start(key, target, y, n, s, prior_draw, low_draw):
    """``(x (n, D), log_q, draw_q, evaluations, proposal, fitted)`` of the start ``q``: a
    Gaussian fitted to ``G_low``'s draws (``fitted``, a :class:`Proposal`), the Laplace
    approximation of ``target`` from their mean when it is differentiable (its search's
    evaluations counted), with the prior's share."""
    k_q, k_x = jax.random.split(key)
    prop = fit_proposal(low_draw(k_q, y, max(4 * n, 2_000)), s["inflation"], s["prior_fraction"])
    fitted, pre = prop, 0
    if target.differentiable:  # G_low's mean starts the search for the mode
        prop, pre = laplace_proposal(target, prop.mean, LAPLACE_INFLATION, s["prior_fraction"])

    def draw_q(k, m):
        return proposal_sample(k, prop, prior_draw, m)

    log_q = partial(proposal_logpdf, prop, target.logprior)
    return draw_q(k_x, n), log_q, draw_q, pre, prop, fitted


def _scaled(fn, factor, theta):
    """``factor * fn(theta)``."""
    return factor * fn(theta)


def _low_posterior(key, low_t, y, n, s, prior_draw, low_draw, power=LOW_POWER):
    """Multi-fidelity tempering's start: ``n`` particles (n, D) of the tempered
    low-fidelity posterior ``p L_low^power`` (the same SMC on ``low_t``, its likelihood
    raised to ``power``, with ``s["budget"]`` low-fidelity evaluations, resampled), its
    unnormalised log density as ``log q`` and its stages (move ``"<move>-low"``:
    low-fidelity evaluations, not in the budget)."""
    k_start, k_run, k_res = jax.random.split(key, 3)
    if power != 1.0:
        low_t = low_t._replace(loglik=partial(_scaled, low_t.loglik, power))
    x, log_q, draw_q, pre, *_ = _proposal_start(k_start, low_t, y, n, s, prior_draw, low_draw)
    res = run(k_run, low_t, log_q, x, s["budget"] - pre, draw_q=draw_q)
    x = _resampled(k_res, res.theta, res.log_w, n)
    stages = [st._replace(move=f"{st.move}-low") for st in res.stages]
    stages[0] = stages[0]._replace(evaluations=stages[0].evaluations + pre)

    def log_post(theta):
        return low_t.logprior(theta) + low_t.loglik(theta)

    return x, log_post, tuple(stages)


def refine_stages(key, y, ref, high, log_prior, prior_draw, low_draw, s, executor=None, low=None):
    """The SMC stages of one ``refine`` call for flat ``y`` (M,) on the model of ``high``
    (a :class:`~numpyro_mfdiff._refinement.HighFidelity`) within the settings ``s`` of
    ``check_settings``. A new refinement starts from ``q`` of :func:`_proposal_start`
    (the Laplace approximation searched from ``G_low``'s draws), or, with
    ``s["start"] == "low"`` when ``high`` is another model than ``low`` (the inference's, a
    ``HighFidelity`` too) and both are differentiable, from the tempered low-fidelity
    posterior ``p L_low^g`` (``g = s.get("low_power", LOW_POWER)``), tempering
    ``p L_low^(g (1-l)) L_high^l`` (multi-fidelity tempering, :func:`_low_posterior`), or
    with ``s["start"] == "prior"`` from the prior
    (``"proposal"`` when ``s`` has no ``"start"``: benchmarks/bench_fidelity.py sets
    it). A record of SMC continues from its particles resampled at ``l = 1``, and the
    new particles are pooled with the record's (:func:`_pooled`). Returns the
    :class:`SMCResult` (the low-fidelity stages first); a ``ValueError`` when the budget
    cannot pay a stage."""
    target = model_target(high.model, high.spec, high.args, high.kwargs, y, log_prior)
    move = "hmc" if target.differentiable else "rmh"
    n = num_particles(s["budget"], move, high.spec.dim)
    if s["budget"] < stage_cost(move, n) + n:
        raise ValueError(
            f"max_simulations={s['budget']} is below one SMC stage of {n} particles "
            f"({stage_cost(move, n) + n} model evaluations); raise it or use engine='is'"
        )
    k_q, k_x, k_run = jax.random.split(key, 3)
    pre, draw_q, low_stages, lam = 0, None, (), 0.0  # pre: the Laplace search's evaluations
    start = s.get("start", "proposal")
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    cont = ref.engine == "smc" and ref.theta.shape[0] > 0  # continue at the posterior
    mf = start == "low" and not cont and low is not None and not high.same
    mf = mf and target.differentiable
    low_t = model_target(low.model, low.spec, low.args, low.kwargs, y, log_prior) if mf else None
    if cont:
        x, lam, log_q = _resampled(k_x, ref.theta, ref.log_w, n), 1.0, target.logprior
    elif start == "prior":
        x, log_q = np.asarray(prior_draw(jax.random.split(k_x, n))), target.logprior
    elif mf and low_t.differentiable:  # temper p L_low -> p L_high
        g = s.get("low_power", LOW_POWER)
        x, log_q, low_stages = _low_posterior(k_q, low_t, y, n, s, prior_draw, low_draw, g)
    else:
        x, log_q, draw_q, pre, *_ = _proposal_start(k_q, target, y, n, s, prior_draw, low_draw)
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
            draw_q=draw_q,
        )
    res = res._replace(evaluations=res.evaluations + pre, stages=low_stages + res.stages)
    return _pooled(ref, res) if cont and ref.lam >= 1.0 and res.lam >= 1.0 else res


def _pooled(ref, res):
    """A continuation's result ``res`` pooled with the record ``ref`` it continued (both
    at l = 1) by ESS share (:func:`~._weights.pool_by_ess`, as :func:`run` pools its
    stages at l = 1), so that more budget never throws the record away (on Lorenz 63 an
    importance-sampling record of ESS 3,427, 0.023 sd off, gave way to HMC stages of
    60 particles, ESS 420 and 0.22 sd off)."""
    return res._replace(
        theta=np.concatenate([ref.theta, res.theta]).astype(np.float32),
        log_w=pool_by_ess([ref.log_w, res.log_w]),
        loglik=np.concatenate([ref.loglik, res.loglik]).astype(np.float64),
        logprior=np.concatenate([ref.logprior, res.logprior]).astype(np.float64),
    )


class Probe(NamedTuple):
    """The Laplace start's draws ``theta`` (m, D) (the last ``n_prior`` from the prior) with
    their ``loglik`` and ``logprior`` (m,), the start's Gaussian as a one-kernel ``kde``,
    and ``info``, a :class:`~numpyro_mfdiff._sequential.StageInfo` at temperature 1 (its
    ``simulations`` count the Laplace search too, its ``ess`` the draws' at l = 1)."""

    theta: np.ndarray
    loglik: np.ndarray
    logprior: np.ndarray
    kde: KDE
    n_prior: int
    info: _sequential.StageInfo


def probe_start(key, y, high, log_prior, prior_draw, low_draw, s):
    """``engine="auto"`` at low dimension: draw a stage from the Laplace
    start ``q`` of a differentiable model and weigh them at the posterior. When their
    ESS is at least ``IS_ESS`` of the draws and ``G_low``'s draws spread at most
    ``SPREAD`` times ``q``'s variance in every direction (a posterior with several modes
    or heavy tails would spread them wider), ``q`` is a good importance proposal: the
    rest of the budget draws from it (:func:`~numpyro_mfdiff._smc.run`'s importance
    sampling), returned as an :class:`~numpyro_mfdiff._smc.SMCResult`; else (several
    modes, heavy tails) a :class:`Probe` whose draws join the importance-sampling
    engine's pool (none when ``G_low``'s spread alone rules ``q`` out: then only the
    Laplace search is spent). The probe draws a stage, at most a quarter of the budget.
    ``None`` (nothing spent) for a model JAX cannot differentiate, a fixed number of
    stages or a budget below ``4 PROBE_MIN``."""
    t0 = time.perf_counter()
    target = model_target(high.model, high.spec, high.args, high.kwargs, y, log_prior)
    m = min(s["stage"], s["budget"] // 4)
    if not target.differentiable or s["max_stages"] is not None or m < PROBE_MIN:
        return None
    k_q, k_run = jax.random.split(key)
    x, log_q, draw_q, pre, prop, fitted = _proposal_start(
        k_q, target, y, m, s, prior_draw, low_draw
    )
    # G_low's draws spread wider than q in some direction: mass q may miss (more modes),
    # so the KDE engine, and nothing spent on q's draws
    a = np.linalg.solve(prop.chol, fitted.chol / s["inflation"])
    if np.linalg.eigvalsh(a @ a.T).max() > SPREAD:
        x = x[:0]
    parts = _smc._parts(target, log_q)
    first = parts(x) if x.shape[0] else (np.zeros(0),) * 3
    ess = _sequential.ess(_smc._path_log_w(first)) if x.shape[0] else 0.0
    if ess >= _smc.IS_ESS * m:
        res = _smc._importance(k_run, parts, draw_q, x, first, s["budget"] - pre, t0)
        stages = (res.stages[0]._replace(evaluations=res.stages[0].evaluations + pre),)
        return res._replace(evaluations=res.evaluations + pre, stages=stages + res.stages[1:])
    n_prior = int(round(prop.prior_fraction * x.shape[0]))
    kde = KDE(prop.mean[None], prop.chol[None], np.zeros(1, np.int32), np.ones(1))
    kde = KDE(*(np.asarray(v, np.float32) for v in kde[:2]), kde.group, kde.bandwidth)
    failed = int(np.sum(~np.isfinite(first[0])))
    info = _sequential.StageInfo(1.0, x.shape[0] + pre, n_prior, failed, [1.0], 0, ess, 0.0)
    info = info._replace(seconds=time.perf_counter() - t0)
    return Probe(x, first[0], first[1], kde, n_prior, info)
