"""NumPyro model plumbing: site discovery, prior simulation and likelihoods.

The latent sites are the prior; the observed sites carry the simulator
output and its noise. Everything here works on flat unconstrained vectors
``theta`` of size ``D`` (``jax.flatten_util.ravel_pytree`` order) and flat
observation vectors ``y`` of size ``M``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions.constraints import Constraint
from numpyro.distributions.distribution import ImproperUniform, Unit
from numpyro.distributions.transforms import biject_to
from numpyro.primitives import Messenger

from . import _external, _simulate

__all__ = [
    "ModelSpec",
    "inspect_model",
    "split_data_arguments",
    "simulate",
    "log_likelihood",
    "check_observations",
    "check_same_latents",
    "check_high_fidelity",
    "log_prior_fn",
    "deterministic_fn",
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


def _is_factor(fn):
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
    for name, site in tr.items():
        if site["type"] != "sample":
            continue
        if _is_factor(site["fn"]):
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
    if observed_sites is not None:
        observed_sites = (
            [observed_sites] if isinstance(observed_sites, str) else list(observed_sites)
        )
        unknown = [n for n in observed_sites if n not in sites]
        if unknown:
            raise ValueError(
                f"observed site(s) {unknown} not found in the model; its sample sites are "
                f"{sorted(sites)}"
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
    obs = sorted(obs)  # ravel_pytree flattens dicts in sorted key order
    latent = sorted(n for n in sites if n not in obs)
    if not latent:
        raise ValueError(f"the model has no latent site (all of {sorted(sites)} are observed)")
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
        if n in other and not _same_support(s, other[n]["fn"].support):
            raise ValueError(
                f"latent site '{n}' has a support that depends on other latent sites "
                f"({s} in one prior draw, {other[n]['fn'].support} in another); only "
                "fixed supports are supported: reparameterise, e.g. "
                "x = low + (high - low) * numpyro.sample('u', dist.Uniform(0, 1))"
            )


class Simulations(NamedTuple):
    """Prior simulations ``S_prior``.

    ``theta``: (N, D) unconstrained latents; ``y``: (N, M) prior-predictive
    observations; ``dists``: dict of batched observed-site distributions
    (leading axis N), enough to evaluate ``log p(y | theta_j)`` for any ``y``;
    ``valid``: (N,) bool, False for failed simulations; ``errors``: the first
    few exception summaries from external simulators (strings).
    """

    theta: Any
    y: Any
    dists: Any
    valid: Any
    errors: tuple = ()


def _simulate_one(model, spec: ModelSpec, args, kwargs, key, theta=None):
    """One simulation; with ``theta`` (D,) unconstrained, the latent sites take those values."""
    if theta is not None:
        model = handlers.substitute(model, data=spec.constrain(theta))
    tr = _trace(model, key, args, kwargs)
    sites = _sample_sites(tr)
    latent = {n: sites[n]["value"] for n in spec.latent_shapes}
    theta = spec.unconstrain(latent)
    y = ravel_pytree(
        {n: jnp.asarray(sites[n]["value"], jnp.float32) for n in spec.observed_shapes}
    )[0]
    dists = {n: sites[n]["fn"] for n in spec.observed_shapes}
    return theta, y, dists


def _all_finite(tree):
    leaves = [jnp.asarray(x) for x in jax.tree.leaves(tree)]
    leaves = [x for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)]
    out = jnp.ones(leaves[0].shape[:1], bool) if leaves else True
    for x in leaves:
        out = out & jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=-1)
    return out


def _model_name(model):
    return getattr(model, "__qualname__", type(model).__qualname__)


def simulate(
    key,
    model,
    spec: ModelSpec,
    num: int,
    args=(),
    kwargs=None,
    chunk_size=None,
    progress=None,
    *,
    theta=None,
    checkpoint=None,
    executor=None,
    max_failure_fraction=None,
):
    """Draw ``num`` simulations of ``model``; returns :class:`Simulations`.

    Runs in chunks of ``chunk_size`` (vmapped and jitted); ``progress`` is an
    optional callable receiving the number of simulations finished per chunk.
    A simulation whose latents, output or distribution parameters are not
    finite (an external simulator that raised returns NaN) is marked invalid
    and kept out of every later computation.

    Args:
        theta: optional (num, D) unconstrained latent values: simulate at these
            (refinement) instead of drawing the latents from the prior.
        checkpoint: optional directory; each finished chunk is written there
            and a rerun with the same key, ``num``, ``chunk_size``, model and
            arguments loads it instead of simulating it again. A directory
            written for another run is a ``ValueError``.
        executor: ``concurrent.futures.Executor`` for the calls of simulators
            wrapped by :func:`external_simulator`; the result is the same as
            without it.
        max_failure_fraction: stop with a ``RuntimeError`` as soon as more
            than this fraction of ``num`` has failed.

    Simulation ``i`` uses ``jax.random.split(key, num)[i]`` whatever the
    chunking, so an interrupted and resumed run equals an uninterrupted one.
    """
    kwargs = kwargs or {}
    num = int(num)
    chunk_size = int(min(chunk_size or num, num))
    keys = jax.random.split(key, num)
    if theta is None:
        inputs = (keys,)
        one = lambda k: _simulate_one(model, spec, args, kwargs, k)  # noqa: E731
    else:
        theta = np.asarray(theta, np.float32)
        if theta.shape != (num, spec.dim):
            raise ValueError(f"theta must have shape {(num, spec.dim)}, got {theta.shape}")
        if not np.all(np.isfinite(theta)):
            raise ValueError("theta contains NaN or infinite values")
        inputs = (keys, jnp.asarray(theta))
        one = lambda k, th: _simulate_one(model, spec, args, kwargs, k, th)  # noqa: E731
    one_like = [x[0] for x in inputs]
    traced = []
    n_external = _external.count_traced_calls(lambda: traced.append(jax.eval_shape(one, *one_like)))
    out_like = traced[0]
    ckpt = None
    if checkpoint is not None:
        manifest = dict(
            kind="simulations",
            model=_model_name(model),
            key=_simulate.key_fingerprint(key),
            num=num,
            chunk_size=chunk_size,
            latent_shapes={k: list(v) for k, v in spec.latent_shapes.items()},
            observed_shapes={k: list(v) for k, v in spec.observed_shapes.items()},
            outputs={
                name: [list(x.shape), str(x.dtype)]
                for name, x in zip(
                    _simulate.leaf_names(out_like), jax.tree.leaves(out_like), strict=True
                )
            },
            model_args=_simulate.fingerprint(args, kwargs),
            theta=None if theta is None else _simulate.fingerprint(theta),
        )
        ckpt = _simulate.Checkpoint(checkpoint, manifest)

    def count_failed(out):
        return int(np.sum(~np.asarray(_all_finite(out))))

    out, _, errors = _simulate.run_chunks(
        jax.jit(jax.vmap(one)),
        inputs,
        chunk_size,
        out_like=out_like,
        count_failed=count_failed,
        pad=n_external == 0,  # padding rows would be real (expensive) external calls
        checkpoint=ckpt,
        executor=executor,
        max_failure_fraction=max_failure_fraction,
        progress=progress,
    )
    theta, y, dists = out
    valid = np.asarray(_all_finite(theta) & _all_finite(y) & _all_finite(dists))
    theta = np.where(valid[:, None], theta, 0.0).astype(np.float32)
    y = np.where(valid[:, None], y, 0.0).astype(np.float32)
    return Simulations(theta=theta, y=y, dists=dists, valid=valid, errors=tuple(errors))


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
        if not _same_support(s_low, s_high):
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


def _same_support(a, b) -> bool:
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
        return va.keys() == vb.keys() and all(_same_support(va[k], vb[k]) for k in va)
    if isinstance(a, (list, tuple, dict)) or isinstance(b, (list, tuple, dict)):
        if type(a) is not type(b) or len(a) != len(b):
            return False
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(_same_support(a[k], b[k]) for k in a)
        return all(_same_support(x, y) for x, y in zip(a, b, strict=True))
    if a is None or b is None or isinstance(a, str) or callable(a):
        return a is b or (type(a) is type(b) and a == b)
    try:
        return bool(np.array_equiv(np.asarray(a), np.asarray(b)))
    except Exception:  # noqa: BLE001 - not an array (a tracer, an odd object): no claim
        return a is b


def log_prior_fn(model, spec: ModelSpec, args=(), kwargs=None):
    """``theta (D,) -> log p(theta)``: the prior density in unconstrained coordinates.

    The latent sites are substituted and their log densities summed, plus the
    log-Jacobian of the map to constrained values. Under ``jit`` the
    simulator's output is unused, so XLA drops it.
    """
    kwargs = kwargs or {}

    def fn(theta):
        tr = _substituted_trace(model, args, kwargs, spec.constrain(theta))
        lp = sum(jnp.sum(tr[n]["fn"].log_prob(tr[n]["value"])) for n in spec.latent_shapes)
        return lp + spec.log_prior_jacobian(theta)

    return fn


def _substituted_trace(model, args, kwargs, values, data=None):
    """Trace of ``model`` with latent sites set to ``values`` (constrained) and the
    observed sites, when ``data`` is given, conditioned on it."""
    m = handlers.substitute(model, data=values)
    if data is not None:
        m = handlers.condition(m, data=data)
    return _trace(m, jax.random.PRNGKey(0), args, kwargs)


def deterministic_fn(model, spec: ModelSpec, args=(), kwargs=None):
    """``(values, y) -> {name: value}`` for the model's ``numpyro.deterministic`` sites.

    ``values``: constrained latent values (dict, site shapes); ``y``: a flat
    observation (M,), which the observed sites are conditioned on (cast to
    their dtypes), so a deterministic site that reads the data sees it, as under
    ``MCMC``. Returns None when the model has no deterministic site. Jittable;
    under ``jit`` the simulator work the deterministic sites do not need is
    dropped by XLA.
    """
    kwargs = kwargs or {}
    tr = _dry_trace(model, args, kwargs)
    names = [n for n, s in tr.items() if s["type"] == "deterministic"]
    if not names:
        return None

    def fn(values, y):
        obs = spec.unravel_obs(y)
        obs = {n: v.astype(spec.observed_dtypes[n]) for n, v in obs.items()}
        tr = _substituted_trace(model, args, kwargs, values, obs)
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
