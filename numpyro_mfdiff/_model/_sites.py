"""Tracing a NumPyro model: its sample sites, factor and improper sites, and which
arguments are data."""

from __future__ import annotations

import jax
import numpy as np
from numpyro import handlers
from numpyro.distributions.distribution import ImproperUniform, Unit
from numpyro.primitives import Messenger

from . import _external

__all__ = ["split_data_arguments", "data_arguments", "with_data"]


def _dist_chain(fn):
    """``fn`` and the distributions it wraps (``Independent``, ``ExpandedDistribution``,
    ``MaskedDistribution``, ``TransformedDistribution``...), outermost first."""
    out = []
    while fn is not None and len(out) < 32:
        out.append(fn)
        fn = getattr(fn, "base_dist", None)
    return out


def _improper(fn):
    """The improper distribution inside ``fn`` (``ImproperUniform``), or None."""
    return next((d for d in _dist_chain(fn) if isinstance(d, ImproperUniform)), None)


def is_factor(fn):
    return any(isinstance(d, Unit) for d in _dist_chain(fn))


class _RejectImproper(Messenger):
    """Raise, naming the site, when an unobserved site has an improper prior."""

    def process_message(self, msg):
        if msg["type"] != "sample" or msg.get("is_observed"):
            return
        bad = _improper(msg.get("fn"))
        if bad is not None:
            raise ValueError(
                f"latent site '{msg['name']}' has an improper prior ({type(bad).__name__}); "
                "the method simulates from the prior, so it must be a proper distribution"
            )


def _trace(model, key, args, kwargs):
    m = handlers.seed(_RejectImproper(model), key)
    return handlers.trace(m).get_trace(*args, **kwargs)


def _sample_sites(tr):
    return {
        name: site
        for name, site in tr.items()
        if site["type"] == "sample" and not site.get("infer", {}).get("is_auxiliary", False)
    }


def _leaf_sites(model, args, kwargs, names):
    from numpyro.infer.inspect import get_model_relations

    rel = get_model_relations(model, model_args=args, model_kwargs=kwargs)
    parents = rel["sample_sample"]
    has_child = {p for ps in parents.values() for p in ps}
    return [n for n in names if n not in has_child]


def _dry_trace(model, args, kwargs, key=None):
    with _external.session(dry_run=True):  # external simulators are not called here
        return _trace(model, jax.random.PRNGKey(0) if key is None else key, args, kwargs)


def _observed_names(tr):
    return {n for n, s in _sample_sites(tr).items() if s["is_observed"]}


def split_data_arguments(model, args=(), kwargs=None):
    """Take the observed data out of the model arguments, as ``MCMC.run`` users pass it.

    ``model(*args, **kwargs)`` may observe sites with data given as arguments
    (``def model(X, y=None): ... numpyro.sample("y", ..., obs=y)`` run as
    ``run(key, X, y=y_obs)`` or ``run(key, X, y_obs)``). An argument is data
    when setting it to ``None`` (a keyword argument: leaving it out, if the
    model allows) turns observed sites into sampled ones, the model otherwise
    unchanged. Returns ``(args, kwargs, data)``: the arguments the prior
    simulations use (data arguments ``None`` or left out) and the observed
    values, site name -> array. Other arguments (covariates) are kept.
    """
    kwargs = dict(kwargs or {})
    args = tuple(args)
    if all(v is None for v in (*args, *kwargs.values())):
        return args, kwargs, {}
    tr = _dry_trace(model, args, kwargs)
    observed = _observed_names(tr)
    data = {}
    candidates = [(False, k) for k in kwargs] + [(True, i) for i in reversed(range(len(args)))]
    for positional, k in candidates:
        if not observed:
            break
        if (args[k] if positional else kwargs[k]) is None:
            continue
        trials = []
        if positional:
            trials.append((args[:k] + (None,) + args[k + 1 :], kwargs))
        else:
            trials.append((args, {n: v for n, v in kwargs.items() if n != k}))
            trials.append((args, {**kwargs, k: None}))
        for a, kw in trials:
            try:
                sites = _sample_sites(_dry_trace(model, a, kw))
            except Exception:  # noqa: BLE001 - the argument is needed (a covariate)
                continue
            # freed: observed before, now a sampled site of the same model
            freed = {n for n in observed if n in sites and not sites[n]["is_observed"]}
            if freed:
                data.update({n: np.asarray(tr[n]["value"]) for n in freed})
                observed -= freed
                args, kwargs = a, kw
            break
    return args, kwargs, data


def data_arguments(args0, kwargs0, args, kwargs, data) -> tuple:
    """Which model arguments carry which observed site's data: ``((position or keyword,
    site), ...)`` for each argument of ``args0``/``kwargs0`` that
    :func:`split_data_arguments` left out (``args``/``kwargs``: None or absent) and whose
    value is exactly one site's ``data``; :func:`with_data` puts observations back."""
    given = [
        (i, v) for i, v in enumerate(args0) if v is not None and (i >= len(args) or args[i] is None)
    ]
    given += [(k, v) for k, v in kwargs0.items() if v is not None and kwargs.get(k) is None]
    out = []
    for where, v in given:
        try:
            a = np.asarray(v)
        except Exception:  # noqa: BLE001 - not an array: no site to match
            continue
        sites = [n for n, d in data.items() if a.shape == np.shape(d) and np.array_equal(a, d)]
        if len(sites) == 1:
            out.append((where, sites[0]))
    return tuple(out)


def with_data(args, kwargs, data_args, obs):
    """``(args, kwargs)`` with the data arguments of ``data_args`` (:func:`data_arguments`)
    set to the observations ``obs`` (site name -> value), as ``MCMC.run`` passes data."""
    args, kwargs = list(args), dict(kwargs)
    for where, site in data_args:
        if isinstance(where, int):
            args[where] = obs[site]
        else:
            kwargs[where] = obs[site]
    return tuple(args), kwargs
