"""Refinement of a batch of observations at the same fidelity: one shared budget, one
amortized ``G_low`` (beyond the paper; METHOD.md, sections 5 and 8).

Each round draws from ``G_low`` at every observation of the batch, puts a Gaussian
kernel on each draw (one kernel shape per observation, Scott's factor times
``inflation`` on the covariance of that observation's draws), adds a share of prior
draws, and simulates the model there. The simulations join the prior bank; every point
of the bank, the prior simulations included, is weighted with the balance heuristic
over all proposals so far,

    log_weight_j = log p(theta_j) - log q_mix(theta_j),
    q_mix = (n_prior p + sum_r n_r KDE_r) / n_total,

so that ``log p(y | theta_j) + log_weight_j`` weighs the bank towards the posterior of
any ``y`` (:class:`~numpyro_mfdiff._bank.PriorBank`). ``G_low`` is then relabelled from
the weighted bank, with a share of its labels at the batch's observations, and fitted
again. Functions of explicit arrays; :meth:`MFDiff.refine` runs the rounds.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from ._kde import KDE, kde_sample, mixture_logpdf, scott_chol

__all__ = [
    "FOCUS_SHARE",
    "Proposals",
    "RoundPlan",
    "add_round",
    "bank_log_weight",
    "batch_checks",
    "batch_kde",
    "join",
    "plan_rounds",
    "propose",
    "round_record",
]

# share of G_low's labels placed at the batch's own observations after a batched round
FOCUS_SHARE = 0.25


class Proposals(NamedTuple):
    """Where the bank's points were drawn: ``prior_count`` from the prior and
    ``counts[r]`` from ``kdes[r]`` (the batched rounds so far)."""

    prior_count: int
    kdes: tuple = ()
    counts: tuple = ()


class RoundPlan(NamedTuple):
    """One round: ``kernel`` draws spread over the observations, ``prior`` draws."""

    kernel: int
    prior: int


def plan_rounds(budget: int, num_obs: int, rounds: int | None, prior_fraction: float):
    """Split ``budget`` simulations into rounds (:class:`RoundPlan` list). Default: two
    equal rounds (the second proposes from ``G_low`` relabelled after the first) when
    each gives every observation at least two kernels, else one."""
    if rounds is None:
        rounds = 2 if budget * (1.0 - prior_fraction) >= 4 * num_obs else 1
    sizes = [budget // rounds + (r < budget % rounds) for r in range(rounds)]
    plans = []
    for n in sizes:
        prior = int(round(prior_fraction * n))
        plans.append(RoundPlan(kernel=n - prior, prior=prior))
    if any(p.kernel < 1 for p in plans):
        raise ValueError(
            f"max_simulations={budget} leaves no kernel draws in some of the {rounds} rounds: "
            "raise max_simulations or lower rounds"
        )
    return plans


def _split(n: int, parts: int) -> np.ndarray:
    """``n`` items over ``parts`` as evenly as possible (the first ones one more)."""
    return np.asarray([n // parts + (i < n % parts) for i in range(parts)], int)


def batch_kde(draws, counts, inflation: float) -> KDE:
    """A KDE with one group per observation: ``draws`` (B, K, D) from ``G_low`` at each
    observation, ``counts`` (B,) kernels per observation (at most ``K``), centred on its
    first draws, with covariance ``(inflation * counts_b^(-1/(D+4)))^2 cov_b``, ``cov_b``
    the covariance of all ``K`` draws of observation ``b``."""
    draws = np.asarray(draws, np.float64)
    centers, chols, group, factors = [], [], [], []
    for b, (x, c) in enumerate(zip(draws, counts, strict=True)):
        chol, f = scott_chol(x, inflation, size=max(int(c), 1))
        chols.append(chol)
        factors.append(f)
        centers.append(x[:c])
        group.append(np.full(int(c), b, np.int32))
    return KDE(
        np.concatenate(centers).astype(np.float32),
        np.stack(chols).astype(np.float32),
        np.concatenate(group),
        np.asarray(factors),
    )


def propose(key, low_draw, ys, plan: RoundPlan, prior_draw, inflation: float, dim: int):
    """The round's points ``theta`` (kernel + prior, D) and its KDE: ``low_draw(key, y,
    n) -> (n, D)`` unconstrained draws at flat ``y`` (M,), ``ys`` (B, M); ``prior_draw``
    maps keys (n,) to prior draws (n, D)."""
    k_low, k_kde, k_prior = jax.random.split(key, 3)
    counts = _split(plan.kernel, ys.shape[0])
    k = max(int(counts.max()), 4 * (dim + 1))  # enough draws for each covariance
    draws = np.stack(
        [low_draw(jax.random.fold_in(k_low, b), y, k) for b, y in enumerate(np.asarray(ys))]
    )
    kde = batch_kde(draws, counts, inflation)
    theta = np.asarray(kde_sample(k_kde, kde))
    if plan.prior:
        theta = np.concatenate(
            [theta, np.asarray(prior_draw(jax.random.split(k_prior, plan.prior)))]
        )
    return theta.astype(np.float32), kde


def add_round(proposals: Proposals, kde: KDE, plan: RoundPlan) -> Proposals:
    """The proposals after a round of ``plan`` from ``kde``."""
    return Proposals(
        prior_count=proposals.prior_count + plan.prior,
        kdes=proposals.kdes + (kde,),
        counts=proposals.counts + (plan.kernel,),
    )


def bank_log_weight(log_prior, proposals: Proposals, theta) -> np.ndarray:
    """``log p(theta_j) - log q_mix(theta_j)`` (N,) for the bank's points ``theta``
    (N, D) with prior log densities ``log_prior`` (N,), shifted so that the largest is
    0 (a constant: the weights are normalised per observation). Zeros (all prior draws)
    without batched rounds."""
    log_prior = np.asarray(log_prior, np.float64)
    if not proposals.kdes:
        return np.zeros(log_prior.shape, np.float32)
    log_q = mixture_logpdf(
        log_prior,
        list(proposals.kdes),
        list(proposals.counts),
        proposals.prior_count,
        np.asarray(theta, np.float32),
    )
    lw = log_prior - np.asarray(log_q, np.float64)
    lw = np.where(np.isfinite(lw), lw, -np.inf)
    return (lw - np.max(lw[np.isfinite(lw)])).astype(np.float32)


def join(a, b):
    """The simulations ``a`` followed by ``b`` (:class:`~numpyro_mfdiff._model.Simulations`)."""
    cat = lambda u, v: np.concatenate([np.asarray(u), np.asarray(v)])  # noqa: E731
    return a._replace(
        theta=cat(a.theta, b.theta),
        y=cat(a.y, b.y),
        dists=jax.tree.map(cat, a.dists, b.dists),
        valid=cat(a.valid, b.valid),
        errors=tuple(a.errors) + tuple(b.errors),
    )


def round_record(plan: RoundPlan, sims, ess, seconds: float) -> dict:
    """The diagnostics of a round: its draws, failures, the batch's ESS (median, least)."""
    return dict(
        kernel_draws=plan.kernel,
        prior_draws=plan.prior,
        failed=int(np.size(sims.valid) - np.sum(sims.valid)),
        ess_median=float(np.median(ess)),
        ess_min=float(np.min(ess)),
        seconds=float(seconds),
    )


def batch_checks(same: bool, given: dict):
    """A ``ValueError`` for what a batched refinement cannot take: another model (its
    simulations cannot join ``G_low``'s bank) or per-observation settings."""
    if not same:
        raise ValueError(
            "refine with a batch of observations pools simulations of this inference's own "
            "model (same arguments) into G_low's prior bank; refine each observation alone "
            "with model=..."
        )
    if given:
        raise ValueError(
            f"refine with a batch of observations relabels G_low with this inference's "
            f"num_labels and train_steps; {sorted(given)} apply to one observation only"
        )
