"""Example models from the paper, with their exact posteriors where they exist."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from ._ex_burgers import (
    BURGERS_HIGH_GRID,
    BURGERS_LOW_GRID,
    BURGERS_NOISE,
    BURGERS_POINTS,
    BURGERS_TIMES,
    BURGERS_TRUE,
    burgers_exact,
    burgers_grid_posterior,
    burgers_grid_sample,
    burgers_high,
    burgers_interp,
    burgers_low,
    burgers_observation,
    burgers_solution,
    burgers_spectral,
)
from ._ex_runaway import (
    RUNAWAY_COARSE_DT,
    RUNAWAY_FINE_DT,
    RUNAWAY_NOISE,
    RUNAWAY_TIMES,
    RUNAWAY_TRUE,
    runaway_closed_form,
    runaway_high,
    runaway_low,
    runaway_rates,
    runaway_solve,
)
from ._ex_sde import (
    OU_COARSE_DT,
    OU_NOISE,
    OU_TIMES,
    OU_TRUE,
    OU_X0,
    ou_euler_moments,
    ou_euler_paths,
    ou_exact_moments,
    ou_high,
    ou_log_posterior_grid,
    ou_low,
)

__all__ = [
    "quadratic",
    "quadratic_coarse",
    "quadratic_bin_probs",
    "quadratic_kl",
    "QUADRATIC_NOISE",
    "lorenz63_low",
    "lorenz63_high",
    "lorenz63_rk4",
    "lorenz63_diffrax",
    "lorenz63_rhs",
    "LORENZ_TRUE",
    "LORENZ_X0",
    "LORENZ_TIMES",
    "LORENZ_NOISE",
    "LORENZ_COARSE_DT",
    "burgers_low",
    "burgers_high",
    "burgers_solution",
    "burgers_spectral",
    "burgers_interp",
    "burgers_exact",
    "burgers_observation",
    "burgers_grid_posterior",
    "burgers_grid_sample",
    "BURGERS_TRUE",
    "BURGERS_TIMES",
    "BURGERS_POINTS",
    "BURGERS_NOISE",
    "BURGERS_LOW_GRID",
    "BURGERS_HIGH_GRID",
    "ou_low",
    "ou_high",
    "ou_exact_moments",
    "ou_euler_moments",
    "ou_euler_paths",
    "ou_log_posterior_grid",
    "OU_TRUE",
    "OU_X0",
    "OU_TIMES",
    "OU_NOISE",
    "OU_COARSE_DT",
    "runaway_low",
    "runaway_high",
    "runaway_solve",
    "runaway_rates",
    "runaway_closed_form",
    "RUNAWAY_TRUE",
    "RUNAWAY_TIMES",
    "RUNAWAY_NOISE",
    "RUNAWAY_COARSE_DT",
    "RUNAWAY_FINE_DT",
]

QUADRATIC_NOISE = 0.1


def quadratic(y=None):
    """``theta ~ U(-2, 2)``, ``y ~ N(theta^2, 0.1^2)``: bimodal posterior at ``+-sqrt(y)``."""
    theta = numpyro.sample("theta", dist.Uniform(-2.0, 2.0))
    numpyro.sample("y", dist.Normal(theta**2, QUADRATIC_NOISE), obs=y)


def quadratic_coarse(y=None, nodes: int = 6):
    """A deliberately poor low-fidelity :func:`quadratic`: ``theta^2`` interpolated
    linearly between ``nodes`` equally spaced points of [-2, 2].

    With 6 nodes the approximation overestimates ``theta^2`` by up to 0.16 (at
    ``theta = +-1``: 1.12), so its posterior for ``y = 1`` peaks at
    ``+-0.925`` instead of ``+-1``, 1.5 posterior standard deviations away.
    """
    theta = numpyro.sample("theta", dist.Uniform(-2.0, 2.0))
    grid = jnp.linspace(-2.0, 2.0, nodes)
    numpyro.sample("y", dist.Normal(jnp.interp(theta, grid, grid**2), QUADRATIC_NOISE), obs=y)


def quadratic_bin_probs(y: float, bins: int = 80, range=(-2.0, 2.0), noise=QUADRATIC_NOISE):  # noqa: A002
    """Exact posterior mass of :func:`quadratic` in ``bins`` equal bins over ``range``.

    Integrated numerically on a grid of 400,001 points; returns an array (bins,).
    """
    edges = np.linspace(range[0], range[1], bins + 1)
    g = np.linspace(range[0], range[1], 400_001)
    logp = -0.5 * ((y - g**2) / noise) ** 2
    c = np.cumsum(np.exp(logp - logp.max()))
    c /= c[-1]
    return np.diff(c[np.clip(np.searchsorted(g, edges), 0, g.size - 1)])


def quadratic_kl(samples, y: float, bins: int = 80) -> float:
    """KL(exact || samples) of :func:`quadratic` at ``y``: ``bins`` bins over [-2, 2].

    ``samples``: draws of ``theta``, shape (S,).
    """
    from .metrics import kl_divergence_hist

    probs = quadratic_bin_probs(y, bins)
    return float(kl_divergence_hist(probs, samples, bins=bins, range=(-2.0, 2.0), p_is_probs=True))


# ----------------------------------------------------------------------------- Lorenz 63

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
    times = np.asarray(times, np.float64)
    steps = np.rint(times / dt).astype(int)
    if not np.allclose(steps * dt, times, atol=1e-9 * max(1.0, times.max())):
        raise ValueError(f"every observation time must be a multiple of dt={dt}, got {times}")

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
