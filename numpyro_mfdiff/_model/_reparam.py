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

import numpyro.distributions as dist
from numpyro import handlers
from numpyro.infer.reparam import LocScaleReparam

from . import _external
from ._sites import _dry_trace, _sample_sites

__all__ = ["REPARAM", "LOC_SCALE", "auto_reparam_sites", "reparam_model", "hidden_sites"]

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
