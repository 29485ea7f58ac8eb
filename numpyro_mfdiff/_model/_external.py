"""Black-box (non-JAX) simulators inside a NumPyro model, with per-call failures.

:func:`external_simulator` wraps a NumPy function of one parameter set so a
model can call it like a JAX function. Under ``jax.vmap`` (how prior
simulations run) the whole batch reaches one host call, which runs the
function once per parameter set, in order, or on a
``concurrent.futures.Executor``. A call that raises, or returns the wrong
shape, gives NaN for that parameter set only: the simulation is marked failed
and the others are kept.

The host side reads a module-level *session* (executor, failure log,
dry-run flag) set by the simulation layer: XLA runs host callbacks on its own
threads, so a context variable would not reach them. One simulation run at a
time per process sets it.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["external_simulator", "ExternalSimulator"]

MAX_MESSAGES = 5


class _Session:
    """What the host callbacks need while a simulation run is active."""

    def __init__(self, executor=None, dry_run=False):
        self.executor = executor
        self.dry_run = dry_run
        self.lock = threading.Lock()
        self.num_errors = 0
        self.messages: list[str] = []

    def record(self, messages):
        with self.lock:
            self.num_errors += len(messages)
            room = MAX_MESSAGES - len(self.messages)
            self.messages.extend(messages[: max(room, 0)])

    def drain(self):
        """Return ``(num_errors, messages)`` recorded since the last drain, and reset."""
        with self.lock:
            out = (self.num_errors, self.messages)
            self.num_errors, self.messages = 0, []
        return out


_SESSIONS: list[_Session] = []
_TRACE_COUNT = [0]


@contextlib.contextmanager
def session(executor=None, dry_run=False):
    """Activate a session for the host callbacks; yields the :class:`_Session`."""
    s = _Session(executor, dry_run)
    _SESSIONS.append(s)
    try:
        yield s
    finally:
        _SESSIONS.remove(s)


def _current():
    return _SESSIONS[-1] if _SESSIONS else None


def count_traced_calls(fn: Callable[[], Any]) -> int:
    """Run ``fn`` (a trace of a model) and return how many external simulator calls it traced."""
    before = _TRACE_COUNT[0]
    fn()
    return _TRACE_COUNT[0] - before


def _call_safe(fn, *args):
    """Run ``fn(*args)``; return ``(True, output)`` or ``(False, "Type: message")``.

    Module-level so that executors that pickle (process pools, Dask) can send it.
    """
    try:
        return True, fn(*args)
    except Exception as e:  # noqa: BLE001 - any simulator error marks this simulation failed
        return False, f"{type(e).__name__}: {e}"


class ExternalSimulator:
    """A NumPy simulator callable from a NumPyro model; see :func:`external_simulator`."""

    def __init__(self, fn, result_shape_dtypes, executor=None):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        leaves, self._treedef = jax.tree.flatten(result_shape_dtypes)
        if not leaves:
            raise ValueError("result_shape_dtypes must describe at least one output array")
        self._shapes = []
        for leaf in leaves:
            shape, dtype = tuple(leaf.shape), np.dtype(leaf.dtype)
            if not np.issubdtype(dtype, np.floating):
                raise ValueError(
                    f"external simulator outputs must have a floating dtype (a failed call "
                    f"returns NaN), got {dtype}"
                )
            self._shapes.append((shape, dtype))
        if executor is not None and not callable(getattr(executor, "submit", None)):
            raise TypeError(
                f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}"
            )
        self.fn = fn
        self.result_shape_dtypes = result_shape_dtypes
        self.executor = executor

    def __call__(self, *args):
        """Simulate at ``args`` (arrays at the per-simulation shapes); returns JAX arrays."""
        if not args:
            raise TypeError("an external simulator needs at least one array argument")
        _TRACE_COUNT[0] += 1
        args = [jnp.asarray(a) for a in args]
        ndims = tuple(a.ndim for a in args)
        out = jax.pure_callback(
            lambda *xs: self._host(ndims, *xs),
            [jax.ShapeDtypeStruct(s, d) for s, d in self._shapes],
            *args,
            vmap_method="broadcast_all",
        )
        return jax.tree.unflatten(self._treedef, out)

    # ------------------------------------------------------------- host side
    def _host(self, ndims, *args):
        args = [np.asarray(a) for a in args]
        batch = args[0].shape[: args[0].ndim - ndims[0]]
        n = math.prod(batch)
        flat = [a.reshape((n,) + a.shape[len(batch) :]) for a in args]
        outs = [np.empty((n,) + s, d) for s, d in self._shapes]
        s = _current()
        if s is not None and s.dry_run:  # model inspection: shapes only, no simulator call
            return [np.zeros(batch + o.shape[1:], o.dtype) for o in outs]
        executor = s.executor if s is not None and s.executor is not None else self.executor
        calls = [[a[i] for a in flat] for i in range(n)]
        if executor is None:
            results = [_call_safe(self.fn, *c) for c in calls]
        else:
            futures = [executor.submit(_call_safe, self.fn, *c) for c in calls]
            results = []
            for f in futures:
                try:
                    results.append(f.result())
                except Exception as e:
                    # the executor itself failed (not the simulator): stop rather than
                    # record failures that a resumed run would then reuse
                    raise RuntimeError(
                        f"the executor could not run the simulator: {type(e).__name__}: {e}. "
                        "Functions sent to a process pool or cluster must be picklable "
                        "(defined at module level)"
                    ) from e
        errors = []
        for i, (ok, value) in enumerate(results):
            if ok:
                ok, value = self._convert(value)
            if ok:
                for o, v in zip(outs, value, strict=True):
                    o[i] = v
            else:
                errors.append(f"{value} (at {', '.join(_short(a) for a in calls[i])})")
                for o in outs:
                    o[i] = np.nan
        if errors:
            if s is not None:
                s.record(errors)
            else:
                warnings.warn(
                    f"{len(errors)} of {n} external simulator calls failed and returned NaN; "
                    f"first: {errors[0]}",
                    stacklevel=1,
                )
        return [o.reshape(batch + o.shape[1:]) for o in outs]

    def _convert(self, value):
        try:
            leaves = jax.tree.leaves(value) if len(self._shapes) > 1 else [value]
            if len(leaves) != len(self._shapes):
                raise ValueError(f"returned {len(leaves)} arrays, expected {len(self._shapes)}")
            out = []
            for v, (shape, dtype) in zip(leaves, self._shapes, strict=True):
                v = np.asarray(v)
                if v.shape != shape:
                    raise ValueError(f"returned shape {v.shape}, expected {shape}")
                out.append(v.astype(dtype))
            return True, out
        except Exception as e:  # noqa: BLE001
            return False, f"{type(e).__name__}: {e}"


def _short(a):
    a = np.asarray(a)
    if a.size > 4:
        return f"array{a.shape}"
    return np.array2string(a, precision=4, separator=",")


def external_simulator(fn, result_shape_dtypes, *, executor=None) -> ExternalSimulator:
    """Wrap a NumPy simulator so a NumPyro model can call it; failures become NaN.

    Args:
        fn: ``fn(*args) -> output`` for ONE parameter set: NumPy arrays at the
            shapes the model passes in, returning arrays matching
            ``result_shape_dtypes``. Any Python exception, or an output of the
            wrong shape, marks that simulation as failed (NaN output).
        result_shape_dtypes: a ``jax.ShapeDtypeStruct`` (or a pytree of them)
            with floating dtypes: the output of one call.
        executor: optional ``concurrent.futures.Executor`` used when no
            executor is set on :class:`MFDiff`. With an executor ``fn`` must be
            picklable (a module-level function) for process pools and Dask.

    Returns:
        A callable ``sim(*args)`` for use inside the model. Under ``jax.vmap``
        the whole batch reaches one host call (``vmap_method="broadcast_all"``)
        that runs ``fn`` per parameter set, in order, or submits every call to
        the executor and gathers the results in order, so the output is the
        same with or without an executor. Inside :meth:`MFDiff.simulate`
        failures are counted and summarised; elsewhere they raise a warning.

    Example::

        sim = external_simulator(my_solver, jax.ShapeDtypeStruct((10,), jnp.float32))

        def model(y=None):
            k = numpyro.sample("k", dist.LogNormal(0.0, 1.0))
            numpyro.sample("y", dist.Normal(sim(k), 0.1).to_event(1), obs=y)
    """
    return ExternalSimulator(fn, result_shape_dtypes, executor=executor)
