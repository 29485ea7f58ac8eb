"""Lorenz 63 example: coarse and adaptive solvers, shapes, vmap and gradients."""

import diffrax  # noqa: F401  (a declared test dependency: missing, the file fails)
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers

from numpyro_mfdiff.examples import (
    LORENZ_TIMES,
    LORENZ_TRUE,
    lorenz63_diffrax,
    lorenz63_high,
    lorenz63_low,
    lorenz63_rk4,
)

TRUE = tuple(LORENZ_TRUE[k] for k in ("sigma", "rho", "beta"))


@pytest.fixture(scope="module")
def reference():
    """RK4 with a step 150x finer than the coarse one (error < 1e-4 at t <= 1.5)."""
    return np.asarray(lorenz63_rk4(TRUE, dt=0.0005))


def test_high_fidelity_matches_fine_rk4_and_coarse_does_not(reference):
    hi = np.asarray(lorenz63_diffrax(TRUE))
    lo = np.asarray(lorenz63_rk4(TRUE))
    assert hi.shape == lo.shape == (len(LORENZ_TIMES), 3)
    assert np.abs(hi - reference).max() < 1e-3
    # the coarse step is biased by about one noise sd (1.0), far beyond the fine solve's error
    assert 0.5 < np.abs(lo - reference).max() < 3.0


def test_models_agree_in_sites_and_shapes():
    traces = [
        handlers.trace(handlers.seed(m, rng_seed=0)).get_trace()
        for m in (lorenz63_low, lorenz63_high)
    ]
    for name in ("sigma", "rho", "beta", "y"):
        assert traces[0][name]["value"].shape == traces[1][name]["value"].shape, name
    assert traces[0]["y"]["value"].shape == (len(LORENZ_TIMES), 3)


def test_solvers_vmap_and_grad(reference):
    params = jnp.array([TRUE, (9.0, 27.0, 2.5), (11.0, 29.0, 3.0)])
    grads = []
    for solve in (lorenz63_rk4, lorenz63_diffrax):
        batch = jax.jit(jax.vmap(lambda p, solve=solve: solve(tuple(p))))(params)
        assert batch.shape == (3, len(LORENZ_TIMES), 3)
        np.testing.assert_allclose(batch[1], solve(tuple(params[1])), rtol=1e-4, atol=1e-3)
        loss = jax.jit(jax.grad(lambda p, solve=solve: jnp.sum(solve(tuple(p))[:, 2])))
        grads.append(np.asarray(loss(params[0])))
        assert np.all(np.isfinite(grads[-1]))
    # the adaptive solve's gradient matches central finite differences of the solve itself
    f = jax.jit(lambda p: jnp.sum(lorenz63_diffrax(tuple(p))[:, 2]))
    h = 1e-2
    fd = [(f(params[0].at[i].add(h)) - f(params[0].at[i].add(-h))) / (2 * h) for i in range(3)]
    np.testing.assert_allclose(grads[1], np.asarray(fd), rtol=0.05, atol=0.05)


def test_failed_solve_is_inf_not_an_error():
    out = lorenz63_diffrax((10.0, 1e6, 8.0 / 3.0))  # stiff beyond 4096 steps
    assert out.shape == (len(LORENZ_TIMES), 3)
    assert not np.all(np.isfinite(np.asarray(out)))


def test_rk4_rejects_times_off_the_grid():
    with pytest.raises(ValueError, match="multiple of dt"):
        lorenz63_rk4(TRUE, times=(0.31,))
