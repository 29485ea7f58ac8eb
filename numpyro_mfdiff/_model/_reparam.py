"""Automatic non-centring of hierarchical latent sites (``reparam="auto"``).

A latent site ``theta ~ Normal(mu, tau)`` whose location or scale depends on other
latent sites makes a funnel in the unconstrained coordinates the diffusion runs in.
Its non-centred form ``theta = mu + tau * theta_decentered``,
``theta_decentered ~ Normal(0, 1)`` (NumPyro's ``LocScaleReparam(centered=0)``), is
the same model with a latent ``theta_decentered`` and a deterministic ``theta``;
the inference runs on it, and the draws it returns keep the user's sites (``theta``,
computed from the draws; ``theta_decentered`` left out).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer.reparam import LocScaleReparam

from . import _external
from ._sites import _dry_trace, _sample_sites, _trace

__all__ = ["REPARAM", "LOC_SCALE", "auto_reparam_sites", "reparam_model", "hidden_sites"]
__all__ += ["Centring", "centring"]

REPARAM = ("auto", None)
# location-scale families LocScaleReparam rebuilds from (loc, scale[, shape params])
LOC_SCALE = {
    dist.Normal: (),
    dist.Laplace: (),
    dist.Cauchy: (),
    dist.Logistic: (),
    dist.StudentT: ("df",),
}


def _base(fn):
    """``fn`` without its ``Independent``/``ExpandedDistribution`` wrappers (as
    ``LocScaleReparam`` unwraps it)."""
    while isinstance(fn, (dist.Independent, dist.ExpandedDistribution)):
        fn = fn.base_dist
    return fn


def auto_reparam_sites(model, args=(), kwargs=None, observed=None) -> tuple:
    """The latent sites of ``model`` to non-centre, sorted: sample sites, not observed
    (``observed``, else the sites no other sample site depends on), whose distribution
    is (``Independent``/``expand`` of) a location-scale family of :data:`LOC_SCALE`
    with real support, and whose parameters depend on another latent sample site
    (``numpyro.infer.inspect.get_model_relations``). Empty when the model cannot be
    traced this way (a simulator that provenance tracing does not get through)."""
    from numpyro.infer.inspect import get_model_relations

    kwargs = kwargs or {}
    try:
        with _external.session(dry_run=True):
            tr = _dry_trace(model, args, kwargs)
            rel = get_model_relations(model, model_args=args, model_kwargs=kwargs)
    except Exception:  # noqa: BLE001 - no dependency information: leave the model as it is
        return ()
    sites = _sample_sites(tr)
    parents = rel["sample_sample"]
    has_child = {p for ps in parents.values() for p in ps}
    if observed is None:
        observed = [n for n in sites if n not in has_child]
    latent = {n for n, s in sites.items() if n not in observed and not s["is_observed"]}
    out = []
    for n in sorted(latent):
        base = _base(sites[n]["fn"])
        if type(base) not in LOC_SCALE or base.support is not dist.constraints.real:
            continue
        if any(p in latent and p != n for p in parents.get(n, ())):
            out.append(n)
    return tuple(out)


def reparam_model(model, sites):
    """``model`` with ``sites`` non-centred (``LocScaleReparam(centered=0)``); ``model``
    itself when ``sites`` is empty."""
    sites = tuple(sites or ())
    if not sites:
        return model

    def config(msg):
        if msg["name"] not in sites or msg.get("is_observed"):
            return None
        shape = LOC_SCALE.get(type(_base(msg["fn"])), ())
        return LocScaleReparam(centered=0, shape_params=shape)

    return handlers.reparam(model, config=config)


def hidden_sites(sites) -> tuple:
    """The latent sites the non-centring of ``sites`` adds, left out of the draws."""
    return tuple(f"{n}_decentered" for n in sites or ())


class Centring(NamedTuple):
    """The map between the unconstrained non-centred vectors ``u`` the inference runs in
    and the centred coordinates ``c``: ``c`` holds, in place of each
    ``<site>_decentered`` coordinate, the site's value ``loc + scale * decentered``; every
    other coordinate is ``u``'s. ``to_centred`` and ``to_noncentred`` take one vector
    (D,) to (D,) (one the other's inverse; jittable, vmappable); ``rows_centred`` and
    ``rows_noncentred``, their jitted maps of rows (n, D)."""

    to_centred: Callable
    to_noncentred: Callable
    rows_centred: Callable
    rows_noncentred: Callable


def centring(model, spec, args=(), kwargs=None, sites=()) -> Centring | None:
    """The :class:`Centring` of ``model`` (the user's, centred) with ``sites`` non-centred
    (:func:`reparam_model`), whose ``spec`` is the non-centred model's; None when
    ``sites`` is empty (the identity). ``loc`` and ``scale`` are the model's own: the
    centred value of a site is read from the non-centred model's trace (its
    deterministic site), the decentred one from the centred model's trace at the
    centred values, ``(value - loc) / scale`` of the site's distribution."""
    sites = tuple(sites or ())
    if not sites:
        return None
    kwargs = kwargs or {}
    inner = reparam_model(model, sites)
    hidden = dict(zip(sites, hidden_sites(sites), strict=True))
    names = {h: s for s, h in hidden.items()}

    def to_centred(u):
        parts = spec.unravel_latent(u)
        tr = _substituted(inner, args, kwargs, spec.constrain(u))
        for s, h in hidden.items():
            parts[h] = jnp.reshape(tr[s]["value"], jnp.shape(parts[h]))
        return ravel_pytree(parts)[0]

    def to_noncentred(c):
        parts = spec.unravel_latent(c)
        # the decentred sites' supports are real: their constrained values are c's
        values = {names.get(n, n): x for n, x in spec.constrain(c).items()}
        tr = _substituted(model, args, kwargs, values)
        for s, h in hidden.items():
            fn = _base(tr[s]["fn"])
            parts[h] = jnp.reshape((values[s] - fn.loc) / fn.scale, jnp.shape(parts[h]))
        return ravel_pytree(parts)[0]

    rows = [jax.jit(jax.vmap(f)) for f in (to_centred, to_noncentred)]
    return Centring(to_centred, to_noncentred, *rows)


def _substituted(model, args, kwargs, values):
    """The trace of ``model`` with latent sites set to ``values`` (constrained)."""
    return _trace(handlers.substitute(model, data=values), jax.random.PRNGKey(0), args, kwargs)
