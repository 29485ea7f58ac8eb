"""The prior bank: the weighted points that stand for the prior in every Monte Carlo
score (labelling, :meth:`MFDiff.sample_ode`, the ESS, ``G_low``'s check, a same-fidelity
refinement's first pool).

A :class:`PriorBank` holds the simulations' standardised parameters, their observed-site
distributions and a per-point ``log_weight`` (zeros for prior simulations), so that
``log_weights(y) = log p(y | theta_j) + log_weight_j`` are the weights of the posterior
at ``y``; importance-weighted simulations can join it with their log-weights.
"""

from __future__ import annotations

import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from . import _model
from ._model._expfam import log_likelihood_natural, natural_form
from ._state import GeneratorCheck
from .generator._network import Generator, generate, generator_off
from .refine._weights import row_moments

__all__ = ["PriorBank", "GeneratorCheck", "build_bank", "check_generator"]
__all__ += ["read_entries"]

# G_low's check against its weighted prior points (check_generator)
LOW_CHECK_ROWS, LOW_CHECK_ESS, LOW_CHECK_DRAWS = 8, 400.0, 500


class PriorBank(eqx.Module):
    """The weighted points of the prior simulations.

    ``points`` (N, D): unconstrained parameters standardised by ``theta_mean``/
    ``theta_scale`` (D,) (over the valid simulations); ``y_mean``/``y_scale`` (M,) the
    observations' standardisation (0 and ``inf`` for masked entries, which no
    likelihood reads: any finite value there standardises to 0, so neither the
    labels' inputs nor an observation's filler reach the network as values);
    ``dists``: the batched observed-site distributions;
    ``valid`` (N,): finite simulations; ``natural``: their exponential-family form
    (:mod:`~numpyro_mfdiff._model._expfam`) or None; ``log_weight`` (N,): the points' own
    log-weights (zeros for draws from the prior).
    """

    spec: _model.ModelSpec
    points: Any
    theta_mean: Any
    theta_scale: Any
    y_mean: Any
    y_scale: Any
    dists: Any
    valid: Any
    natural: Any
    log_weight: Any

    def log_likelihood(self, y):
        """``log p(y | theta_j)`` (N,) for flat ``y`` (M,): exact values (generic
        ``log_prob``), ``-inf`` for failed simulations."""
        return _log_weights(self, y, fast=False, own=False)

    def log_weights(self, y, fast=True):
        """The points' log-weights at flat ``y`` (M,), (N,): :meth:`log_likelihood` plus
        ``log_weight``. With ``fast`` and a natural form, the likelihood is one matmul of
        sufficient statistics against natural parameters, exact up to a constant in
        ``y`` (its base measure): only for uses a per-observation constant cannot move
        (softmax weights over the points)."""
        return _log_weights(self, y, fast=fast, own=True)

    def standardise_y(self, y):
        return (y - self.y_mean) / self.y_scale

    def unstandardise(self, u):
        """Unconstrained parameters from standardised ``u`` (S, D)."""
        return self.theta_mean + self.theta_scale * np.asarray(u)


# compiled (once per bank and shape): called eagerly, the vmapped log_prob of every
# observed site would compile each of its operations on its own
@eqx.filter_jit
def _log_weights(bank, y, fast, own):
    if bank.natural is None or not fast:
        ll = _model.log_likelihood(bank.spec, bank.dists, bank.valid, y)
    else:
        ll = log_likelihood_natural(bank.natural, y, base=False)
    return ll + bank.log_weight if own else ll


@eqx.filter_jit
def _row_summary(bank, ys, fast):
    """Each row's log-weights (B, N) at ``ys`` (B, M) and their :func:`row_moments`."""
    ll = jax.vmap(lambda y: _log_weights(bank, y, fast, True))(ys)
    return ll, *row_moments(ll, bank.points)


def build_bank(spec, sims, log_weight=None, num_prior=None) -> PriorBank:
    """The bank of simulations ``sims`` (:class:`~numpyro_mfdiff._model.Simulations`)
    with per-point ``log_weight`` (N,) (default zeros: draws from the prior), standardised
    over the valid ones among the first ``num_prior`` (default all: the prior
    simulations, which pooled refinement simulations follow)."""
    prior = slice(None, num_prior)
    valid = np.asarray(sims.valid[prior])
    theta_mean, theta_scale = _moments(sims.theta[prior][valid], "latent")
    y_mean, y_scale = _moments(sims.y[prior][valid], "observed")
    # entries no likelihood reads (masked) standardise to 0 whatever their value
    unread = ~read_entries(spec, sims.dists, sims.valid)
    y_mean, y_scale = np.where(unread, 0.0, y_mean), np.where(unread, np.inf, y_scale)
    dists = jax.tree.map(jnp.asarray, sims.dists)
    n = sims.theta.shape[0]
    return PriorBank(
        spec=spec,
        points=jnp.asarray((sims.theta - theta_mean) / theta_scale),
        theta_mean=theta_mean,
        theta_scale=theta_scale,
        y_mean=y_mean,
        y_scale=y_scale,
        dists=dists,
        valid=jnp.asarray(sims.valid),
        natural=natural_form(spec, dists, sims.valid, gaussian=False),
        log_weight=jnp.zeros(n, jnp.float32) if log_weight is None else jnp.asarray(log_weight),
    )


