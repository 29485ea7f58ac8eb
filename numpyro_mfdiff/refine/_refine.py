"""Multi-fidelity refinement for one observation ``y*`` (METHOD.md, sections 5 and 8).

The orchestrator over the sequential engine of ``_sequential.py``: stages of
simulations of the (high-fidelity) model, each proposed from a KDE of the
points gathered so far at an adaptively raised temperature (the first stage
of a high-fidelity refinement from ``G_low``'s draws), every point weighted
with the balance heuristic over all proposals, the prior included:

    log w_j = log p_hf(y* | theta_j) + log p(theta_j) - log q(theta_j).

After the stages, the ODE with these weights (whitened, its end point
smoothed by a kernel chosen from the ESS) labels ``(z, theta)`` pairs and an
unconditional generator ``G_high(z)`` is fitted.

Nothing here knows :class:`MFDiff`, which passes what refinement reads as two frozen
contexts (:class:`OdeConfig`, :class:`RefineContext`), the model to simulate as a
:class:`HighFidelity`, and what it needs of the low-fidelity sampler and the prior as
plain callables; the record of an observation is a frozen :class:`Refinement` that
:func:`refine` returns anew. The records and the checks of a call's arguments are in
:mod:`~numpyro_mfdiff._refinement` (and importable from here).
"""

from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .. import _model
from .._progress import progress
from ..diffusion._ode import sample_pruned
from ..diffusion._schedule import time_at_noise_ratio
from ..generator._network import (
    Generator,
    calibrate,
    calibrate_centred,
    fit_generator,
    generate,
    generator_check,
    generator_off,
)
from . import _sequential, _smc, _smc_start, _smoothing
from ._kde import bucket
from ._refinement import (
    FitInfo,
    HighFidelity,
    OdeConfig,
    RefineContext,
    Refinement,
    RoundInfo,
)

__all__ = ["fit_high", "ode_draw", "refine"]


def _weighted_standardisation(theta, log_w):
    w = np.exp(log_w - np.max(log_w))
    w = w / w.sum()
    mean = w @ theta
    sd = np.sqrt(np.maximum(w @ (theta - mean) ** 2, 0.0))
    sd = np.where(sd > 1e-6, sd, np.maximum(theta.std(0), 1e-3))
    return mean.astype(np.float32), sd.astype(np.float32)


def ode_draw(ode: OdeConfig, ref, z, batch_size=4096):
    """Draws from the refined Monte Carlo-score ODE for noise ``z`` (S, D).

    The ODE runs on the weighted points whitened by their weighted mean and
    covariance. With ``ref.smoothing = h > 0`` they are shrunk towards their
    mean by ``sqrt(1 - h^2)`` and the ODE stops where ``beta / alpha = h``,
    returning the state instead of the denoised mean: a draw from the
    weighted points' measure convolved with ``N(0, h^2 I)`` (whitened), whose
    mean and covariance are those of the weights (kernel shrinkage, Liu & West
    2001). Without it the ODE returns the points themselves at ``t -> 0``.

    Returns ``(theta (S, D) unconstrained, points_used, dropped_mass)``.
    """
    mean, chol = _sequential.whitening(ref.theta, ref.log_w)
    pts = _sequential.whiten(ref.theta, mean, chol)
    grid, denoise_last = ode.grid, True
    if ref.smoothing > 0:
        pts = np.sqrt(1.0 - ref.smoothing**2) * pts
        t_s = time_at_noise_ratio(ode.schedule, ref.smoothing)
        grid = ode.grid_to(max(t_s, 1e-6))
        denoise_last = False
    u, n_pts, dropped = sample_pruned(
        z,
        jnp.asarray(pts, jnp.float32),
        ref.log_w,
        ode.schedule,
        grid,
        ode.solver,
        ode.prune_tol,
        batch_size,
        denoise_last,
    )
    theta = mean + np.asarray(u, np.float64) @ chol.T
    return theta.astype(np.float32), n_pts, dropped


def high_generator(key, dim, mean, chol, net_config, residual=True) -> Generator:
    """An unconditional ``G_high(z)``: whitened by the weighted ``mean`` (D,) and
    Cholesky factor ``chol`` (D, D), the network fitting the residual from ``z``
    (``residual``: for a posterior of one cluster; with several, the whitened map)."""
    return Generator(
        key,
        0,
        dim,
        theta_mean=np.asarray(mean, np.float32),
        theta_chol=np.asarray(chol, np.float32),
        residual=residual,
        **net_config,
    )


