"""Burgers example: the pseudo-spectral solver against the exact Cole-Hopf solution,
conservation, vmap and gradients, the two models, and one small refinement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_mfdiff.examples import (
    BURGERS_HIGH_GRID,
    BURGERS_LOW_GRID,
    BURGERS_NOISE,
    BURGERS_POINTS,
    BURGERS_TIMES,
    BURGERS_TRUE,
    burgers_exact,
    burgers_interp,
    burgers_solution,
    burgers_spectral,
)

TRUE = (BURGERS_TRUE["nu"], BURGERS_TRUE["amp"])


def test_exact_solution_matches_the_bessel_series():
    """The quadrature form of Cole-Hopf against the Fourier series of the heat equation
    (``phi`` has coefficients ``I_k(amp / (2 nu))``), valid while ``amp / nu`` is moderate."""
    ive = pytest.importorskip("scipy.special").ive
    nu, amp = 0.1, 1.2
    a, k = amp / (2 * nu), np.arange(1, 80)
    t = np.asarray(BURGERS_TIMES)[:, None, None]
    x = np.asarray(BURGERS_POINTS)[None, :, None]
    decay = ive(k, a) * np.exp(-nu * k**2 * t)
    series = (4 * nu * np.sum(k * decay * np.sin(k * x), -1)) / (
        ive(0, a) + 2 * np.sum(decay * np.cos(k * x), -1)
    )
    np.testing.assert_allclose(burgers_exact((nu, amp)), series, atol=1e-9)
    np.testing.assert_allclose(burgers_exact((nu, amp), times=(0.0,)), amp * np.sin(x[..., 0]))


def test_fine_solver_matches_exact_and_coarse_is_biased():
    exact = burgers_exact(TRUE)
    hi = np.asarray(burgers_solution(TRUE, **BURGERS_HIGH_GRID))
    lo = np.asarray(burgers_solution(TRUE, **BURGERS_LOW_GRID))
    assert hi.shape == lo.shape == (len(BURGERS_TIMES), len(BURGERS_POINTS))
    # measured 4.8e-4: a hundredth of the noise sd
    assert np.abs(hi - exact).max() < 0.02 * BURGERS_NOISE
    # measured 0.20: the 20-point grid misses the front by four noise sds
    assert 2 * BURGERS_NOISE < np.abs(lo - exact).max() < 10 * BURGERS_NOISE
    # a much finer run: float32 rounding level (measured 4e-6)
    fine = np.asarray(burgers_solution(TRUE, n=256, dt=0.005))
    assert np.abs(fine - exact).max() < 2e-5


def test_spectral_convergence_in_the_grid_size():
    """At a fixed small step the error falls geometrically with the grid size: the
    reduction per doubling grows (algebraic convergence would keep it constant)."""
    params = (0.1, 1.0)
    exact = burgers_exact(params)
    err = [
        np.abs(np.asarray(burgers_solution(params, n=n, dt=0.01)) - exact).max()
        for n in (24, 48, 96)
    ]
    # measured 3.1e-2, 1.4e-3, 4.9e-6: reductions 22 and 286
    assert err[0] > err[1] > err[2]
    assert err[1] / err[2] > 5 * err[0] / err[1]
    assert err[2] < 2e-5


def test_mean_conserved_energy_decays_and_galilean_shift():
    """A general initial field with mean ``c``: the mean stays ``c``, the energy of the
    fluctuation decays, and the solution is the zero-mean one carried along at speed ``c``
    (Galilean invariance of Burgers' equation)."""
    n, nu, c = 64, 0.1, 0.3
    x = 2 * np.pi * np.arange(n) / n
    wave = np.sin(x) + 0.5 * np.cos(2 * x + 0.4)
    times = (0.0, 0.5, 1.0, 1.5)
    moving = burgers_spectral(jnp.asarray(c + wave, jnp.float32), nu, times, dt=0.01)
    still = burgers_spectral(jnp.asarray(wave, jnp.float32), nu, times, dt=0.01)
    mean = np.real(np.asarray(moving[:, 0])) / n
    np.testing.assert_allclose(mean, c, atol=1e-6)
    energy = np.sum(np.abs(np.asarray(still[:, 1:])) ** 2, axis=1)
    assert np.all(np.diff(energy) < 0)
    pts = np.linspace(0.1, 6.0, 9)
    for i, t in enumerate(times):
        a = burgers_interp(moving[i], pts, n)
        b = c + burgers_interp(still[i], pts - c * t, n)
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_solution_vmaps_and_gradient_matches_finite_differences():
    params = jnp.array([TRUE, (0.08, 0.9), (0.03, 1.3)], jnp.float32)
    for grid in (BURGERS_LOW_GRID, BURGERS_HIGH_GRID):
        batch = jax.jit(jax.vmap(lambda p, g=grid: burgers_solution((p[0], p[1]), **g)))(params)
        assert batch.shape == (3, len(BURGERS_TIMES), len(BURGERS_POINTS))
        single = burgers_solution((params[2, 0], params[2, 1]), **grid)
        np.testing.assert_allclose(batch[2], single, atol=1e-5)

    def loss(p):
        u = burgers_solution((p[0], p[1]), **BURGERS_HIGH_GRID)
        return jnp.sum(u * jnp.asarray(burgers_exact(TRUE), jnp.float32))

    p0 = params[1]
    grad = np.asarray(jax.jit(jax.grad(loss))(p0))
    f = jax.jit(loss)
    h = np.array([1e-3, 1e-2])
    fd = [(f(p0.at[i].add(h[i])) - f(p0.at[i].add(-h[i]))) / (2 * h[i]) for i in range(2)]
    np.testing.assert_allclose(grad, np.asarray(fd), rtol=2e-2)


def test_bad_grids_and_times_are_value_errors():
    with pytest.raises(ValueError, match="multiple of dt"):
        burgers_solution(TRUE, times=(0.55,), dt=0.1)
    with pytest.raises(ValueError, match="even length"):
        burgers_spectral(jnp.zeros(21), 0.1, (0.5,), 0.1)
    with pytest.raises(ValueError, match="dt must be positive"):
        burgers_solution(TRUE, dt=0.0)
    with pytest.raises(ValueError, match="nu must be positive"):
        burgers_exact((0.0, 1.0))
