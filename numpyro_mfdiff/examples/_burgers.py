"""Viscous Burgers' equation on a periodic domain: a pseudo-spectral solver and two models.

``u_t + u u_x = nu u_xx`` on ``[0, 2 pi)``, periodic, with ``u(x, 0) = amp * sin(x)``.
The sine steepens into a front at ``x = pi`` around ``t = 1 / amp`` that viscosity
then smooths and damps. The solver is Fourier pseudo-spectral (``rfft``, 2/3-rule
dealiasing) with the integrating-factor RK4 step (the viscous term is integrated
exactly), in plain JAX: ``vmap``-able and differentiable in ``nu`` and ``amp``.
:func:`burgers_exact` is the Cole-Hopf solution, exact up to floating point.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer.util import potential_energy

from ._grid import grid_steps

__all__ = [
    "burgers_spectral",
    "burgers_interp",
    "burgers_solution",
    "burgers_exact",
    "burgers_low",
    "burgers_high",
    "BURGERS_TRUE",
    "BURGERS_TIMES",
    "BURGERS_POINTS",
    "BURGERS_NOISE",
    "BURGERS_LOW_GRID",
    "BURGERS_HIGH_GRID",
    "burgers_observation",
    "burgers_grid_posterior",
    "burgers_grid_sample",
]

BURGERS_TRUE = {"nu": 0.05, "amp": 1.0}
BURGERS_TIMES = (0.5, 1.0, 1.5, 2.0)
BURGERS_POINTS = (0.3, 1.05, 1.8, 2.55, 3.3, 4.05, 4.8, 5.55)  # 0.75 apart, one near the front
BURGERS_NOISE = 0.05
BURGERS_LOW_GRID = {"n": 20, "dt": 0.1}
BURGERS_HIGH_GRID = {"n": 128, "dt": 0.01}


def _steps(times, dt):
    """Steps of ``dt`` between consecutive observation times (ValueError off the grid)."""
    times = np.asarray(times, np.float64).reshape(-1)
    if times.size == 0 or np.any(times < 0) or np.any(np.diff(times) < 0):
        raise ValueError(f"times must be a non-empty, non-decreasing sequence >= 0, got {times}")
    return np.diff(grid_steps(times, dt, allow_zero=True), prepend=0)


def burgers_spectral(u0, nu, times, dt):
    """Solve viscous Burgers from the grid values ``u0`` and return the Fourier coefficients.

    Pseudo-spectral on the ``n`` equispaced points ``x_j = 2 pi j / n`` of ``u0``:
    ``rfft`` coefficients, the quadratic term ``-(u^2)_x / 2`` dealiased by the
    2/3 rule (wavenumbers above ``n / 3`` are zeroed, ``u0`` included), the
    viscous term by an integrating factor, classical RK4 in time with the fixed
    step ``dt``. The mean of ``u`` (wavenumber 0) is conserved exactly.

    Args:
        u0: initial values ``(n,)``, ``n`` even and at least 8.
        nu: viscosity (scalar > 0; traced, so gradients flow through it).
        times: observation times (non-decreasing, each a multiple of ``dt``).
        dt: time step.

    Returns:
        Complex ``rfft`` coefficients at ``times``, shape ``(len(times), n // 2 + 1)``
        (turn them into values with :func:`burgers_interp` or ``jnp.fft.irfft``).
    """
    u0 = jnp.asarray(u0)
    if u0.ndim != 1 or u0.shape[0] < 8 or u0.shape[0] % 2:
        raise ValueError(f"u0 must be a 1-D array of even length >= 8, got shape {u0.shape}")
    n = u0.shape[0]
    gaps = _steps(times, dt)
    k = np.arange(n // 2 + 1)
    keep = jnp.asarray(k <= n // 3, u0.dtype)
    ik = 1j * jnp.asarray(k, u0.dtype)
    lin = -nu * jnp.asarray(k**2, u0.dtype) * dt
    e1, e2 = jnp.exp(lin), jnp.exp(0.5 * lin)

    def nonlin(v):
        u = jnp.fft.irfft(v, n)
        return -0.5 * ik * keep * jnp.fft.rfft(u * u)

    def step(v, _):
        a = nonlin(v)
        b = nonlin(e2 * (v + 0.5 * dt * a))
        c = nonlin(e2 * v + 0.5 * dt * b)
        d = nonlin(e1 * v + dt * e2 * c)
        return e1 * v + dt / 6.0 * (e1 * a + 2.0 * e2 * (b + c) + d), None

    v = keep * jnp.fft.rfft(u0)
    out = []
    for m in gaps:  # one scan per observation interval: only the observed states are kept
        if m:
            v, _ = jax.lax.scan(step, v, None, length=int(m))
        out.append(v)
    return jnp.stack(out)


def burgers_interp(coeffs, x, n):
    """Evaluate a field from its ``rfft`` coefficients at arbitrary points (exact trigonometric
    interpolation of the grid values).

    Args:
        coeffs: ``(..., n // 2 + 1)`` coefficients from :func:`burgers_spectral` (``rfft`` of
            the grid values, unnormalised).
        x: points ``(P,)`` (any reals; the field is ``2 pi``-periodic).
        n: grid size the coefficients belong to.

    Returns:
        Values ``(..., P)``.
    """
    k = np.arange(n // 2 + 1)
    w = np.where((k == 0) | (k == n // 2), 1.0, 2.0) / n
    basis = np.exp(1j * np.outer(k, np.asarray(x, np.float64))) * w[:, None]  # (K, P)
    basis = jnp.asarray(basis, coeffs.dtype)
    return jnp.real(coeffs @ basis)


def burgers_solution(
    params,
    times=BURGERS_TIMES,
    points=BURGERS_POINTS,
    n=BURGERS_HIGH_GRID["n"],
    dt=BURGERS_HIGH_GRID["dt"],
):
    """``u(x, t)`` for ``u(x, 0) = amp * sin(x)`` on an ``n``-point grid with step ``dt``.

    Args:
        params: ``(nu, amp)``, scalars (traced: vmap and grad work).
        times: observation times, multiples of ``dt``.
        points: observation points ``(P,)`` in ``[0, 2 pi)``; the solution there is the
            trigonometric interpolant of the grid values.
        n, dt: grid size (even, >= 8) and time step. :data:`BURGERS_LOW_GRID` (20 points,
            ``dt = 0.1``) and :data:`BURGERS_HIGH_GRID` (128 points, ``dt = 0.01``) are
            the two fidelities of the models.

    Returns:
        ``(len(times), P)`` values.
    """
    nu, amp = params
    x = 2 * np.pi * np.arange(n) / n
    u0 = amp * jnp.asarray(np.sin(x), jnp.result_type(float))
    return burgers_interp(burgers_spectral(u0, nu, times, dt), points, n)


def burgers_exact(params, times=BURGERS_TIMES, points=BURGERS_POINTS):
    """Exact (Cole-Hopf) solution for ``u(x, 0) = amp * sin(x)``, in NumPy float64.

    With ``G(s) = amp (1 - cos s) / (2 nu) + (x - s)^2 / (4 nu t)``,
    ``u(x, t) = int (x - s) / t exp(-G(s)) ds / int exp(-G(s)) ds`` over the real line
    (the heat-kernel form of the Cole-Hopf transform). Both integrals are taken by the
    trapezoidal rule in log-sum-exp form, with a node spacing a tenth of the kernel
    width ``sqrt(2 nu t)`` or finer, so the result is exact to about 1e-10 however small
    ``nu`` is (the Fourier series of the same solution loses all accuracy once
    ``exp(-amp / nu)`` is below the float64 precision).

    Args:
        params: ``(nu, amp)``, floats with ``nu > 0``.
        times: times ``(T,)`` (``t = 0`` gives the initial condition); points: ``(P,)``.

    Returns:
        ``(T, P)`` array (float64).
    """
    nu, amp = float(params[0]), float(params[1])
    if not nu > 0:
        raise ValueError(f"nu must be positive, got {nu}")
    times = np.asarray(times, np.float64).reshape(-1)
    x = np.asarray(points, np.float64).reshape(-1)
    out = np.empty((times.size, x.size))
    for i, t in enumerate(times):
        if t == 0:
            out[i] = amp * np.sin(x)
            continue
        width = np.sqrt(2 * nu * t)
        h = min(0.01, width / 10)
        s = np.arange(-12 * width - 1, 12 * width + 1 + h, h)  # offsets s - x
        g = amp * (1 - np.cos(x[:, None] + s)) / (2 * nu) + s**2 / (4 * nu * t)
        w = np.exp(-(g - g.min(axis=1, keepdims=True)))
        out[i] = np.sum(-s / t * w, axis=1) / np.sum(w, axis=1)
    return out


def burgers_observation(rng_key, params=None):
    """A noisy observation ``(T, P)`` (float32) of the exact solution (:func:`burgers_exact`) at the
    models' times and points: ``N(0, BURGERS_NOISE^2)`` noise drawn with ``rng_key``;
    ``params`` ``(nu, amp)`` default to :data:`BURGERS_TRUE`.
    """
    if params is None:
        params = (BURGERS_TRUE["nu"], BURGERS_TRUE["amp"])
    u = burgers_exact(params)
    noise = np.asarray(jax.random.normal(rng_key, u.shape), np.float64)
    return np.asarray(u + BURGERS_NOISE * noise, np.float32)


def _burgers(grid, y):
    nu = numpyro.sample("nu", dist.LogNormal(np.log(0.07), 0.4))
    amp = numpyro.sample("amp", dist.LogNormal(0.0, 0.2))
    u = burgers_solution((nu, amp), n=grid["n"], dt=grid["dt"])
    numpyro.sample("y", dist.Normal(u, BURGERS_NOISE).to_event(2), obs=y)


def burgers_low(y=None):
    """Viscous Burgers parameter estimation, low fidelity: 20 grid points, ``dt = 0.1``.

    Prior (independent): ``nu ~ LogNormal(log 0.07, 0.4)`` (viscosity),
    ``amp ~ LogNormal(0, 0.2)`` (amplitude of ``u(x, 0) = amp sin(x)``).
    ``y`` (4, 8) is ``u`` at ``t = 0.5, 1, 1.5, 2`` and the 8 points
    :data:`BURGERS_POINTS` plus ``N(0, 0.05^2)`` noise. The coarse grid (wavenumbers
    up to 6) cannot resolve the front at ``x = pi``: at the true parameters
    ``(0.05, 1)`` its solution is off by up to 0.20 (four noise sds), and for
    ``burgers_observation(PRNGKey(2))`` its posterior of ``log nu`` lies 3.3
    posterior sds above that of :func:`burgers_high` (``log amp``: 1.9 sds).
    """
    _burgers(BURGERS_LOW_GRID, y)


def burgers_high(y=None):
    """Viscous Burgers, high fidelity: 128 grid points, ``dt = 0.01``.

    Same prior, observation times, points and noise as :func:`burgers_low`.
    """
    _burgers(BURGERS_HIGH_GRID, y)


def _grid_logp(model, y, lo, hi, num):
    """Log joint on cell centres of a grid uniform in ``(log nu, log amp)``."""
    axes = [lo[i] + (hi[i] - lo[i]) * (np.arange(num[i]) + 0.5) / num[i] for i in range(2)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    y = jnp.asarray(y)

    def logp(u):  # unconstrained = log: the log joint in log coordinates (Jacobian included)
        return -potential_energy(model, (), {"y": y}, {"nu": u[0], "amp": u[1]})

    lp = jax.jit(lambda p: jax.lax.map(logp, p, batch_size=512))(jnp.asarray(pts))
    return axes, np.asarray(lp, np.float64).reshape(num)


def burgers_grid_posterior(
    y,
    model=None,
    num=(100, 100),
    bounds=((0.01, 0.5), (0.4, 2.5)),
    tol=1e-9,
):
    """Posterior of ``(nu, amp)`` on a grid, by direct evaluation of the model's log joint.

    Cells are equally spaced in ``(log nu, log amp)``. A first pass over ``bounds``
    finds the cells whose density is above ``tol`` times the largest; a second grid of
    the same size spans them (plus one and a half coarse cells on each side).
    ``2 * num[0] * num[1]`` solves of ``model``: an exact reference for the
    two-parameter Burgers models.

    Args:
        y: observation ``(T, P)``.
        model: :func:`burgers_high` (default) or :func:`burgers_low`, or any model with
            the latent sites ``nu`` and ``amp`` on the positive reals and observed site ``y``.
        num: cells per axis; bounds: ``((nu_lo, nu_hi), (amp_lo, amp_hi))`` of the first pass.
        tol: relative density below which first-pass cells are left out of the second.

    Returns:
        dict with ``log_nu`` ``(num[0],)`` and ``log_amp`` ``(num[1],)`` (cell centres,
        equally spaced) and ``prob`` ``(num[0], num[1])`` (posterior mass per cell, sums to 1).
    """
    model = burgers_high if model is None else model
    lo, hi = np.log(np.asarray(bounds, np.float64)).T
    axes, lp = _grid_logp(model, y, lo, hi, num)
    keep = np.nonzero(lp - lp.max() > np.log(tol))
    step = (hi - lo) / np.asarray(num)
    lo2 = np.maximum(lo, [axes[i][keep[i]].min() - 1.5 * step[i] for i in range(2)])
    hi2 = np.minimum(hi, [axes[i][keep[i]].max() + 1.5 * step[i] for i in range(2)])
    axes, lp = _grid_logp(model, y, lo2, hi2, num)
    prob = np.exp(lp - lp.max())
    return {"log_nu": axes[0], "log_amp": axes[1], "prob": prob / prob.sum()}


def burgers_grid_sample(rng_key, post, num_samples):
    """Draws ``{"nu", "amp"}`` (each ``(num_samples,)``) from :func:`burgers_grid_posterior`'s
    output: a cell by its mass, then a uniform point inside it (in log coordinates)."""
    k_cell, k_jit = jax.random.split(rng_key)
    prob = post["prob"]
    cell = np.asarray(jax.random.choice(k_cell, prob.size, (num_samples,), p=prob.reshape(-1)))
    i, j = np.unravel_index(cell, prob.shape)
    u = np.asarray(jax.random.uniform(k_jit, (num_samples, 2)), np.float64) - 0.5
    out = {}
    for d, (name, ax, idx) in enumerate((("nu", post["log_nu"], i), ("amp", post["log_amp"], j))):
        out[name] = np.exp(ax[idx] + u[:, d] * (ax[1] - ax[0]))
    return out