def _simulator(ctx: RefineContext, high: HighFidelity, y, ref):
    """``(key, theta (n, D)) -> (loglik (n,), failed)``: the model of ``high`` run at
    ``theta`` (with the progress bar, checkpoints and executor of ``ctx``) and the
    log-likelihood of ``y`` under each simulation; the calls are the stages after the
    ``ref.rounds`` done so far."""
    loglik = jax.jit(partial(_model.log_likelihood, high.spec))
    stages = itertools.count(len(ref.rounds) + 1)
    # one compiled simulator for every stage, its calls padded to a few sizes
    batch = _model.batch_simulator(high.model, high.spec, high.args, high.kwargs)

    def simulate(key, theta):
        n = theta.shape[0]
        stage = next(stages)
        ckpt = None
        if ctx.checkpoint_dir is not None:
            tag = _model.obs_tag(ref.y)
            ckpt = ctx.checkpoint_dir / f"refine-{tag}" / f"round-{stage}"
        with progress(n, f"refining (stage {stage})", ctx.progress_bar) as update:
            sims = _model.simulate(
                key,
                high.model,
                high.spec,
                n,
                high.args,
                high.kwargs,
                ctx.simulation_chunk_size,
                update,
                theta=theta,
                checkpoint=ckpt,
                executor=ctx.executor,
                max_failure_fraction=ctx.max_failure_fraction,
                batch=batch,
                pad_to=bucket(n, 64),
            )
        ll = np.asarray(loglik(sims.dists, sims.valid, y), np.float64)
        return ll, int(n - sims.valid.sum())

    return simulate


def _run_stages(key, y, ref, simulate, log_prior, prior_draw, low_draw, s, probe=None):
    """The stages of one ``refine`` call from ``ref``'s pool (and a
    :class:`~numpyro_mfdiff._smc_start.Probe`'s draws, its first stage): the final pool,
    the :class:`~numpyro_mfdiff._sequential.StageInfo` of each stage and the simulations
    spent."""
    pool = _sequential.init(
        ref.theta, ref.loglik, ref.logprior, ref.kdes, ref.counts, ref.prior_count, ref.lam
    )
    fresh, spent, infos = pool.theta.shape[0] == 0, 0, []
    if probe is not None and probe.theta.shape[0]:
        pool = _sequential.absorb(
            pool, probe.theta, probe.loglik, probe.logprior, probe.kde, probe.n_prior, pool.lam
        )
    if probe is not None:
        spent, infos = probe.info.simulations, [probe.info]
    while s["max_stages"] is None or len(infos) < s["max_stages"]:
        left = s["budget"] - spent
        n = min(s["stage"], left)
        if s["max_stages"] is None and left - n < s["stage"] // 2:
            n = left  # no tiny last stage
        if n < 2:
            break
        key, k_cand, k_step = jax.random.split(key, 3)
        cands = None
        if fresh:  # a new high-fidelity refinement: start from G_low
            cands, fresh = low_draw(k_cand, y, n), False
        pool, info = _sequential.step(
            k_step,
            pool,
            n,
            simulate,
            prior_draw,
            log_prior,
            inflation=s["inflation"],
            prior_fraction=s["prior_fraction"],
            candidates=cands,
        )
        spent += n
        infos.append(info)
        if s["target_ess"] is not None and pool.lam >= 1.0 and info.ess >= s["target_ess"]:
            break
    return pool, infos, spent


def _engine(setting, dim, ref) -> str:
    """The engine of a ``refine`` call: the record's when it has stages and the setting
    is ``"auto"``, else :func:`~numpyro_mfdiff._smc.choose_engine`'s; importance
    sampling cannot continue SMC's particles (they have no proposal density)."""
    if setting == "auto":
        return ref.engine if ref.rounds else _smc.choose_engine("auto", dim)
    if setting == "is" and ref.engine == "smc" and ref.rounds:
        raise ValueError(
            "engine='is' cannot continue a refinement made by SMC (its particles have no "
            "proposal density); continue with engine='smc' or 'auto'"
        )
    return setting


def _is_stages(key, y, ref, high, ctx, log_prior, prior_draw, low_draw, s, low=None, start=None):
    """Importance-sampling stages (after the draws of a ``start`` probe): the record's new
    fields, the stages and the simulations."""
    simulate = _simulator(ctx, high, y, ref)
    args = (key, y, ref, simulate, log_prior, prior_draw, low_draw, s, start)
    pool, infos, spent = _run_stages(*args)
    if not infos:
        raise ValueError("no refinement round ran: the simulation budget is below 2")
    fields = dict(
        theta=pool.theta,
        loglik=pool.loglik,
        logprior=pool.logprior,
        kdes=tuple(pool.kdes),
        counts=tuple(int(c) for c in pool.counts[1:]),
        prior_count=int(pool.counts[0]),
        lam=pool.lam,
        log_w=_sequential.log_weights(pool, 1.0),
    )
    return fields, infos, spent


