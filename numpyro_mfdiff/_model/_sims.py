"""Prior simulations of a model: one at a time (:func:`simulate_one`) and in
chunked, checkpointed, jitted batches (:func:`simulate`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro import handlers

from . import _external, _simulate
from ._sites import _sample_sites, _trace

if TYPE_CHECKING:  # annotations only: no import of _spec at run time
    from ._spec import ModelSpec

__all__ = ["BatchSimulator", "Simulations", "batch_simulator", "simulate"]


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


def simulate_one(model, spec: ModelSpec, args, kwargs, key, theta=None):
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


class BatchSimulator(NamedTuple):
    """One simulation ``one(key, theta=None)`` of a model and its compiled batch
    ``batched = jax.jit(jax.vmap(one))``: made once by :func:`batch_simulator` and given
    to every :func:`simulate` call of a refinement, the stages share one compilation
    (each call would otherwise trace and compile the model again)."""

    one: Any
    batched: Any


def batch_simulator(model, spec: ModelSpec, args=(), kwargs=None) -> BatchSimulator:
    """The :class:`BatchSimulator` of ``model`` with arguments ``args``/``kwargs``."""
    kwargs = kwargs or {}

    def one(k, th=None):
        return simulate_one(model, spec, args, kwargs, k, th)

    return BatchSimulator(one, jax.jit(jax.vmap(one)))


def _all_finite(tree):
    """(N,) NumPy: rows of every inexact leaf of ``tree`` finite (host arrays: no
    compilation per shape)."""
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
    leaves = [x for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)]
    out = np.ones(leaves[0].shape[:1], bool) if leaves else True
    for x in leaves:
        out = out & np.all(np.isfinite(x.reshape(x.shape[0], -1)), axis=-1)
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
    batch: BatchSimulator | None = None,
    pad_to: int | None = None,
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
        batch: the model's :func:`batch_simulator` (same ``args``/``kwargs``), shared
            between calls; default a new one (compiled for this call).
        pad_to: where all ``num`` simulations fit in one chunk, run them padded to
            ``pad_to`` rows (repeats, dropped; JAX models only), so that calls of
            nearby sizes share one compiled shape.

    Simulation ``i`` uses ``jax.random.split(key, num)[i]`` whatever the
    chunking, so an interrupted and resumed run equals an uninterrupted one.
    """
    kwargs = kwargs or {}
    num = int(num)
    chunk_size = int(min(chunk_size or num, num))
    keys = jax.random.split(key, num)
    theta = None if theta is None else _checked_theta(theta, num, spec.dim)
    inputs = (keys,) if theta is None else (keys, theta)  # theta stays on the host

    batch = batch_simulator(model, spec, args, kwargs) if batch is None else batch
    one_like = [x[0] for x in inputs]
    traced = []
    # a fresh function, so that JAX traces it again (a trace it has cached would count
    # no external call, and padding rows would then call external simulators)
    n_external = _external.count_traced_calls(
        lambda: traced.append(jax.eval_shape(lambda *a: batch.one(*a), *one_like))
    )
    out_like = traced[0]
    ckpt = None
    if checkpoint is not None:
        manifest = _manifest(key, model, spec, num, chunk_size, out_like, args, kwargs, theta)
        ckpt = _simulate.Checkpoint(checkpoint, manifest)

    out, _, errors = _simulate.run_chunks(
        batch.batched,
        inputs,
        chunk_size,
        padded_size=max(pad_to, num) if pad_to is not None and chunk_size == num else None,
        out_like=out_like,
        count_failed=_count_failed,
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


def _checked_theta(theta, num, dim):
    """``theta`` as float32 (num, dim), or a ``ValueError`` (wrong shape, not finite)."""
    theta = np.asarray(theta, np.float32)
    if theta.shape != (num, dim):
        raise ValueError(f"theta must have shape {(num, dim)}, got {theta.shape}")
    if not np.all(np.isfinite(theta)):
        raise ValueError("theta contains NaN or infinite values")
    return theta


def _manifest(key, model, spec, num, chunk_size, out_like, args, kwargs, theta):
    """What a checkpoint directory of :func:`simulate` must match to be reused."""
    return dict(
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


def _count_failed(out):
    return int(np.sum(~np.asarray(_all_finite(out))))
