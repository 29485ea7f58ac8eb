"""Densities and deterministic sites on flat unconstrained vectors: the prior
(Jacobian included), the likelihood of the simulations, the deterministic sites."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from numpyro import handlers

from ._sites import _dry_trace, _trace, with_data

if TYPE_CHECKING:  # annotations only: no import of _spec at run time
    from ._spec import ModelSpec

__all__ = ["log_prior_fn", "deterministic_fn", "log_likelihood"]


def log_prior_fn(model, spec: ModelSpec, args=(), kwargs=None):
    """``theta (D,) -> log p(theta)``: the prior density in unconstrained coordinates.

    The latent sites are substituted and their log densities summed, plus the
    log-Jacobian of the map to constrained values. Under ``jit`` the
    simulator's output is unused, so XLA drops it.
    """
    kwargs = kwargs or {}

    def fn(theta):
        tr = substituted_trace(model, args, kwargs, spec.constrain(theta))
        lp = sum(jnp.sum(tr[n]["fn"].log_prob(tr[n]["value"])) for n in spec.latent_shapes)
        return lp + spec.log_prior_jacobian(theta)

    return fn


def substituted_trace(model, args, kwargs, values, data=None):
    """Trace of ``model`` with latent sites set to ``values`` (constrained) and the
    observed sites, when ``data`` is given, conditioned on it."""
    m = handlers.substitute(model, data=values)
    if data is not None:
        m = handlers.condition(m, data=data)
    return _trace(m, jax.random.PRNGKey(0), args, kwargs)


def deterministic_fn(model, spec: ModelSpec, args=(), kwargs=None, data_args=()):
    """``(values, y) -> {name: value}`` for the model's ``numpyro.deterministic`` sites.

    ``values``: constrained latent values (dict, site shapes); ``y``: a flat
    observation (M,), which the observed sites are conditioned on (cast to
    their dtypes), so a deterministic site that reads the data sees it, as under
    ``MCMC``. Returns None when the model has no deterministic site. Jittable;
    under ``jit`` the simulator work the deterministic sites do not need is
    dropped by XLA. ``data_args`` (:func:`~numpyro_mfdiff._model._sites.data_arguments`):
    the model arguments that carry the data, given the observation as ``MCMC.run``
    gives them the data, so that sites defined only when data are given
    (``if y is not None: numpyro.deterministic(...)``) are found and computed.
    """
    kwargs = kwargs or {}
    zeros = {n: jnp.zeros(s, spec.observed_dtypes[n]) for n, s in spec.observed_shapes.items()}
    tr = _dry_trace(model, *with_data(args, kwargs, data_args, zeros))
    names = [n for n, s in tr.items() if s["type"] == "deterministic"]
    if not names:
        return None

    def fn(values, y):
        obs = spec.unravel_obs(y)
        obs = {n: v.astype(spec.observed_dtypes[n]) for n, v in obs.items()}
        a, kw = with_data(args, kwargs, data_args, obs)
        tr = substituted_trace(model, a, kw, values, obs)
        return {n: tr[n]["value"] for n in names}

    return fn


def log_likelihood(spec: ModelSpec, dists, valid, y):
    """``log p(y | theta_j)`` for every simulation; ``y`` flat (M,), returns (N,).

    Invalid simulations get ``-inf``. Jittable; vmap over ``y`` for a batch.
    """
    obs = spec.unravel_obs(y)

    def one(d):
        return sum(jnp.sum(d[n].log_prob(obs[n].astype(spec.observed_dtypes[n]))) for n in d)

    ll = jax.vmap(one)(dists)
    return jnp.where(valid & jnp.isfinite(ll), ll, -jnp.inf)
