"""Burgers example: the pseudo-spectral solver against the exact Cole-Hopf solution,
conservation, vmap and gradients, the two models, and one small refinement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models import SMALL, assert_wrong_answers_fail, moment_errors, moments_agree
from numpyro import handlers

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.examples import (
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

TRUE = (BURGERS_TRUE["nu"], BURGERS_TRUE["amp"])


def test_exact_solution_matches_the_bessel_series():
    """The quadrature form of Cole-Hopf against the Fourier series of the heat equation
    (``phi`` has coefficients ``I_k(amp / (2 nu))``), valid while ``amp / nu`` is moderate."""
    from scipy.special import ive

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


# ----------------------------------------------------------------------------- models


def test_models_agree_in_sites_and_shapes():
    traces = [
        handlers.trace(handlers.seed(m, rng_seed=0)).get_trace()
        for m in (burgers_low, burgers_high)
    ]
    for name in ("nu", "amp", "y"):
        assert traces[0][name]["value"].shape == traces[1][name]["value"].shape, name
    assert traces[0]["y"]["value"].shape == (len(BURGERS_TIMES), len(BURGERS_POINTS))
    assert traces[0]["y"]["fn"].event_shape == (len(BURGERS_TIMES), len(BURGERS_POINTS))
    y = burgers_observation(jax.random.PRNGKey(2))
    assert y.shape == (len(BURGERS_TIMES), len(BURGERS_POINTS)) and y.dtype == np.float32


@pytest.fixture(scope="module")
def observation():
    return {"y": burgers_observation(jax.random.PRNGKey(2))}


@pytest.fixture(scope="module")
def reference(observation):
    """Grid posterior of the high-fidelity model: means and sds of (log nu, log amp)."""
    post = burgers_grid_posterior(observation["y"], num=(40, 40))
    x = _log_params(burgers_grid_sample(jax.random.PRNGKey(9), post, 20_000))
    return x.mean(0), x.std(0), x


def _log_params(s):
    return np.log(np.stack([np.asarray(s["nu"]), np.asarray(s["amp"])], axis=1))


def test_grid_posterior_low_is_biased_and_moments_are_resolved(observation, reference):
    mean, sd, _ = reference
    # 40 x 40 and 100 x 100 cells gave the same moments to 1e-5: the grid resolves the posterior
    np.testing.assert_allclose(mean, [-3.0347, -0.0078], atol=3e-3)
    np.testing.assert_allclose(sd, [0.1319, 0.0196], rtol=0.03)
    # the truth lies inside (0.3 and 0.4 sd away)
    assert np.all(np.abs(np.log([TRUE]) - mean) < 2 * sd)
    low = burgers_grid_posterior(observation["y"], model=burgers_low, num=(30, 30))
    low_mean = _log_params(burgers_grid_sample(jax.random.PRNGKey(9), low, 20_000)).mean(0)
    # the coarse model's posterior is off by 3.3 sd in log nu and 1.9 sd in log amp
    assert np.all(np.abs(low_mean - mean) > 1.5 * sd)


@pytest.mark.cheap  # its time goes to compiling (tests/conftest.py)
@pytest.mark.slow  # a statistical check: 55 s of the default suite under load
def test_refinement_moves_the_posterior_to_the_reference(observation, reference):
    """G_low (2,000 coarse solves) is off by about 3 posterior sds; ``refine`` with a
    budget of 600 fine solves and nothing else set (six tempered stages of 100) brings the
    refined ODE and G_high onto the grid posterior of (log nu, log amp): means within
    0.2 sd and sds within a factor 1.2. Measured over build/refine keys (0, 1), (10, 11),
    (20, 21) (draw keys as below): G_low 2.8-3.1 sd off; ODE means 0.010-0.077 sd off,
    sd ratios within exp(0.059) = 1.06; G_high means 0.017-0.080 sd off, sd ratios within
    exp(0.085) = 1.09 (importance ESS 343 at keys (0, 1), 76 before; two explicit rounds
    of 300 without tempering gave means 0.4 and 0.23 sd off). Wrong answers built from
    4,000 grid draws fail the same check: shifted 0.3 sd (0.31 sd: means), sd halved or
    doubled (log ratio 0.7: sds), prior draws (means 2.8 sd off)."""
    mean, sd, exact = reference
    inf = MFDiff(burgers_low, num_simulations=2000, **SMALL)
    inf.run(jax.random.PRNGKey(0))
    low = _log_params(inf.get_samples(jax.random.PRNGKey(2), observation, 2000))
    assert np.abs(low.mean(0) - mean)[0] > 2 * sd[0]  # measured 2.9 sd
    inf.refine(jax.random.PRNGKey(1), observation, model=burgers_high, max_simulations=600)
    (d,) = inf.diagnostics["refinements"].values()
    assert d["num_high_fidelity_simulations"] == 600
    assert d["ess_after"] > 40  # measured 343

    def right(x):
        return moments_agree(x, mean, sd, mean_tol=0.2, sd_factor=1.2)

    for x in (
        _log_params(inf.sample_ode(jax.random.PRNGKey(3), observation, 2000)),
        _log_params(inf.get_samples(jax.random.PRNGKey(4), observation, 2000)),
    ):
        assert right(x), moment_errors(x, mean, sd)
    prior = np.random.default_rng(0).normal(size=(4000, 2)) * [0.4, 0.2] + [np.log(0.07), 0.0]
    assert_wrong_answers_fail(right, exact[:4000], prior)
