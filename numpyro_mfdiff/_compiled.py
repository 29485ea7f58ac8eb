"""Compiled functions of an inference's state, each kept until what it was built from
changes (:class:`Compiled`), and the views of the state the samplers share: the model
as the inference runs it, the observations checked, the refinement serving one."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np

from . import _domain, _model
from ._sampling import compile_deterministic, make_draws, prior_fns
from ._state import obs_key

__all__ = ["Compiled", "inner_model", "observations_or_default", "refinement_for", "check"]


class Compiled:
    """A cache of compiled functions, each keyed by the objects it was built from: a
    function is rebuilt when one of them is another object (a new bank, a new spec), so
    nothing is cleared by hand and nothing stale survives a state's replacement."""

    def __init__(self):
        self._fns = {}

    def get(self, name, deps: tuple, build):
        """``build()``, reused while every object of ``deps`` is the one it was built from."""
        hit = self._fns.get(name)
        same = hit is not None and len(hit[0]) == len(deps)
        if not (same and all(a is b for a, b in zip(hit[0], deps, strict=True))):
            hit = self._fns[name] = (tuple(deps), build())
        return hit[1]


def _cache(cache):
    return Compiled() if cache is None else cache


def inner_model(state, model=None):
    """``model`` (default: the state's) as the inference runs it: with the latent sites of
    ``state.reparam`` non-centred (``reparam="auto"``)."""
    return _model.reparam_model(state.model if model is None else model, state.reparam)


def high_model(state, model):
    """A high-fidelity ``model`` given to ``refine`` non-centred as the state's (None, or the
    state's own model: None, the same fidelity)."""
    return None if model is None or model is state.model else inner_model(state, model)


def user_latents(state) -> list:
    """The user's latent site names: the spec's, non-centred sites by their own name."""
    hidden = set(_model.hidden_sites(state.reparam))
    names = [n for n in state.spec.latent_shapes if n not in hidden]
    return sorted([*names, *state.reparam])


def draws(state, cache=None):
    """Compiled generator draws, single and batched (:func:`make_draws`)."""
    spec = state.spec
    return _cache(cache).get("draws", (spec,), lambda: make_draws(spec.constrain))


def centring(state, cache=None):
    """The :class:`~numpyro_mfdiff._model.Centring` of the state's non-centred sites (None
    without any)."""
    st = state
    return _cache(cache).get(
        "centring",
        (st.model, st.spec),
        lambda: _model.centring(st.model, st.spec, st.args, st.kwargs, st.reparam),
    )


def deterministic(state, cache=None):
    """Compiled deterministic sites (:func:`compile_deterministic`), or None."""
    st = state
    return _cache(cache).get(
        "deterministic",
        (st.model, st.spec),
        lambda: compile_deterministic(
            inner_model(st),
            st.spec,
            st.args,
            st.kwargs,
            _model.hidden_sites(st.reparam),
            st.data_args,
        ),
    )


def prior(state, cache=None):
    """Compiled ``log p(theta)`` (unconstrained, batched) and prior draws from keys."""
    st = state
    return _cache(cache).get(
        "prior",
        (st.model, st.spec),
        lambda: prior_fns(inner_model(st), st.spec, st.args, st.kwargs),
    )


# rows per call of the compiled summary (its inner batch): fewer rows are padded to the
# next power of two, more go in calls of this many (the last rows repeated), so a bank
# compiles at most five programs, in practice two (one row; the domain's references),
# and a call never evaluates more than twice the rows asked for
SUMMARY_ROWS = 16


