"""Lorenz 63 parameter estimation: a fixed-step RK4 (low) and an adaptive diffrax solve (high)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from ._grid import grid_steps

__all__ = [
    "LORENZ_TRUE",
    "LORENZ_X0",
    "LORENZ_TIMES",
    "LORENZ_NOISE",
    "LORENZ_COARSE_DT",
    "lorenz63_rhs",
    "lorenz63_rk4",
    "lorenz63_diffrax",
    "lorenz63_low",
    "lorenz63_high",
]

LORENZ_TRUE = {"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0}
LORENZ_X0 = (1.0, 1.0, 1.0)
LORENZ_TIMES = (0.3, 0.6, 0.9, 1.2, 1.5)
LORENZ_NOISE = 1.0
LORENZ_COARSE_DT = 0.075


def lorenz63_rhs(state, sigma, rho, beta):
    """Lorenz 63 vector field: ``state`` (..., 3) -> (..., 3)."""
    x, y, z = state[..., 0], state[..., 1], state[..., 2]
    return jnp.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], axis=-1)


def lorenz63_rk4(params, times=LORENZ_TIMES, dt=LORENZ_COARSE_DT, x0=LORENZ_X0):
    """Fixed-step classical RK4 from ``t = 0``, the state read at ``times``.

    ``params`` is ``(sigma, rho, beta)`` (scalars); every time must be a multiple
    of ``dt``. Plain JAX (``lax.scan``): vmap-able and differentiable.
    Returns the states at ``times``, shape ``(len(times), 3)``.
    """
    sigma, rho, beta = params
    steps = grid_steps(times, dt)

    def f(s):
        return lorenz63_rhs(s, sigma, rho, beta)

    def step(s, _):
        k1 = f(s)
        k2 = f(s + 0.5 * dt * k1)
        k3 = f(s + 0.5 * dt * k2)
        k4 = f(s + dt * k3)
        s = s + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        return s, s

    s0 = jnp.asarray(x0, jnp.result_type(float))
    _, path = jax.lax.scan(step, s0, None, length=int(steps.max()))
    return path[steps - 1]


def lorenz63_diffrax(params, times=LORENZ_TIMES, rtol=1e-6, atol=1e-6, x0=LORENZ_X0):
    """Adaptive ``diffrax`` solve (Tsit5, PID step-size control) of Lorenz 63.

    Same arguments and return value, ``(len(times), 3)``, as :func:`lorenz63_rk4`;
    at most 4096 steps (beyond that, or on any solver failure, the unreached states are
    ``inf``, so the likelihood is ``-inf``: MFDiff leaves that simulation out and NUTS
    rejects the proposal, instead of one bad point failing a whole ``vmap``);
    differentiable with diffrax's default ``RecursiveCheckpointAdjoint``.
    Needs ``diffrax`` (the ``test`` extra).
    """
    import diffrax

    sigma, rho, beta = params

    def f(t, s, args):
        return lorenz63_rhs(s, sigma, rho, beta)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(f),
        diffrax.Tsit5(),
        t0=0.0,
        t1=float(max(times)),
        dt0=0.01,
        y0=jnp.asarray(x0, jnp.result_type(float)),
        saveat=diffrax.SaveAt(ts=jnp.asarray(times)),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=4096,
        throw=False,  # a failed solve gives inf states (-inf likelihood), not an error
    )
    return sol.ys


def _lorenz63(solve, y):
    sigma = numpyro.sample("sigma", dist.LogNormal(np.log(10.0), 0.2))
    rho = numpyro.sample("rho", dist.LogNormal(np.log(28.0), 0.1))
    beta = numpyro.sample("beta", dist.LogNormal(np.log(8.0 / 3.0), 0.2))
    states = solve((sigma, rho, beta))
    numpyro.sample("y", dist.Normal(states, LORENZ_NOISE).to_event(2), obs=y)


def lorenz63_low(y=None):
    """Lorenz 63 parameter estimation, low fidelity: RK4 with a fixed step ``dt = 0.075``.

    Prior (independent): ``sigma ~ LogNormal(log 10, 0.2)``,
    ``rho ~ LogNormal(log 28, 0.1)``, ``beta ~ LogNormal(log 8/3, 0.2)``.
    Initial state ``(1, 1, 1)`` at ``t = 0`` (known); ``y`` (5, 3) are
    ``x, y, z`` at ``t = 0.3, 0.6, 0.9, 1.2, 1.5`` plus ``N(0, 1)`` noise.
    The coarse step is biased: at the true parameters ``(10, 28, 8/3)`` its
    states differ from the adaptive solve by up to 1.4 (1.4 noise sd), which
    shifts the posterior by about 2 posterior standard deviations in each
    parameter (linearised: log-scale sds 0.034, 0.010, 0.022); ``G_low`` is
    off and must be refined with :func:`lorenz63_high`.
    """
    _lorenz63(lorenz63_rk4, y)


def lorenz63_high(y=None):
    """Lorenz 63, high fidelity: :func:`lorenz63_diffrax` (Tsit5, rtol = atol = 1e-6).

    Same prior, initial state, observation times and noise as :func:`lorenz63_low`.
    """
    _lorenz63(lorenz63_diffrax, y)