def _smc_stages(key, y, ref, high, ctx, log_prior, prior_draw, low_draw, s, low=None, start=None):
    """SMC stages (:func:`~numpyro_mfdiff._smc_start.refine_stages`, or a ``start``'s
    :class:`~numpyro_mfdiff._smc.SMCResult`): the record's new fields, the stages and the
    model evaluations."""
    res = start or _smc_start.refine_stages(
        key, y, ref, high, log_prior, prior_draw, low_draw, s, ctx.executor, low
    )
    fields = dict(
        theta=res.theta,
        loglik=res.loglik,
        logprior=res.logprior,
        kdes=(),
        counts=(),
        prior_count=0,
        lam=res.lam,
        log_w=res.log_w,
    )
    return fields, list(res.stages), res.evaluations


def refine(
    rng_key,
    y,
    ref: Refinement,
    high: HighFidelity,
    ctx: RefineContext,
    *,
    log_prior,
    prior_draw,
    low_draw,
    low: HighFidelity | None = None,
    **settings,
) -> Refinement:
    """Run the refinement stages for ``y`` (M,) within the budget of ``settings``
    (from :func:`check_settings`), simulating ``high``, then label and fit ``G_high``;
    returns the new record (``ref`` with the stages added). ``log_prior`` (theta (n, D)
    -> (n,)) and ``prior_draw`` (keys (n,) -> theta (n, D)) are the prior's, batched;
    ``low_draw(key, y, n)`` gives the first stage's candidates (n, D) of a new
    refinement from the low-fidelity sampler (importance sampling) or the draws SMC's
    initial proposal is fitted to. The engine is ``settings["engine"]`` (``"auto"``:
    see :func:`_engine`); SMC counts every model evaluation, a gradient's included,
    against the budget, and starts from the posterior of ``low`` (the inference's own
    model, a :class:`HighFidelity`) when ``high`` is another model (multi-fidelity
    tempering)."""
    k_stages, k_label = jax.random.split(rng_key)
    t_start = time.perf_counter()
    engine, start = _engine(settings.get("engine", "auto"), ctx.spec.dim, ref), None
    if engine == "is" and settings.get("engine", "auto") == "auto" and not ref.rounds:
        k_probe = jax.random.fold_in(k_stages, 1)  # by the start's ESS
        start = _smc_start.probe_start(k_probe, y, high, log_prior, prior_draw, low_draw, settings)
        engine = "smc" if isinstance(start, _smc.SMCResult) else engine
    stages = _smc_stages if engine == "smc" else _is_stages
    fields, infos, spent = stages(
        k_stages, y, ref, high, ctx, log_prior, prior_draw, low_draw, settings, low, start
    )
    mean, scale = _weighted_standardisation(fields["theta"], fields["log_w"])
    ref = replace(
        ref,
        **fields,
        mean=mean,
        scale=scale,
        num_high_fidelity=ref.num_high_fidelity + spent,
        engine=engine,
    )
    _warn_short(ref, ctx.ess_warning, settings.get("target_ess"))
    w_mean, chol = _sequential.whitening(ref.theta, ref.log_w)
    h, clusters = _sequential.smoothing_bandwidth(
        _sequential.whiten(ref.theta, w_mean, chol), ref.log_w
    )
    if settings["smoothing"] is None:  # narrower where the kernel widens centred sites
        k_h = jax.random.fold_in(k_label, 1)
        h = _smoothing.centred_bandwidth(k_h, ref.theta, ref.log_w, h, ctx.centring)
    ref = replace(
        ref, smoothing=float(h if settings["smoothing"] is None else settings["smoothing"])
    )
    t_rounds = time.perf_counter() - t_start
    # a residual from z suits one cluster; separate modes need the network's switch
    gen, fit = fit_high(
        k_label, ref, ctx, settings["num_labels"], settings["train_steps"], t_rounds, clusters == 1
    )
    rounds = [RoundInfo(i) for i in infos[:-1]] + [RoundInfo(infos[-1], fit)]
    return replace(ref, generator=gen, rounds=ref.rounds + tuple(rounds))


