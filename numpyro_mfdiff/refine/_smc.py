"""Adaptive tempered SMC with MCMC rejuvenation for one observation (docs/method.md).

The engine of a refinement whose particles move, on BlackJAX's adaptive tempered SMC
(the steps of :func:`blackjax.smc.adaptive_tempered.build_kernel`: BlackJAX's
``ess_solver`` for the next temperature, then its tempered kernel; Chopin &
Papaspiliopoulos 2020, ch. 17): particles start from a tractable proposal ``q`` and
follow the geometric bridge ``pi_l ~ q^(1 - l) (p L)^l`` from ``l = 0`` to the posterior
at ``l = 1``; each stage picks the next ``l`` where the ESS of the increment is
``TARGET_ESS`` of the particles, resamples (systematic) and moves every particle by MCMC
on the current bridge target. Moves are HMC (:mod:`blackjax.mcmc.hmc`) for models JAX
differentiates, or random-walk Metropolis (:mod:`blackjax.mcmc.random_walk`) for
external simulators; between stages the mass matrix (HMC) or proposal covariance
(``2.38^2 / d`` times it, random walk) is the particles' covariance (at ``l = 1``, that
of the stage before: not of the particles resampled and moved) and the step size
follows the last stage's acceptance. ``q`` is a Gaussian (a Laplace approximation found
from ``G_low``'s mean for a differentiable model, else fitted to ``G_low``'s draws)
(covariance inflated) mixed with a defensive share of the prior.

Pure functions of a :class:`Target` (built from a model by
:func:`~numpyro_mfdiff._smc_start.model_target`): :func:`run`, returning an
:class:`SMCResult` with a :class:`StageInfo` per stage.
Every evaluation of the model, with or without its gradient, counts against the budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.mcmc import random_walk
from blackjax.smc import ess, resampling, solver, tempered, waste_free

from . import _sequential
from ._weights import pool_by_ess

__all__ = ["SMC_MIN_DIM", "StageInfo", "SMCResult", "Target"]
__all__ += ["choose_engine", "num_particles", "stage_cost", "run"]

# the automatic engine: SMC above this many latent coordinates; below, importance
# sampling, from SMC's start or from KDEs as the start's draws decide (_smc_start.probe_start)
SMC_MIN_DIM = 10
# the ESS of each tempering increment, as a fraction of the particles (BlackJAX's target_ess)
TARGET_ESS = 0.5
# MCMC moves per stage and leapfrog steps per HMC move
NUM_MCMC_STEPS = {"hmc": 1, "rmh": 5}
NUM_LEAPFROG = 5
# waste-free SMC (Dau & Chopin 2022): n / P particles resampled, each the start of a
# chain of P - 1 moves whose every state is kept (None: NUM_MCMC_STEPS moves of each;
# the random walk's short steps need many independent starts)
WASTE_FREE_P = {"hmc": 20, "rmh": None}
# the acceptance rate the step size is tuned towards, per move
TARGET_ACCEPT = {"hmc": 0.75, "rmh": 0.25}
# particles: as many as let the budget pay STAGES stages (STAGES_PER_DIM per latent
# coordinate in higher dimension: the path to l = 1 grows with it), within these bounds
# (fewer particles and more stages beat the converse: the stages at l = 1 decorrelate
# the particles; measured on benchmarks/bench_dimension.py vi32 and vi64, docs/method.md)
PARTICLES = (60, 1_000)
STAGES = 24
STAGES_PER_DIM = 0.6
# the first stage's ESS at l = 1 (a fraction of the particles) above which the start
# q is a good importance proposal: the rest of the budget draws from q (IS_BATCH
# particles at a time), every evaluation an independent weighted draw
IS_ESS = 0.5
IS_BATCH = 10
# the first stages at l = 1 left out of the result: the first moves particles reweighted
# from the last temperature (vi32, seeds 4-7: kept, means 0.05-0.11 sd off, left out
# 0.04-0.07), the next can start far off (vi64 key 2: tau 1.9 and 1.1 sd high); three,
# with the stage before's covariance: vi64 keys 2-5 within 0.06 sd of the exact
# posterior (docs/method.md)
FINAL_BURN = 3


class StageInfo(NamedTuple):
    """One SMC stage: the temperature ``lam`` reached, the ``move`` (``"hmc"``/``"rmh"``),
    the particles, their ESS after the stage's reweighting, the mean acceptance of the
    moves, the step size they used, the model evaluations spent (simulations and
    gradient evaluations alike) and the wall time."""

    lam: float
    move: str
    particles: int
    ess: float
    acceptance: float
    step_size: float
    evaluations: int
    seconds: float


class SMCResult(NamedTuple):
    """The final particles ``theta`` (N, D), their log-weights ``log_w`` (N,),
    log-likelihoods ``loglik`` (N,) and prior log densities ``logprior`` (N,), the
    temperature ``lam`` reached, a :class:`StageInfo` per stage and the evaluations spent."""

    theta: np.ndarray
    log_w: np.ndarray
    loglik: np.ndarray
    logprior: np.ndarray
    lam: float
    stages: tuple
    evaluations: int


class Target(NamedTuple):
    """``loglik`` and ``logprior``: theta (D,) unconstrained -> scalar (JAX functions);
    ``differentiable``: False when the model calls an external (non-JAX) simulator."""

    loglik: Callable
    logprior: Callable
    differentiable: bool


def choose_engine(engine: str, dim: int) -> str:
    """``"is"`` or ``"smc"`` for a setting ``engine`` (``"auto"``: SMC above
    ``SMC_MIN_DIM`` latent coordinates, where importance sampling from a KDE of the
    pool no longer overlaps the posterior; ``"is"`` below, which ``refine`` turns into
    ``"smc"`` when the start's draws say so, :func:`~numpyro_mfdiff._smc_start.probe_start`)."""
    if engine != "auto":
        return engine
    return "smc" if dim > SMC_MIN_DIM else "is"


def num_particles(budget: int, move: str = "hmc", dim: int = 0) -> int:
    """Particles for a budget of evaluations: as many as let it pay
    ``max(STAGES, STAGES_PER_DIM dim)`` stages (:func:`stage_cost`) for ``dim`` latent
    coordinates, within ``PARTICLES``, a multiple of the move's ``WASTE_FREE_P``."""
    lo, hi = PARTICLES
    stages = max(STAGES, round(STAGES_PER_DIM * dim))
    n = int(min(max(budget * 1000 // (stages * stage_cost(move, 1000)), lo), hi))
    p = WASTE_FREE_P[move]
    return n - n % p if p else n


def stage_cost(move: str, n: int, adaptive: bool = True) -> int:
    """Model evaluations of one stage of ``n`` particles: the log-likelihood at every
    particle for the next temperature (``adaptive``) and for the weights, the MCMC
    states' initial log density (and gradient), and every HMC leapfrog step (one
    gradient evaluation) or random-walk proposal (one simulation): waste-free, ``n / P``
    chains of ``P - 1`` moves, or ``NUM_MCMC_STEPS`` moves of every particle."""
    per_move = NUM_LEAPFROG if move == "hmc" else 1
    if WASTE_FREE_P[move]:
        m = n // WASTE_FREE_P[move]
        return int(adaptive) * n + n + m + (n - m) * per_move
    return n * (int(adaptive) + 2 + NUM_MCMC_STEPS[move] * per_move)


def _move_fns(move: str):
    """BlackJAX's ``(step_fn, init_fn)`` of a move; the step's parameters are
    ``step_size`` and ``inverse_mass_matrix`` (HMC) or ``chol`` (random walk)."""
    if move == "hmc":
        step = partial(blackjax.hmc.build_kernel(), num_integration_steps=NUM_LEAPFROG)
        return step, blackjax.hmc.init
    additive = random_walk.build_additive_step()

    def rmh_step(key, state, logdensity_fn, chol):
        return additive(
            key, state, logdensity_fn, lambda k, x: chol @ jax.random.normal(k, x.shape)
        )

    return rmh_step, random_walk.init


def _kernels(log_q, path_ll, move, n):
    """Jitted BlackJAX pieces of a stage: ``delta(x (N, D), lam) -> (delta, ll (N,))``,
    the increment of ESS ``TARGET_ESS`` from the bridge log-likelihoods ``ll`` at the
    particles (``ess_solver``, as the adaptive tempered kernel computes it), and the
    tempered kernel ``(key, state, num_mcmc_steps, lam', params)``."""
    step, init = _move_fns(move)
    extra = {}
    if WASTE_FREE_P[move]:
        extra["update_strategy"] = waste_free.waste_free_smc(n, WASTE_FREE_P[move])
    kernel = tempered.build_kernel(log_q, path_ll, step, init, resampling.systematic, **extra)

    def delta(x, lam):
        ll = jax.vmap(path_ll)(x)
        ll = jnp.where(jnp.isfinite(ll), ll, -jnp.inf)
        return _increment(ll, lam), ll

    return jax.jit(delta), jax.jit(kernel, static_argnums=2)


def _increment(ll, lam):
    """The temperature increment from ``lam`` whose weights ``exp(d ll)`` (ll (N,), the
    bridge log-likelihoods) keep an ESS of ``TARGET_ESS`` of the particles (BlackJAX's
    ``ess_solver``, as its adaptive tempered kernel computes it), at most ``1 - lam``."""
    d = ess.ess_solver(lambda v: v, ll, TARGET_ESS, 1.0 - lam, solver.dichotomy)
    return jnp.clip(d, 0.0, 1.0 - lam)


def _params(move, x, w, step_size):
    """The shared MCMC parameters of a stage from the particles ``x`` (N, D) and their
    weights ``w`` (N,): the covariance as HMC's inverse mass matrix, or its Cholesky
    factor times ``step_size`` as the random walk's proposal scale."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64) / np.sum(w)
    c = x - w @ x
    cov = (c * w[:, None]).T @ c
    # shrunk a tenth towards its diagonal: full rank even from few distinct particles
    cov = 0.9 * cov + 0.1 * np.diag(np.diag(cov))
    cov += np.diag(1e-6 * np.maximum(np.diag(cov), 1e-8)) + 1e-10 * np.eye(x.shape[1])
    if move == "hmc":
        return dict(
            step_size=jnp.asarray([step_size], jnp.float32),
            inverse_mass_matrix=jnp.asarray(cov[None], jnp.float32),
        )
    return dict(chol=jnp.asarray((step_size * np.linalg.cholesky(cov))[None], jnp.float32))


def initial_step_size(move: str, dim: int) -> float:
    """The first stage's step size: ``d^(-1/4)`` for HMC with the particles' covariance
    as mass matrix, ``2.38 / sqrt(d)`` for the random walk (Roberts et al. 1997)."""
    return float(dim**-0.25) if move == "hmc" else float(2.38 / np.sqrt(dim))


def _first_stage(x, lam, delta_fn, ll=None):
    """The first increment from exact draws ``x`` of ``q`` (no move needed): the state
    weighted for the increment of ESS ``TARGET_ESS`` (from the bridge log-likelihoods
    ``ll`` (N,) at ``x`` when given, else evaluated)."""
    if ll is None:
        d, ll = delta_fn(x, jnp.float32(lam))
    else:
        ll = jnp.asarray(np.where(np.isfinite(ll), ll, -np.inf), jnp.float32)
        d = _increment(ll, lam)
    log_w = d * ll
    w = jnp.exp(log_w - jnp.max(log_w))
    return tempered.TemperedSMCState(x, w / w.sum(), jnp.asarray(lam + d, jnp.float32))


def _parts(target, log_q):
    """Jitted ``theta (n, D) -> (loglik, logprior, log q)`` (each (n,), float64 NumPy;
    one model evaluation per row), the log-likelihood ``-inf`` where not finite."""

    @jax.jit
    @jax.vmap
    def parts(theta):
        ll = target.loglik(theta)
        return jnp.where(jnp.isfinite(ll), ll, -jnp.inf), target.logprior(theta), log_q(theta)

    return lambda x: tuple(np.asarray(v, np.float64) for v in parts(jnp.asarray(x)))


def _path_log_w(parts) -> np.ndarray:
    """The bridge's full log-weights ``log p + log L - log q`` of :func:`_parts`' output
    (``-inf`` where undefined: outside both ``q`` and the posterior)."""
    ll, lp, lq = parts
    lw = lp + ll - lq
    return np.where(np.isnan(lw), -np.inf, lw)


def _importance(rng_key, parts, draw_q, x, first, budget, t0):
    """Importance sampling from ``q`` itself: the draws ``x`` (N, D) (``first``: their
    ``parts``) and more from ``draw_q(key, m)`` in batches of ``IS_BATCH`` N until
    ``budget`` evaluations, each weighted ``p L / q``. Returns the :class:`SMCResult`
    (temperature 1; a :class:`StageInfo` of move ``"is"`` per batch)."""
    n, xs, out, stages = x.shape[0], [np.asarray(x, np.float32)], [first], []
    while True:
        lw = np.concatenate([_path_log_w(o) for o in out])
        m = xs[-1].shape[0]
        ess_ = _sequential.ess(lw)
        stages.append(StageInfo(1.0, "is", lw.size, ess_, 1.0, 0.0, m, time.perf_counter() - t0))
        spent = sum(v.shape[0] for v in xs)
        if spent >= budget:
            break
        t0 = time.perf_counter()
        rng_key, key = jax.random.split(rng_key)
        xs.append(np.asarray(draw_q(key, min(IS_BATCH * n, budget - spent)), np.float32))
        out.append(parts(xs[-1]))
    loglik, logprior = (np.concatenate([o[i] for o in out]) for i in range(2))
    lw = lw - np.logaddexp.reduce(lw)
    return SMCResult(np.concatenate(xs), lw, loglik, logprior, 1.0, tuple(stages), spent)


def _stage_info(state, move, acc, step_size, cost, t0):
    w = np.asarray(state.weights, np.float64)
    return StageInfo(
        lam=float(state.tempering_param),
        move=move,
        particles=int(w.size),
        ess=float(w.sum() ** 2 / (w**2).sum()),
        acceptance=acc,
        step_size=float(step_size),
        evaluations=int(cost),
        seconds=time.perf_counter() - t0,
    )


def run(
    rng_key,
    target: Target,
    log_q: Callable,
    particles,
    budget: int,
    *,
    lam: float = 0.0,
    move: str | None = None,
    max_stages: int | None = None,
    target_ess: float | None = None,
    draw_q: Callable | None = None,
) -> SMCResult:
    """Temper ``particles`` (N, D), drawn from ``q`` (``log_q``: theta (D,) -> scalar),
    from ``lam`` to the posterior of ``target`` within ``budget`` model evaluations.

    From ``lam = 0`` the first stage only reweights (the particles are exact draws of
    ``q``). Each later stage computes the next temperature and calls BlackJAX's
    tempered kernel on the bridge ``log q + l (log p + log L - log q)``; when the
    budget allows only one more stage it goes straight to ``l = 1``; once at ``l = 1``
    the budget left goes into further resample-and-move stages at the posterior (each
    with the covariance of the stage before the one it resamples), and
    the particles of every stage at ``l = 1`` but the first ``FINAL_BURN`` (when there
    are more) form the result (each stage's weights times its share of the summed
    ESS). ``move`` defaults to HMC for a differentiable target, else the random walk.
    It stops after ``max_stages`` stages, or once at ``l = 1`` with an ESS of
    ``target_ess``.

    With ``draw_q`` (``(key, m) -> (m, D)`` draws of ``q``) and ``lam = 0``, when the
    first stage's weights at ``l = 1`` keep an ESS of ``IS_ESS`` of the particles, ``q``
    is close enough to the posterior for plain importance sampling, which spends the
    budget better than moves (every evaluation an independent draw): the rest of the
    budget draws from ``q`` (:func:`_importance`).
    """
    move = move or ("hmc" if target.differentiable else "rmh")
    x = jnp.asarray(particles, jnp.float32)
    n, dim = x.shape

    def path_ll(theta):
        v = target.logprior(theta) + target.loglik(theta) - log_q(theta)
        return jnp.where(jnp.isnan(v), -jnp.inf, v)  # -inf - -inf: out of both

    delta_fn, kernel = _kernels(log_q, path_ll, move, n)
    step_size, spent, stages = initial_step_size(move, dim), 0, []
    state = tempered.init(x)._replace(tempering_param=jnp.asarray(lam, jnp.float32))
    if lam < 1.0:
        t0 = time.perf_counter()
        full = None
        if draw_q is not None and lam == 0.0 and max_stages is None:
            parts = _parts(target, log_q)
            first = parts(x)
            full = _path_log_w(first)
            if _sequential.ess(full) >= IS_ESS * n:
                return _importance(rng_key, parts, draw_q, x, first, budget, t0)
        state = _first_stage(x, lam, delta_fn, full)
        spent = n
        stages.append(_stage_info(state, "none", 1.0, 0.0, n, t0))
    k_mcmc, finals = (None if WASTE_FREE_P[move] else NUM_MCMC_STEPS[move]), []
    while max_stages is None or len(stages) < max_stages:
        lam = float(state.tempering_param)
        if lam >= 1.0 and target_ess is not None and stages and stages[-1].ess >= target_ess:
            break
        cost = stage_cost(move, n, adaptive=lam < 1.0)
        final = n * max(len(finals) + 1 - FINAL_BURN, 1)  # the particles kept: their loglik
        if spent + cost + final > budget:
            break
        t0 = time.perf_counter()
        rng_key, key = jax.random.split(rng_key)
        x_c, w_c = state.particles, state.weights
        if lam >= 1.0 and len(finals) > 1:
            # the stage before's covariance: from the particles the stage moves, it made
            # each move depend on its start and the pool drifted (vi64 from 580 exact
            # draws at l = 1: tau 0.09-0.12 sd low; docs/method.md)
            x_c, w_c = finals[-2]
        params = _params(move, x_c, w_c, step_size)
        last = spent + cost + stage_cost(move, n) + final + n > budget
        last = last or (max_stages is not None and len(stages) == max_stages - 1)
        lam_next = 1.0
        if lam < 1.0 and not last:
            lam_next = lam + float(delta_fn(state.particles, state.tempering_param)[0])
        state, info = kernel(key, state, k_mcmc, jnp.float32(min(lam_next, 1.0)), params)
        acc = float(jnp.nan_to_num(jnp.mean(info.update_info.acceptance_rate)))
        stages.append(_stage_info(state, move, acc, step_size, cost, t0))
        if float(state.tempering_param) >= 1.0:
            finals.append((state.particles, state.weights))
        spent += cost
        step_size *= float(np.clip(np.exp(2.0 * (acc - TARGET_ACCEPT[move])), 0.25, 2.0))
    if not finals:
        finals.append((state.particles, state.weights))
    finals = finals[min(FINAL_BURN, len(finals) - 1) :]
    theta = jnp.concatenate([p for p, _ in finals])
    with np.errstate(divide="ignore"):
        log_w = pool_by_ess([np.log(np.asarray(w, np.float64)) for _, w in finals])
    loglik = np.asarray(jax.jit(jax.vmap(target.loglik))(theta), np.float64)
    logprior = np.asarray(jax.jit(jax.vmap(target.logprior))(theta), np.float64)
    return SMCResult(
        np.asarray(theta, np.float32),
        log_w,
        loglik,
        logprior,
        float(state.tempering_param),
        tuple(stages),
        spent + len(finals) * n,
    )
