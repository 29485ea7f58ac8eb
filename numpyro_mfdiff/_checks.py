"""Argument validators shared by the inference object, refinement, the baselines and
the diagnostics, and the chain layout. A leaf of the package."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["model_callable", "positive_int", "real", "chain_count", "group_chains"]


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
