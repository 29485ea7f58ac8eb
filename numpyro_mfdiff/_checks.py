"""Argument validators shared by the inference object and refinement."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["model_callable", "positive_int", "real"]


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