def low_summary(state, ys, skip=None, cache=None):
    """``(log Z (B,), ESS (B,))`` of the bank's exact log-weights at flat ``ys`` (B, M)
    (:func:`~numpyro_mfdiff._domain.compile_summary`, compiled once per bank and row
    count, the rows padded as :data:`SUMMARY_ROWS` says)."""
    bank = state.bank
    fn = _cache(cache).get("summary", (bank,), lambda: _domain.compile_summary(bank))
    ys = np.asarray(ys)
    num = len(ys)
    if num == 0:
        return np.zeros(0), np.zeros(0)
    skip = np.full(num, -1) if skip is None else np.asarray(skip)
    rows = SUMMARY_ROWS if num > SUMMARY_ROWS else 1 << max(num - 1, 0).bit_length()
    pad = (-num) % rows
    ys = np.concatenate([ys, np.repeat(ys[-1:], pad, axis=0)])
    skip = np.concatenate([skip, np.full(pad, -1, skip.dtype)])
    out = [
        fn(jnp.asarray(ys[i : i + rows]), jnp.asarray(skip[i : i + rows]))
        for i in range(0, num + pad, rows)
    ]
    return (np.concatenate([np.asarray(o[j], np.float64) for o in out])[:num] for j in (0, 1))


def domain_reference(config, state, cache=None):
    """The reference log evidences of the domain check, computed once per bank."""
    cache, sims = _cache(cache), state.simulations
    return cache.get(
        "domain",
        (state.bank, sims),
        lambda: _domain.reference(
            lambda *a: low_summary(state, *a, cache=cache),
            sims.y,
            sims.valid,
            config.num_simulations,
        ),
    )


def require_sims(state):
    if state.simulations is None:
        raise RuntimeError("no prior simulations yet: call .run(rng_key, ...) first")


def require_generator(state):
    if state.generator is None:
        raise RuntimeError("no generator yet: call .run(rng_key, ...) first")


def observations_or_default(state, observations):
    """``observations``, or the default ones (data given to ``run``) when None."""
    if observations is not None:
        return observations
    if state.default_observations is None:
        raise ValueError(
            "no observations given and none stored: pass observations={site: value}, "
            "or pass the data to run as a model argument (run(key, ..., y=data))"
        )
    return state.default_observations


def refinement_for(state, y, fidelity):
    """The refinement record serving flat observation ``y`` (M,) at ``fidelity``, or None."""
    if fidelity not in (None, "low", "high"):
        raise ValueError(f"fidelity must be None, 'low' or 'high', got {fidelity!r}")
    if fidelity == "low":
        return None
    ref = state.refinements.get(obs_key(y))
    if ref is None and fidelity == "high":
        raise ValueError(
            "no high-fidelity generator for this observation: call .refine(key, "
            "observations, model=...) first"
        )
    return ref


def check(config, state, observations, warn=True, fidelity=None, sampler=None, cache=None):
    """Flat observations (M,) or (B, M), checked: the ESS warning (``warn``), the domain
    check of the rows ``G_low`` serves (``sampler="generator"``), and a ``ValueError``
    for rows with no finite likelihood weight (``sampler="sample_ode"`` or ``"refine"``)."""
    require_sims(state)
    y = _model.check_observations(state.spec, observations_or_default(state, observations))
    if not warn and sampler is None:
        return y
    rows = np.atleast_2d(y)
    refs = [refinement_for(state, r, fidelity) for r in rows]
    low = np.flatnonzero([r is None for r in refs])
    e = np.asarray([np.inf if r is None else r.ess for r in refs], np.float64)
    if low.size:
        log_z, e[low] = low_summary(state, rows[low], cache=cache)
        if sampler in ("sample_ode", "refine"):
            _domain.require_weights(log_z, low, sampler)
        if sampler == "generator":  # rows warned about say their ESS there
            policy, dom = config.domain_check, domain_reference(config, state, cache)
            e[low[_domain.check(policy, dom, log_z, e[low], rows[low], low)]] = np.inf
    if warn and np.any(e < config.ess_warning):
        warnings.warn(
            f"the effective sample size of the likelihood weights is {e.min():.1f} "
            f"(< {config.ess_warning:g}): few prior simulations inform this posterior; "
            "increase num_simulations or refine",
            stacklevel=4,
        )
    return y