def _warn_short(ref, ess_warning, target_ess):
    """Warn when SMC stopped short of the posterior (temperature 1), when the refinement
    stopped below ``target_ess`` (or short of temperature 1), or with an ESS below
    ``ess_warning``."""
    if ref.engine == "smc" and ref.lam < 1.0:
        # SMC's particles stand for the tempered target, not the posterior
        warnings.warn(
            f"SMC stopped at temperature {ref.lam:.3g} < 1: its particles are not the "
            "posterior; raise max_simulations",
            stacklevel=4,
        )
    elif target_ess is not None and (ref.lam < 1.0 or ref.ess < target_ess):
        warnings.warn(
            f"refinement stopped at temperature {ref.lam:.3g} with ESS {ref.ess:.1f} without "
            f"reaching target_ess={target_ess:g}: the budget ran out; raise max_simulations",
            stacklevel=4,
        )
    elif ref.ess < ess_warning:
        warnings.warn(
            f"the importance ESS after refinement is {ref.ess:.1f} (< {ess_warning:g}): "
            "the high-fidelity posterior rests on few simulations; call refine again "
            "or raise max_simulations",
            stacklevel=4,
        )


def fit_high(key, ref, ctx: RefineContext, num_labels, train_steps, t_rounds, residual=True):
    """Label ``(z, theta)`` pairs with the weighted ODE of ``ref`` and fit ``G_high(z)``.
    Returns the generator and its :class:`FitInfo` (its check against the labels and
    the timings; ``t_rounds``: the stages').

    ``G_high`` is whitened by the particles' weighted mean and covariance and fits the
    residual from ``z`` (``residual``; else the whitened map); with ``residual`` its
    draws are then mapped affinely onto that mean and covariance
    (:func:`~numpyro_mfdiff.generator._network.calibrate`). For a model with non-centred
    sites (``ctx.centring``) a second affine map follows in their centred coordinates
    ``c``, onto the mean and covariance there of the ODE labels it was fitted to (a
    :class:`~numpyro_mfdiff.generator._network.CentredGenerator`; checked against the
    labels in ``c``): on issue 26's 34-parameter varying-intercepts model the first
    kept the second moments of ``(log tau, eta)`` but left the sds of ``alpha = mu +
    tau eta`` up to 11% wide. The network itself is fitted in the non-centred
    coordinates, where the inference runs (fitted in ``c``, eight schools' funnel came
    out at C2ST 0.64 against 0.51; calibrated in ``c`` to the weighted particles'
    moments, whose heavy tails there they miss, 0.67)."""
    t0 = time.perf_counter()
    k_z, k_init, k_fit = jax.random.split(key, 3)
    z = jax.random.normal(k_z, (num_labels, ctx.spec.dim))
    theta, n_pts, dropped = ode_draw(ctx.ode, ref, z)
    mean, chol = _sequential.whitening(ref.theta, ref.log_w)
    u = _sequential.whiten(theta, mean, chol).astype(np.float32)
    t_label = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen = high_generator(k_init, ctx.spec.dim, mean, chol, ctx.net_config, residual)
    fit = dict(ctx.fit_config, num_steps=int(train_steps))
    with progress(fit["num_steps"], "training G_high", ctx.progress_bar) as update:
        gen, _ = fit_generator(
            k_fit, gen, np.zeros((num_labels, 0), np.float32), z, u, progress=update, **fit
        )
    draws = np.asarray(generate(gen, jnp.zeros((0,)), z))
    if residual:
        gen, draws = calibrate(gen, draws, mean, chol)
    cm = ctx.centring if residual else None
    if cm is not None:  # the centred coordinates: G_high's draws to its labels' moments
        theta = np.asarray(cm.rows_centred(jnp.asarray(theta)))
        c_mean, c_chol = _sequential.whitening(theta, np.zeros(len(theta)))
        gen, draws = calibrate_centred(gen, draws, c_mean, c_chol, cm)
    fit_check = generator_check(draws, theta)
    if generator_off(fit_check):
        warnings.warn(
            f"G_high is off the ODE it was fitted to: mean error {fit_check['mean_error']:.2f} "
            f"sd, sd ratios {min(fit_check['sd_ratio']):.2f}-{max(fit_check['sd_ratio']):.2f}; "
            "raise train_steps or num_labels, or draw with sample_ode",
            stacklevel=4,
        )
    timings = dict(rounds=t_rounds, labelling=t_label, training=time.perf_counter() - t0)
    return gen, FitInfo(fit_check, n_pts, dropped, timings)
