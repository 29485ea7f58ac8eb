"""Forward-diffusion schedules and reverse-time grids.

A schedule maps a time ``t`` in ``[0, 1]`` to the coefficients of the forward
process ``theta_t = alpha(t) * theta_0 + beta(t) * eps``.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp

__all__ = [
    "AbstractSchedule",
    "LinearSchedule",
    "CosineSchedule",
    "geometric_grid",
    "uniform_grid",
    "time_at_noise_ratio",
]


class AbstractSchedule(eqx.Module):
    """Interface of a forward-diffusion schedule: ``alpha(t)`` and ``beta(t)``."""

    @abc.abstractmethod
    def alpha(self, t):
        """Signal coefficient at time ``t`` (any shape)."""

    @abc.abstractmethod
    def beta(self, t):
        """Noise standard deviation at time ``t`` (any shape)."""


class LinearSchedule(AbstractSchedule):
    """``alpha_t = 1 - (1 - e) t`` and ``beta_t^2 = e + (1 - e) t``.

    The schedule of the paper's public code; ``e`` (``floor``) keeps ``beta > 0``
    at ``t = 0``.
    """

    floor: float = 0.0

    def alpha(self, t):
        return 1.0 - (1.0 - self.floor) * t

    def beta(self, t):
        return jnp.sqrt(self.floor + (1.0 - self.floor) * t)


class CosineSchedule(AbstractSchedule):
    """Variance-preserving cosine schedule: ``alpha = cos(pi t / 2)``, ``beta = sin(pi t / 2)``."""

    def alpha(self, t):
        return jnp.cos(0.5 * jnp.pi * t)

    def beta(self, t):
        return jnp.sin(0.5 * jnp.pi * t)


def geometric_grid(num_steps: int, t_max: float = 1.0 - 1e-4, t_min: float = 1e-4):
    """Decreasing grid of ``num_steps + 1`` times, geometric from ``t_max`` to ``t_min``.

    Concentrates steps near ``t = 0`` where the score changes fastest.
    Returns an array of shape ``(num_steps + 1,)``.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0.0 < t_min < t_max <= 1.0:
        raise ValueError(f"need 0 < t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    k = jnp.arange(num_steps + 1) / num_steps
    return t_max * (t_min / t_max) ** k


def uniform_grid(num_steps: int, t_max: float = 1.0 - 1e-4, t_min: float = 1e-4):
    """Decreasing uniform grid of ``num_steps + 1`` times from ``t_max`` to ``t_min``."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return jnp.linspace(t_max, t_min, num_steps + 1)


def time_at_noise_ratio(schedule: AbstractSchedule, ratio: float, tol: float = 1e-9) -> float:
    """The time ``t`` at which ``beta(t) / alpha(t) = ratio`` (bisection; the ratio
    increases with ``t``). Returns 0.0 where the ratio at ``t = 0`` already exceeds it.
    """

    def r(t):
        return float(schedule.beta(t) / schedule.alpha(t))

    lo, hi = 0.0, 0.999
    if r(lo) >= ratio:
        return 0.0
    if r(hi) < ratio:
        raise ValueError(f"beta/alpha never reaches {ratio} under {type(schedule).__name__}")
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if r(mid) < ratio else (lo, mid)
    return 0.5 * (lo + hi)
