"""Argument validators shared by the inference object and refinement, the checks of
observations and data, and the chain layout."""

from __future__ import annotations

import math
import warnings

import numpy as np

from . import _model

__all__ = ["model_callable", "positive_int", "real", "chain_count", "group_chains"]
__all__ += ["data_observations", "split_run_arguments", "count_failures"]


def positive_int(name, value, minimum=1):
    """``int(value)``, or a ``ValueError`` naming ``name`` unless it is an int >= ``minimum``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def real(name, value, low=-math.inf, high=math.inf, low_open=False, high_open=False):
    """``float(value)``, or a ``ValueError`` naming ``name`` when it is not a real in range."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    v = float(value) if ok else math.nan
    ok = ok and math.isfinite(v)
    ok = ok and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lb, hb = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be a finite number in {lb}{low}, {high}{hb}, got {value!r}")
    return v


def model_callable(model):
    """A ``TypeError`` unless ``model`` is callable (a NumPyro model)."""
    if not callable(model):
        raise TypeError(f"model must be a callable NumPyro model, got {type(model).__name__}")


def chain_count(num_samples, num_chains) -> int:
    """``int(num_chains)``; a ``ValueError`` unless it is a positive divisor of ``num_samples``."""
    ok = isinstance(num_chains, (int, np.integer)) and not isinstance(num_chains, bool)
    if not ok or num_chains < 1 or num_samples % num_chains:
        raise ValueError(
            f"num_samples ({num_samples}) must be a positive multiple of num_chains "
            f"({num_chains!r})"
        )
    return int(num_chains)


def group_chains(samples, num_chains, axis=0):
    """Split the draw axis of every array: (..., S, *shape) -> (..., C, S // C, *shape).

    ``axis`` is the position of ``S`` (0, or 1 after a batch axis). Independent
    draws have no chains of their own: chain ``c`` is the ``c``-th block of
    ``S // C`` consecutive draws, so the flat draws are the chains concatenated.
    """

    def split(v):
        shape = v.shape[:axis] + (num_chains, v.shape[axis] // num_chains) + v.shape[axis + 1 :]
        return v.reshape(shape)

    return {k: split(v) for k, v in samples.items()}


def data_observations(spec, data):
    """Validated default observations from data passed to ``run`` (or None)."""
    if not data:
        return None
    missing = sorted(set(spec.observed_shapes) - set(data))
    if missing:
        raise ValueError(
            f"the model arguments give data for site(s) {sorted(data)} but not for the "
            f"observed site(s) {missing}: pass data for every observed site or for none"
        )
    for name, shape in spec.observed_shapes.items():
        got = np.shape(data[name])
        if got != tuple(shape):
            raise ValueError(
                f"data passed to run for site '{name}' has shape {got}, but the site "
                f"simulates shape {tuple(shape)}: MCMC.run would read the data as one data "
                "set of that shape, which these simulations cannot weigh. Give the site "
                f"that shape in the model (e.g. numpyro.plate('data', {got[0] if got else 1})"
                " around it, or .expand), or, for separate observations, run without the "
                f"data and pass a batch to get_samples(key, {{'{name}': data}})"
            )
    try:
        _model.check_observations(spec, data)
    except ValueError as e:
        raise ValueError(f"data passed to run: {e}") from e
    return {k: np.asarray(v) for k, v in data.items()}


def split_run_arguments(model, args, kwargs, observed_sites):
    """The model arguments of ``run`` without the data, the data, the observed sites
    to inspect (``observed_sites``, else the sites the data observes, else None) and the
    arguments that carried the data (:func:`~numpyro_mfdiff._model.data_arguments`); a
    ``ValueError`` for data observing a site outside ``observed_sites``."""
    args0, kwargs0 = tuple(args), dict(kwargs)
    args, kwargs, data = _model.split_data_arguments(model, args, kwargs)
    data_args = _model.data_arguments(args0, kwargs0, args, kwargs, data)
    if data and observed_sites is not None:
        names = [observed_sites] if isinstance(observed_sites, str) else list(observed_sites)
        extra = sorted(set(data) - set(names))
        if extra:
            raise ValueError(
                f"the model arguments observe site(s) {extra}, which are not among "
                f"observed_sites={sorted(names)}"
            )
    observed = sorted(data) if data and observed_sites is None else observed_sites
    return args, kwargs, data, observed, data_args


def count_failures(sims, num_simulations) -> int:
    """The failed simulations (a warning giving the first errors); a ``RuntimeError``
    when fewer than two are finite."""
    n_valid = int(sims.valid.sum())
    if n_valid < 2:
        raise RuntimeError(f"only {n_valid} of {num_simulations} prior simulations are finite")
    failed = num_simulations - n_valid
    if failed:
        first = "; ".join(sims.errors[:3])
        warnings.warn(
            f"{failed} of {num_simulations} prior simulations failed (non-finite "
            "output or a simulator error) and are left out"
            + (f"; first errors: {first}" if first else ""),
            stacklevel=3,
        )
    return failed
