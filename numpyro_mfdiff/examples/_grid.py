"""The time-grid check shared by the fixed-step example solvers."""

from __future__ import annotations

import numpy as np

__all__ = ["grid_steps"]


def grid_steps(times, dt, *, allow_zero: bool = False) -> np.ndarray:
    """Number of steps of ``dt`` from ``t = 0`` to each observation time.

    Args:
        times: observation times, any shape (flattened).
        dt: the fixed step, positive.
        allow_zero: whether a time may be ``0`` (zero steps); by default every time
            must be a positive multiple of ``dt``.

    Returns:
        Integer array ``(len(times),)``. A ``ValueError`` names ``dt`` and the times
        when one is not a multiple of ``dt`` (to ``1e-9`` relative).
    """
    times = np.asarray(times, np.float64).reshape(-1)
    if not dt > 0:
        raise ValueError(f"dt must be positive, got {dt}")
    if times.size == 0:
        raise ValueError("times must be a non-empty sequence")
    steps = np.rint(times / dt).astype(int)
    off = not np.allclose(steps * dt, times, atol=1e-9 * max(1.0, times.max()))
    if off or np.any(steps < (0 if allow_zero else 1)):
        which = "multiple" if allow_zero else "positive multiple"
        raise ValueError(f"every observation time must be a {which} of dt={dt}, got {times}")
    return steps
