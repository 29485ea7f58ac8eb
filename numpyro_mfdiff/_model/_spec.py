"""What the inference needs to know of a model (:class:`ModelSpec`), found by
:func:`inspect_model`, and the checks of high-fidelity models and observations
against it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.distributions.constraints import Constraint
from numpyro.distributions.transforms import biject_to

from ._sites import _dry_trace, _improper, _leaf_sites, _sample_sites, is_factor

__all__ = [
    "ModelSpec",
    "inspect_model",
    "check_same_latents",
    "check_high_fidelity",
    "check_observations",
    "obs_tag",
]


class ModelSpec(NamedTuple):
    """What the inference needs to know about a model's sites.

    ``latent_shapes``/``observed_shapes`` map site names to value shapes;
    ``dim``/``obs_dim`` are the flat sizes ``D`` and ``M``.
    """

    latent_shapes: dict
    observed_shapes: dict
    observed_dtypes: dict
    supports: dict
    dim: int
    obs_dim: int
    unravel_latent: Callable
    unravel_obs: Callable

    def constrain(self, theta):
        """Flat unconstrained (D,) -> dict of constrained latent values."""
        values = self.unravel_latent(theta)
        return {k: biject_to(self.supports[k])(v) for k, v in values.items()}

    def unconstrain(self, values):
        """Dict of constrained latent values -> flat unconstrained (D,)."""
        u = {k: biject_to(self.supports[k]).inv(values[k]) for k in self.latent_shapes}
        return ravel_pytree(u)[0]

    def log_prior_jacobian(self, theta):
        """Log-Jacobian of the map from unconstrained (D,) to constrained values."""
        values = self.unravel_latent(theta)
        total = 0.0
        for k, v in values.items():
            t = biject_to(self.supports[k])
            total = total + jnp.sum(t.log_abs_det_jacobian(v, t(v)))
        return total


def inspect_model(model, args=(), kwargs=None, observed_sites: Sequence[str] | None = None):
    """Trace ``model`` and split its sample sites into latent and observed.

    Observed sites are ``observed_sites`` when given; otherwise the sample
    sites no other sample site depends on. Raises ``ValueError``, naming the
    site, before any simulation for: ``numpyro.factor`` (``Unit``) sites,
    scaled sites (subsampled plates, ``handlers.scale``), sites that already
    carry data (``obs=`` set in this trace: the prior simulations must sample
    them; pass data with :func:`split_data_arguments`), discrete or improper
    latent sites, latent supports that depend on other latent sites, unknown
    observed names and models with no observed or no latent site.
    Simulators wrapped by :func:`external_simulator` are not called (they
    return zeros of the right shape during this trace).
    """
    kwargs = kwargs or {}
    tr = _dry_trace(model, args, kwargs)
    _reject_unsupported_sites(tr)
    sites = _sample_sites(tr)
    if not sites:
        raise ValueError("the model has no sample site")
    pinned = sorted(n for n, s in sites.items() if s["is_observed"])
    if pinned:
        raise ValueError(
            f"observed site(s) {pinned} already carry data in the model (obs= is not None "
            "with these arguments): the prior simulations must sample them. Pass the data "
            "as its own model argument that defaults to None (run(key, ..., "
            f"{pinned[0]}=data), as for MCMC.run) or give it to get_samples"
        )
    obs = _observed_sites(model, args, kwargs, sites, observed_sites)
    latent = sorted(n for n in sites if n not in obs)
    if not latent:
        raise ValueError(f"the model has no latent site (all of {sorted(sites)} are observed)")
    _check_latent_sites(sites, latent)
    latent_vals = {n: jnp.asarray(sites[n]["value"]) for n in latent}
    supports = {n: sites[n]["fn"].support for n in latent}
    _check_fixed_supports(model, args, kwargs, supports)
    u = {n: biject_to(supports[n]).inv(v) for n, v in latent_vals.items()}
    flat, unravel_latent = ravel_pytree(u)
    obs_vals = {n: jnp.asarray(sites[n]["value"]) for n in obs}
    flat_obs, unravel_obs = ravel_pytree({n: v.astype(jnp.float32) for n, v in obs_vals.items()})
    return ModelSpec(
        latent_shapes={n: jnp.shape(latent_vals[n]) for n in latent},
        observed_shapes={n: jnp.shape(v) for n, v in obs_vals.items()},
        observed_dtypes={n: v.dtype for n, v in obs_vals.items()},
        supports=supports,
        dim=int(flat.size),
        obs_dim=int(flat_obs.size),
        unravel_latent=unravel_latent,
        unravel_obs=unravel_obs,
    )


def _reject_unsupported_sites(tr):
    """Raise, naming the site, for ``numpyro.factor`` sites and scaled sites in trace ``tr``."""
    for name, site in tr.items():
        if site["type"] != "sample":
            continue
        if is_factor(site["fn"]):
            raise ValueError(
                f"site '{name}' is a numpyro.factor (a Unit distribution): an extra "
                "log-density term is not supported, because the method simulates the model "
                "from its prior and cannot draw from a factor; write it as a latent or "
                "observed sample site"
            )
        scale = site.get("scale")
        if scale is not None and not np.all(np.asarray(scale) == 1):
            raise ValueError(
                f"site '{name}' is scaled (a subsampled plate or handlers.scale); the "
                "method needs the full, unscaled model: drop subsample_size and scale"
            )


def _observed_sites(model, args, kwargs, sites, observed_sites):
    """The observed site names, sorted: ``observed_sites`` checked against ``sites``, or the
    sample sites no other depends on; a ``ValueError`` when there are none."""
    if observed_sites is not None:
        observed_sites = (
            [observed_sites] if isinstance(observed_sites, str) else list(observed_sites)
        )
        unknown = [n for n in observed_sites if n not in sites]
        if unknown:
            # the user's names: a non-centred x (x_decentered sampled, x deterministic) as x
            tr = _dry_trace(model, args, kwargs)
            names = {
                n[: -len("_decentered")]
                if n.endswith("_decentered") and n[: -len("_decentered")] in tr
                else n
                for n in sites
            }
            raise ValueError(
                f"observed site(s) {unknown} not found in the model; its sample sites are "
                f"{sorted(names)}"
            )
        obs = observed_sites
    else:
        try:
            obs = _leaf_sites(model, args, kwargs, list(sites))
        except Exception as e:  # provenance tracing fails on some simulators
            raise ValueError(
                "could not infer which sites are observed; pass observed_sites=[...]"
            ) from e
        if len(obs) == len(sites):
            obs = []
    if not obs:
        raise ValueError(
            "the model has no observed site: pass observed_sites=[...] naming the sample "
            "sites that carry the simulator output"
        )
    return sorted(obs)  # ravel_pytree flattens dicts in sorted key order


def _check_latent_sites(sites, latent):
    """Raise, naming the site, for an improper or discrete latent site."""
    for n in latent:
        fn = sites[n]["fn"]
        if _improper(fn) is not None:  # a site named in observed_sites is not in this trace
            raise ValueError(
                f"latent site '{n}' has an improper prior ({type(_improper(fn)).__name__})"
            )
        if fn.support.is_discrete or fn.is_discrete:
            raise ValueError(
                f"latent site '{n}' is discrete ({type(fn).__name__}); only continuous latent "
                "sites are supported"
            )


def _has_array(x) -> bool:
    if isinstance(x, Constraint):
        return any(_has_array(v) for v in vars(x).values())
    if isinstance(x, (list, tuple)):
        return any(_has_array(v) for v in x)
    return isinstance(x, (np.ndarray, jax.Array))


def _check_fixed_supports(model, args, kwargs, supports):
    """Raise, naming the site, when a latent site's support moves with the other latents
    (``Uniform(0, scale)`` with ``scale`` latent): the unconstraining map is fixed
    once, so it must be the same for every prior draw. Checked on a second trace with
    another key, only when some support has array-valued parameters."""
    if not any(_has_array(s) for s in supports.values()):
        return
    other = _sample_sites(_dry_trace(model, args, kwargs, jax.random.PRNGKey(1)))
    for n, s in supports.items():
        if n in other and not same_support(s, other[n]["fn"].support):
            raise ValueError(
                f"latent site '{n}' has a support that depends on other latent sites "
                f"({s} in one prior draw, {other[n]['fn'].support} in another); only "
                "fixed supports are supported: reparameterise, e.g. "
                "x = low + (high - low) * numpyro.sample('u', dist.Uniform(0, 1))"
            )


def check_same_latents(spec_low: ModelSpec, spec_high: ModelSpec):
    """Raise ``ValueError`` unless two models have the same latent sites.

    Same names, shapes and supports are needed to simulate a high-fidelity
    model at latent values drawn for a low-fidelity one. The message names
    the site and both shapes or supports.
    """
    low, high = spec_low.latent_shapes, spec_high.latent_shapes
    only_low, only_high = sorted(set(low) - set(high)), sorted(set(high) - set(low))
    if only_low or only_high:
        raise ValueError(
            f"the high-fidelity model's latent sites differ: {only_low} only in the "
            f"low-fidelity model, {only_high} only in the high-fidelity model"
        )
    for name in sorted(low):
        if tuple(low[name]) != tuple(high[name]):
            raise ValueError(
                f"latent site '{name}' has shape {tuple(low[name])} in the low-fidelity "
                f"model and {tuple(high[name])} in the high-fidelity model"
            )
        s_low, s_high = spec_low.supports[name], spec_high.supports[name]
        if not same_support(s_low, s_high):
            raise ValueError(
                f"latent site '{name}' has support {s_low} in the low-fidelity model and "
                f"{s_high} in the high-fidelity model"
            )


def check_high_fidelity(spec_low: ModelSpec, spec_high: ModelSpec):
    """Raise ``ValueError`` unless a high-fidelity model can refine a low-fidelity one.

    The latent sites must agree (:func:`check_same_latents`) and so must the
    shapes of the observed sites; the message names the site and both shapes.
    """
    check_same_latents(spec_low, spec_high)
    for name, shape in spec_low.observed_shapes.items():
        if tuple(spec_high.observed_shapes[name]) != tuple(shape):
            raise ValueError(
                f"observed site '{name}' has shape {tuple(spec_high.observed_shapes[name])} "
                f"in the high-fidelity model and {tuple(shape)} in the low-fidelity model"
            )


def same_support(a, b) -> bool:
    """Whether two constraints describe the same support, compared by value.

    Same constraint type and, recursively over their attributes, equal
    sub-constraints (``IndependentConstraint.base_constraint``), equal integers
    (``reinterpreted_batch_ndims``) and equal bounds: arrays by value, a scalar
    bound equal to an array bound when it broadcasts to it (``-3.0`` and
    ``-3 * ones(5)`` bound a (5,)-site alike). ``Constraint.__eq__`` is not
    used: with array bounds it compares object identity.
    """
    if isinstance(a, Constraint) or isinstance(b, Constraint):
        if type(a) is not type(b):
            return False
        va, vb = vars(a), vars(b)
        return va.keys() == vb.keys() and all(same_support(va[k], vb[k]) for k in va)
    if isinstance(a, (list, tuple, dict)) or isinstance(b, (list, tuple, dict)):
        if type(a) is not type(b) or len(a) != len(b):
            return False
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same_support(a[k], b[k]) for k in a)
        return all(same_support(x, y) for x, y in zip(a, b, strict=True))
    if a is None or b is None or isinstance(a, str) or callable(a):
        return a is b or (type(a) is type(b) and a == b)
    try:
        return bool(np.array_equiv(np.asarray(a), np.asarray(b)))
    except Exception:  # noqa: BLE001 - not an array (a tracer, an odd object): no claim
        return a is b


def check_observations(spec: ModelSpec, observations) -> np.ndarray:
    """Validate ``observations`` (site name -> value) and flatten them.

    Accepts a single observation (each site at its own shape) or a batch (a
    common leading axis on every site). Returns (M,) or (B, M). Raises
    ``ValueError`` naming the site for unknown or missing sites, wrong shapes,
    non-real dtypes (strings, objects, complex) and non-finite values.
    """
    if not isinstance(observations, dict):
        raise TypeError(
            f"observations must be a dict from observed site name to value, got "
            f"{type(observations).__name__}"
        )
    unknown = sorted(set(observations) - set(spec.observed_shapes))
    if unknown:
        raise ValueError(
            f"unknown observed site(s) {unknown}; the observed sites are "
            f"{sorted(spec.observed_shapes)}"
        )
    missing = sorted(set(spec.observed_shapes) - set(observations))
    if missing:
        raise ValueError(f"missing observation for site(s) {missing}")
    batch = None
    flat = []
    for name, shape in spec.observed_shapes.items():
        try:
            v = np.asarray(observations[name])
        except Exception as e:  # noqa: BLE001 - ragged lists and the like
            raise ValueError(f"observation for site '{name}' is not an array: {e}") from e
        if (not np.issubdtype(v.dtype, np.number) and v.dtype != bool) or np.iscomplexobj(v):
            raise ValueError(
                f"observation for site '{name}' has dtype {v.dtype}; expected real numbers"
            )
        if v.shape == tuple(shape):
            b = ()
        elif v.ndim == len(shape) + 1 and v.shape[1:] == tuple(shape):
            b = v.shape[:1]
        else:
            raise ValueError(
                f"observation for site '{name}' has shape {v.shape}; expected {tuple(shape)} "
                f"or (batch, *{tuple(shape)})"
            )
        if batch is None:
            batch = b
        elif b != batch:
            raise ValueError(
                f"observation for site '{name}' has batch shape {b}, other sites have {batch}"
            )
        if not np.all(np.isfinite(v)):
            raise ValueError(f"observation for site '{name}' contains NaN or infinite values")
        flat.append(v.reshape(b + (-1,)).astype(np.float32))
    return np.concatenate(flat, axis=-1)


def obs_tag(y) -> str:
    """A short tag (16 hex digits) of a flat observation ``y`` (M,): the SHA-256 of all
    its float32 values (the bytes :func:`~numpyro_mfdiff._state.obs_key` keys), for
    names on disk (refinement checkpoints)."""
    return hashlib.sha256(np.asarray(y, np.float32).tobytes()).hexdigest()[:16]
