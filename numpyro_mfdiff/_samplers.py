"""Posterior draws of a built inference as functions of its settings and state:
``G_low``'s or ``G_high``'s draws, the Monte Carlo-score ODE's draws, the ESS of the
weights they rest on. Each takes a :class:`~numpyro_mfdiff._config.Config`, a
:class:`~numpyro_mfdiff._state.State` and an optional
:class:`~numpyro_mfdiff._compiled.Compiled` cache (None: compiled afresh); they are
what :class:`~numpyro_mfdiff.MFDiff`'s methods of the same names call."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import _compiled as C
from ._checks import chain_count, positive_int, real
from ._domain import not_finite
from ._sampling import finish, ode_low
from ._state import OdeStats
from .generator._network import generate

__all__ = ["get_samples", "sample_ode", "ess", "fidelity", "print_summary", "low_draw"]
__all__ += ["to_inference_data", "ode_unconstrained"]


def get_samples(
    config, state, rng_key, observations, num_samples, fidelity, group_by_chain, num_chains, cache
):
    """Constrained draws (dict site -> (S, ...) or (B, S, ...)) from ``G_high`` for a
    refined observation (``fidelity`` allowing) and ``G_low`` otherwise, deterministic
    sites included (:meth:`MFDiff.get_samples <numpyro_mfdiff.MFDiff.get_samples>`)."""
    num_samples = positive_int("num_samples", num_samples)
    num_chains = chain_count(num_samples, num_chains)
    y = C.check(config, state, observations, fidelity=fidelity, sampler="generator", cache=cache)
    z = jax.random.normal(rng_key, (num_samples, state.spec.dim))
    rows = [y] if y.ndim == 1 else list(y)
    refs = [C.refinement_for(state, yi, fidelity) for yi in rows]
    if any(r is None for r in refs):
        C.require_generator(state)
    draw, draw_batch = C.draws(state, cache)
    if y.ndim == 1:
        out = _draw(draw, state, refs[0], y, z)
    elif all(r is None for r in refs):
        out = draw_batch(state.generator, jnp.asarray(y), z)
    else:
        outs = [_draw(draw, state, r, yi, z) for r, yi in zip(refs, rows, strict=True)]
        out = jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
    not_finite(out, y.ndim)
    return finish(C.deterministic(state, cache), out, y, group_by_chain, num_chains)


def _draw(draw, state, ref, y, z):
    if ref is None:
        return draw(state.generator, jnp.asarray(y), z)
    return draw(ref.generator, jnp.zeros((0,), jnp.float32), z)


def sample_ode(
    config,
    state,
    rng_key,
    observations,
    num_samples,
    batch_size,
    fidelity,
    group_by_chain,
    num_chains,
    cache,
):
    """Constrained draws of the Monte Carlo-score ODE (as :func:`get_samples`) and the
    :class:`~numpyro_mfdiff._state.OdeStats` of each observation's ODE (a list)."""
    C.require_sims(state)
    num_samples = positive_int("num_samples", num_samples)
    batch_size = positive_int("batch_size", batch_size)
    num_chains = chain_count(num_samples, num_chains)
    y = C.check(config, state, observations, fidelity=fidelity, sampler="sample_ode", cache=cache)
    keys, rows = ([rng_key], [y]) if y.ndim == 1 else (jax.random.split(rng_key, len(y)), y)
    outs, stats = [], []
    for k, yi in zip(keys, rows, strict=True):
        z = jax.random.normal(k, (num_samples, state.spec.dim))
        theta, n_points, dropped = ode_unconstrained(config, state, yi, z, fidelity, batch_size)
        stats.append(OdeStats(n_points, dropped))
        outs.append(jax.vmap(state.spec.constrain)(jnp.asarray(theta)))
    out = outs[0] if y.ndim == 1 else jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
    return finish(C.deterministic(state, cache), out, y, group_by_chain, num_chains), stats


def ode_unconstrained(config, state, y, z, fidelity=None, batch_size=4096):
    """Unconstrained ODE draws (S, D) for flat ``y`` and noise ``z`` (S, D), with the
    points used and the weight dropped: the refined weights when ``y`` is refined
    (and ``fidelity`` allows), else the likelihood weights of the prior simulations."""
    ref = C.refinement_for(state, y, fidelity)
    if ref is not None:
        from .refine._refine import ode_draw

        return ode_draw(config.ode, ref, z, batch_size)
    return ode_low(state.bank, config, y, z, batch_size)


