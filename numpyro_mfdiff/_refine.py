"""Multi-fidelity refinement for one observation ``y*`` (METHOD.md, section 5).

Each round draws candidates from the current sampler for ``y*`` (``G_low``
on the first round, then the refined Monte Carlo-score ODE), fits a KDE to
them, draws proposals from a defensive mixture (the inflated KDE, plus a
fraction straight from the prior), and runs the high-fidelity model there.
Every point gathered so far is weighted with

    log w_j = log p_hf(y* | theta_j) + log p(theta_j) - log q(theta_j),

where ``q`` is the balance-heuristic mixture of all proposals (the prior
included), so no region that the prior covers gets zero proposal density.
After the rounds, the ODE with these weights labels ``(z, theta)`` pairs and
an unconditional generator ``G_high(z)`` is fitted.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _model
from ._checks import model_callable, positive_int, real
from ._kde import KDE, fit_kde, kde_sample, mixture_logpdf
from ._network import Generator, fit_generator
from ._ode import sample_pruned
from ._progress import progress
from ._schedule import geometric_grid, time_at_noise_ratio, uniform_grid
from ._score import ess as _ess

__all__ = ["Refinement", "check_settings", "high_fidelity_model", "refine", "ode_draw"]

# below this ESS per high-fidelity simulation a round's weights count as collapsed
COLLAPSED_ESS_FRACTION = 0.02


@dataclass
class Refinement:
    """Everything refinement gathered for one observation.

    ``theta`` (n, D) unconstrained points with their high-fidelity
    log-likelihoods ``loglik`` (n,) and prior log densities ``logprior``
    (n,); ``prior_count`` of them were drawn from the prior, ``counts[r]``
    from ``kdes[r]``; ``log_w`` (n,) their importance log-weights;
    ``mean``/``scale`` (D,) the weighted standardisation of ``G_high``;
    ``smoothing`` the kernel sd of the refined ODE's end point (0: none).
    """

    y: np.ndarray
    theta: np.ndarray
    loglik: np.ndarray
    logprior: np.ndarray
    prior_count: int = 0
    kdes: list = field(default_factory=list)
    counts: list = field(default_factory=list)
    log_w: np.ndarray | None = None
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    generator: Generator | None = None
    rounds: list = field(default_factory=list)
    num_high_fidelity: int = 0
    ess_before: float = 0.0
    smoothing: float = 0.0

    @property
    def ess(self) -> float:
        w = np.exp(self.log_w - np.max(self.log_w))
        return float(w.sum() ** 2 / (w**2).sum())

    def summary(self) -> dict:
        """Diagnostics as plain numbers (for ``diagnostics`` and InferenceData attrs)."""
        return dict(
            ess_before=self.ess_before,
            ess_after=self.ess,
            num_high_fidelity_simulations=self.num_high_fidelity,
            num_points=int(self.theta.shape[0]),
            num_rounds=len(self.rounds),
            smoothing=self.smoothing,
            kde_bandwidth=[k.bandwidth.tolist() for k in self.kdes],
            rounds=list(self.rounds),
        )


def _weighted_standardisation(theta, log_w):
    w = np.exp(log_w - np.max(log_w))
    w = w / w.sum()
    mean = w @ theta
    sd = np.sqrt(np.maximum(w @ (theta - mean) ** 2, 0.0))
    sd = np.where(sd > 1e-6, sd, np.maximum(theta.std(0), 1e-3))
    return mean.astype(np.float32), sd.astype(np.float32)


def ode_draw(inf, ref, z, batch_size=4096):
    """Draws from the refined Monte Carlo-score ODE for noise ``z`` (S, D).

    The weighted points are standardised (weighted mean 0, weighted sd 1 per
    coordinate). With ``ref.smoothing = h > 0`` they are shrunk towards their
    mean by ``sqrt(1 - h^2)`` and the ODE stops where ``beta / alpha = h``,
    returning the state instead of the denoised mean: a draw from the
    weighted points' measure convolved with ``N(0, h^2)``, whose per-coordinate
    mean and variance are those of the weights (kernel shrinkage, Liu & West
    2001). Without it the ODE returns the points themselves at ``t -> 0``.

    Returns ``(theta (S, D) unconstrained, points_used, dropped_mass)``.
    """
    pts = (ref.theta - ref.mean) / ref.scale
    grid, denoise_last = inf.grid, True
    if ref.smoothing > 0:
        pts = np.sqrt(1.0 - ref.smoothing**2) * pts
        t_s = time_at_noise_ratio(inf.schedule, ref.smoothing)
        make = geometric_grid if inf._settings["grid"] == "geometric" else uniform_grid
        grid = make(inf.num_steps, t_max=inf._settings["t_max"], t_min=max(t_s, 1e-6))
        denoise_last = False
    u, n_pts, dropped = sample_pruned(
        z,
        jnp.asarray(pts),
        ref.log_w,
        inf.schedule,
        grid,
        inf.solver,
        inf.prune_tol,
        batch_size,
        denoise_last,
    )
    return ref.mean + ref.scale * np.asarray(u), n_pts, dropped


def _candidates(inf, key, ref, y, n):
    """Unconstrained (n, D) candidates for ``y`` from the current sampler."""
    z = jax.random.normal(key, (n, inf.spec.dim))
    if ref.log_w is not None:  # a later round: the refined ODE
        return ode_draw(inf, ref, z)[0]
    if inf.generator is not None:
        return np.asarray(_generate(inf.generator, jnp.asarray(y), z))
    return inf._ode_unconstrained(y, z, fidelity="low")[0]


@eqx.filter_jit
def _generate(gen, y, z):
    return jax.lax.map(lambda zi: gen(y, zi), z, batch_size=4096)


def _reweight(ref):
    log_q = mixture_logpdf(
        jnp.asarray(ref.logprior), ref.kdes, ref.counts, ref.prior_count, jnp.asarray(ref.theta)
    )
    log_w = ref.loglik.astype(np.float64) + ref.logprior - np.asarray(log_q, np.float64)
    ref.log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    ref.mean, ref.scale = _weighted_standardisation(ref.theta, ref.log_w)


def check_settings(
    *,
    rounds,
    num_simulations,
    max_simulations,
    num_labels,
    train_steps,
    inflation,
    prior_fraction,
    target_ess,
    smoothing,
) -> dict:
    """The arguments of :meth:`MFDiff.refine`, validated (a ``ValueError`` naming the
    first bad one) and converted: the keyword arguments of :func:`refine`, and ``smoothing``."""
    rounds = positive_int("rounds", rounds)
    num_simulations = positive_int("num_simulations", num_simulations)
    if num_simulations < 2:
        raise ValueError(f"num_simulations must be at least 2, got {num_simulations}")
    if max_simulations is not None:
        max_simulations = positive_int("max_simulations", max_simulations)
    num_labels = positive_int("num_labels", num_labels)
    train_steps = positive_int("train_steps", train_steps)
    if not inflation > 0:
        raise ValueError(f"inflation must be positive, got {inflation}")
    if not 0.0 <= prior_fraction < 1.0:
        raise ValueError(f"prior_fraction must be in [0, 1), got {prior_fraction}")
    if target_ess is not None and not target_ess > 0:
        raise ValueError(f"target_ess must be positive, got {target_ess}")
    smoothing = real("smoothing", smoothing, 0.0, 1.0, high_open=True)
    return dict(
        rounds=rounds,
        num_simulations=num_simulations,
        max_simulations=max_simulations,
        num_labels=num_labels,
        train_steps=train_steps,
        inflation=float(inflation),
        prior_fraction=float(prior_fraction),
        target_ess=target_ess,
        smoothing=smoothing,
    )


def high_fidelity_model(inf, model, model_args, model_kwargs):
    """``(model, args, kwargs, spec, same)``: the model refinement simulates (default:
    ``inf.model``) with its arguments (default: those of ``inf.run``) and its spec, checked
    against ``inf.spec`` (a ``ValueError`` naming the site that differs); ``same`` when it
    is ``inf``'s own model with ``inf``'s arguments."""
    same = model is None or model is inf.model
    model = inf.model if model is None else model
    model_callable(model)
    args = inf._args if model_args is None else tuple(model_args)
    kwargs = inf._kwargs if model_kwargs is None else dict(model_kwargs)
    same = same and model_args is None and model_kwargs is None
    spec_hi = _model.inspect_model(model, args, kwargs, sorted(inf.spec.observed_shapes))
    _model.check_high_fidelity(inf.spec, spec_hi)
    return model, args, kwargs, spec_hi, same


def new_refinement(inf, y, same_fidelity, log_prior) -> Refinement:
    """An empty record for ``y``; with ``same_fidelity`` the prior simulations join
    it as draws from the prior."""
    D = inf.spec.dim
    loglik_low = inf._loglik(jnp.asarray(y))
    ref = Refinement(
        y=np.asarray(y, np.float32),
        theta=np.zeros((0, D), np.float32),
        loglik=np.zeros(0, np.float32),
        logprior=np.zeros(0, np.float32),
        ess_before=float(_ess(loglik_low)),
    )
    if same_fidelity:
        sims = inf.simulations
        ref.theta = np.asarray(sims.theta, np.float32)
        ref.loglik = np.asarray(loglik_low, np.float32)
        ref.logprior = np.asarray(log_prior(jnp.asarray(ref.theta)), np.float32)
        ref.prior_count = int(sims.theta.shape[0])
    return ref


def refine(
    inf,
    rng_key,
    y,
    ref: Refinement,
    model,
    spec_hi,
    args,
    kwargs,
    *,
    num_simulations: int,
    rounds: int,
    target_ess,
    max_simulations,
    inflation: float,
    prior_fraction: float,
    num_labels: int,
    train_steps: int,
    log_prior,
    prior_draw,
):
    """Run refinement rounds for ``y`` (M,), then label and fit ``G_high``; updates ``ref``."""
    keys = jax.random.split(rng_key, rounds + 1)
    budget = np.inf if max_simulations is None else int(max_simulations)
    t_start = time.perf_counter()
    for r in range(rounds):
        n = int(min(num_simulations, budget - ref.num_high_fidelity))
        if n < 2:
            break
        t0 = time.perf_counter()
        k_cand, k_prop, k_prior, k_sim = jax.random.split(keys[r], 4)
        n_prior = int(round(prior_fraction * n))
        n_kern = max(n - n_prior, 2)
        n_prior = n - n_kern
        cands = _candidates(inf, k_cand, ref, y, n_kern)
        if ref.kdes and ref.ess < COLLAPSED_ESS_FRACTION * ref.num_high_fidelity:
            # the weights rest on a handful of points (the high-fidelity posterior
            # lies away from the proposal): re-centre on them but keep the last
            # round's widest kernel, so the next round searches instead of collapsing
            prev = ref.kdes[-1]
            kde = KDE(
                cands.astype(np.float32),
                prev.chols[-1:],
                np.zeros(len(cands), np.int32),
                prev.bandwidth[-1:],
            )
        else:
            kde = fit_kde(cands, inflation)
        theta_new = [np.asarray(kde_sample(k_prop, kde))]
        if n_prior:
            theta_new.append(np.asarray(prior_draw(jax.random.split(k_prior, n_prior))))
        theta_new = np.concatenate(theta_new).astype(np.float32)
        with progress(n, f"refining (round {len(ref.rounds) + 1})", inf.progress_bar) as update:
            ckpt = None
            if inf.checkpoint_dir is not None:
                tag = ref.y.tobytes().hex()[:16]
                ckpt = inf.checkpoint_dir / f"refine-{tag}" / f"round-{len(ref.rounds) + 1}"
            sims = _model.simulate(
                k_sim,
                model,
                spec_hi,
                n,
                args,
                kwargs,
                inf.simulation_chunk_size,
                update,
                theta=theta_new,
                checkpoint=ckpt,
                executor=inf.executor,
                max_failure_fraction=inf.max_failure_fraction,
            )
        ll = np.asarray(
            jax.jit(partial(_model.log_likelihood, spec_hi))(sims.dists, sims.valid, y),
            np.float32,
        )
        lp = np.asarray(log_prior(jnp.asarray(theta_new)), np.float32)
        ref.theta = np.concatenate([ref.theta, theta_new])
        ref.loglik = np.concatenate([ref.loglik, ll])
        ref.logprior = np.concatenate([ref.logprior, lp])
        ref.kdes.append(kde)
        ref.counts.append(n_kern)
        ref.prior_count += n_prior
        ref.num_high_fidelity += n
        _reweight(ref)
        ref.rounds.append(
            dict(
                simulations=n,
                failed=int(n - sims.valid.sum()),
                prior_draws=n_prior,
                kde_bandwidth=kde.bandwidth.tolist(),
                kde_clusters=int(kde.chols.shape[0] - 1),
                ess=ref.ess,
                seconds=time.perf_counter() - t0,
            )
        )
        if target_ess is not None and ref.ess >= target_ess:
            break
    if ref.log_w is None:
        raise ValueError("no refinement round ran: the simulation budget is below 2")
    if ref.ess < inf.ess_warning:
        warnings.warn(
            f"the importance ESS after refinement is {ref.ess:.1f} (< {inf.ess_warning:g}): "
            "the high-fidelity posterior rests on few simulations; call refine again "
            "(more rounds or num_simulations) or raise inflation",
            stacklevel=3,
        )
    t_rounds = time.perf_counter() - t_start
    # label (z, theta) pairs with the weighted ODE and fit G_high(z)
    t0 = time.perf_counter()
    k_z, k_init, k_fit = jax.random.split(keys[-1], 3)
    z = jax.random.normal(k_z, (num_labels, inf.spec.dim))
    theta, n_pts, dropped = ode_draw(inf, ref, z)
    u = (theta - ref.mean) / ref.scale
    t_label = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen = Generator(
        k_init, 0, inf.spec.dim, theta_mean=ref.mean, theta_scale=ref.scale, **inf.net_config
    )
    fit = dict(inf.fit_config, num_steps=int(train_steps))
    with progress(fit["num_steps"], "training G_high", inf.progress_bar) as update:
        gen, history = fit_generator(
            k_fit, gen, np.zeros((num_labels, 0), np.float32), z, u, progress=update, **fit
        )
    ref.generator = gen
    ref.rounds[-1].update(
        label_points=n_pts,
        label_dropped_mass=dropped,
        timings=dict(rounds=t_rounds, labelling=t_label, training=time.perf_counter() - t0),
    )
    return ref