def read_entries(spec, dists, valid) -> np.ndarray:
    """Which flat observed entries (M,) the likelihood reads: False where the first
    valid simulation's site distribution masks them (``dist.mask(mask)``, ``obs_mask``,
    ``handlers.mask``; through ``to_event`` and ``expand``)."""
    i = int(np.argmax(np.asarray(valid)))
    out = []
    for name, shape in spec.observed_shapes.items():
        d = jax.tree.map(lambda x: x[i], dists[name])
        m = _read_mask(d, tuple(shape))
        out.append(np.ones(shape, bool) if m is None else np.broadcast_to(m, shape))
    return np.concatenate([m.ravel() for m in out]) if out else np.zeros(0, bool)


def _read_mask(d, shape):
    """The entries of a value of ``shape`` that ``d.log_prob`` reads (bool), or None: all."""
    if isinstance(d, dist.MaskedDistribution):
        m = np.asarray(d._mask, bool)
        m = np.broadcast_to(m.reshape(m.shape + (1,) * d.event_dim), shape)
        inner = _read_mask(d.base_dist, shape)
        return m if inner is None else m & inner
    if isinstance(d, dist.Independent):
        return _read_mask(d.base_dist, shape)
    if isinstance(d, dist.ExpandedDistribution):
        base = d.base_dist
        inner = _read_mask(base, tuple(base.batch_shape) + tuple(base.event_shape))
        return None if inner is None else np.broadcast_to(inner, shape)
    return None


def low_generator(key, spec, bank: PriorBank, net_config) -> Generator:
    """A new ``G_low(y, z)`` standardised by the bank."""
    return Generator(
        key,
        spec.obs_dim,
        spec.dim,
        y_mean=bank.y_mean,
        y_scale=bank.y_scale,
        theta_mean=bank.theta_mean,
        theta_scale=bank.theta_scale,
        **net_config,
    )


def check_generator(key, bank: PriorBank, generator, ys, valid, fast=True):
    """``G_low`` against the weighted prior points it was fitted to, at up to
    ``LOW_CHECK_ROWS`` simulated observations (spread over the simulations ``ys`` (N, M)
    with ``valid`` (N,); labels are drawn at them) whose likelihood-weight ESS is at
    least ``LOW_CHECK_ESS`` (where the weighted moments are sharp enough to judge by):
    ``LOW_CHECK_DRAWS`` draws per observation, the largest mean error in weighted sds
    and the sd ratios per coordinate (labels keep each row's weighted mean and
    covariance, smoothed or not). Returns a :class:`GeneratorCheck`, or ``None`` where
    no observation qualifies; warns when off
    (:func:`~numpyro_mfdiff.generator._network.generator_off`)."""
    valid = np.flatnonzero(valid)
    cand = np.unique(valid[np.linspace(0, valid.size - 1, 4 * LOW_CHECK_ROWS).astype(int)])
    # the simulated observations themselves (integer sites stay integers), weighed
    # and summarised as labelling does (row_moments of the same log-weights)
    ys = ys[cand]
    ll, *moments = _row_summary(bank, jnp.asarray(ys), fast)
    mean, eigvals, vec, ess = (np.asarray(a, np.float64) for a in moments)
    ok = np.isfinite(np.asarray(ll)).any(axis=1) & (ess >= LOW_CHECK_ESS)
    rows = np.flatnonzero(ok)[:LOW_CHECK_ROWS]
    if not rows.size:
        return None
    z = jax.random.normal(key, (LOW_CHECK_DRAWS, bank.spec.dim))
    errors, ratios = [], []
    for i in rows:
        d = np.asarray(generate(generator, jnp.asarray(ys[i]), z), np.float64)
        d = (d - bank.theta_mean) / bank.theta_scale  # the points' coordinates
        sd = np.sqrt(np.maximum(np.einsum("ij,j->i", vec[i] ** 2, eigvals[i]), 1e-24))
        errors.append(float(np.max(np.abs(d.mean(0) - mean[i]) / sd)))
        ratios.extend((d.std(0) / sd).tolist())
    check = GeneratorCheck(len(rows), min(ess[rows].tolist()), max(errors), ratios)
    if generator_off(check._asdict()):
        warnings.warn(
            f"G_low is off the weighted prior simulations it was fitted to, at {len(rows)} "
            f"simulated observations with likelihood ESS >= {LOW_CHECK_ESS:g}: mean error "
            f"{check.mean_error:.2f} sd, sd ratios {min(ratios):.2f}-{max(ratios):.2f}; "
            "raise train_steps or num_labels",
            stacklevel=3,
        )
    return check


# largest spread of a standardised coordinate: beyond it float32 arithmetic on the
# values (squares in likelihoods, sums over simulations) is near its limit (3.4e38)
MAX_SCALE = 1e30


def _moments(x, what):
    """Means and scales (sds; ``max(|mean|, 1)`` where a coordinate is constant) of ``x`` (N, K), as
    float32 (K,), computed in float64 on the host so that values up to float32's
    limit (1e38) cannot overflow the squares; a ``ValueError`` suggesting a rescaling
    beyond :data:`MAX_SCALE`."""
    x = np.asarray(x, np.float64)
    mean, sd = x.mean(0), x.std(0)
    big = np.flatnonzero(~(np.abs(mean) + sd <= MAX_SCALE))
    if big.size:
        raise ValueError(
            f"the simulated {what} values reach {np.max(np.abs(x[:, big])):.3g} (flat "
            f"coordinate(s) {big[:5].tolist()}), beyond {MAX_SCALE:g}: float32 arithmetic "
            "cannot weigh them; rescale the model (e.g. simulate in units of 1e19 and "
            "multiply in a numpyro.deterministic site)"
        )
    size = np.maximum(np.abs(mean), 1.0)
    scale = np.where(sd > 1e-8 * size, sd, size)  # a constant coordinate: its size
    return mean.astype(np.float32), scale.astype(np.float32)