def low_draw(config, state, key, y, n):
    """Unconstrained (n, D) draws for flat ``y`` (M,) from the low-fidelity sampler:
    ``G_low`` when fitted, else the ODE over the prior simulations."""
    z = jax.random.normal(key, (n, state.spec.dim))
    if state.generator is not None:
        return np.asarray(generate(state.generator, jnp.asarray(y), z))
    return ode_unconstrained(config, state, y, z, fidelity="low")[0]


def ess(config, state, observations, fidelity=None, cache=None):
    """The ESS of the weights the samplers use at ``observations``: a float, or (B,)."""
    C.require_sims(state)
    observations = C.observations_or_default(state, observations)
    y = C.check(config, state, observations, warn=False, fidelity=fidelity, cache=cache)
    rows = np.atleast_2d(y)
    refs = [C.refinement_for(state, yi, fidelity) for yi in rows]
    out = list(C.low_summary(state, rows, cache=cache))[1]  # 0 without finite weight
    out = np.asarray([out[i] if r is None else r.ess for i, r in enumerate(refs)])
    return float(out[0]) if y.ndim == 1 else out


def fidelity(state, observations=None) -> str:
    """Which generator serves a single observation: ``"high"`` once refined, else ``"low"``."""
    from . import _model

    y = _model.check_observations(state.spec, C.observations_or_default(state, observations))
    return "high" if C.refinement_for(state, y, None) is not None else "low"


def print_summary(
    config,
    state,
    rng_key,
    observations,
    num_samples,
    prob,
    num_chains,
    fidelity,
    exclude_deterministic,
    cache=None,
):
    """Print ``numpyro.diagnostics.print_summary`` of :func:`get_samples`' draws at one
    observation, then the sampler that served and the ESS of its weights
    (:meth:`MFDiff.print_summary <numpyro_mfdiff.MFDiff.print_summary>`)."""
    from numpyro.diagnostics import print_summary as numpyro_summary

    real("prob", prob, 0.0, 1.0, low_open=True, high_open=True)
    y = C.check(config, state, observations, warn=False, cache=cache)
    if y.ndim != 1:
        raise ValueError("print_summary takes a single observation, not a batch")
    samples = get_samples(
        config, state, rng_key, observations, num_samples, fidelity, True, num_chains, cache
    )
    if exclude_deterministic:
        samples = {k: v for k, v in samples.items() if k in C.user_latents(state)}
    numpyro_summary({k: np.asarray(v) for k, v in samples.items()}, prob=prob)
    ref = C.refinement_for(state, y, fidelity)
    e = ess(config, state, observations, fidelity, cache)
    if ref is None:
        n = int(np.sum(state.simulations.valid))
        print(
            f"sampler: G_low (amortized generator); likelihood-weight ESS {e:.1f} "
            f"of {n} prior simulations"
        )
    else:
        print(
            f"sampler: G_high (refined with {ref.num_high_fidelity} high-fidelity "
            f"simulations); importance-weight ESS {e:.1f} (G_low's likelihood-weight "
            f"ESS {ess(config, state, observations, 'low', cache):.1f})"
        )


def to_inference_data(
    config, state, rng_key, observations, num_samples, samplers, diagnostics, cache, **kwargs
):
    """``az.InferenceData`` of one observation's posterior
    (:meth:`MFDiff.to_inference_data <numpyro_mfdiff.MFDiff.to_inference_data>`) drawn by
    ``samplers`` (method name -> the sampler: ``"generator"``, ``"ode"``), with the
    ``diagnostics`` in its ``attrs``."""
    from functools import partial

    from ._arviz import to_inference_data as convert

    if kwargs.get("method", "generator") == "generator":
        C.require_generator(state)
    C.require_sims(state)
    observations = C.observations_or_default(state, observations)
    return convert(
        rng_key,
        observations,
        num_samples,
        model=state.model,
        state=state,
        check=partial(C.check, config, state, warn=False, cache=cache),
        samplers=samplers,
        refinement=partial(C.refinement_for, state),
        low_ess=lambda obs: ess(config, state, obs, "low", cache),
        deterministic=C.deterministic(state, cache),
        diagnostics=diagnostics,
        **kwargs,
    )
