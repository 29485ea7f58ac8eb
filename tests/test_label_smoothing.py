"""Smoothed labels: per-row early stopping of the ODE, the kernel rule, the shrinkage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_mfdiff import LinearSchedule, geometric_grid, solve_ode
from numpyro_mfdiff.diffusion._label import label_chunk, smoothing_stops
from numpyro_mfdiff.diffusion._ode import stop_ratios
from numpyro_mfdiff.refine._kde import SMOOTH_CAP
from numpyro_mfdiff.refine._weights import row_moments

SCHED, GRID = LinearSchedule(), geometric_grid(60)


def _points(key=0, n=3000):
    return jax.random.normal(jax.random.PRNGKey(key), (n, 3)) * jnp.array([1.0, 0.5, 2.0])


def _gauss_rows(pts, centres, sd):
    return jnp.stack([-0.5 * jnp.sum((pts - c) ** 2, 1) / sd**2 for c in centres])


@pytest.mark.parametrize("solver", ["ddim", "dpm2m", "dpm3m"])
def test_stop_returns_the_state_of_a_shorter_grid(solver):
    """A row stopped at grid point k equals the ODE on the grid cut at k, ending in
    its state; rows with stop 0 are the plain (denoised) solve."""
    pts = _points()
    ll = _gauss_rows(pts, [0.3, -0.2, 0.0], 0.5)
    z = jax.random.normal(jax.random.PRNGKey(1), (3, 3))
    ratios = SCHED.beta(GRID) / SCHED.alpha(GRID)
    k = 45
    stop = jnp.array([0.0, ratios[k] * (1 - 1e-5), ratios[k] * (1 - 1e-5)])
    out = solve_ode(z, pts, ll, SCHED, GRID, solver, stop=stop)
    plain = solve_ode(z, pts, ll, SCHED, GRID, solver)
    cut = solve_ode(z, pts, ll, SCHED, GRID[: k + 1], solver, denoise_last=False)
    np.testing.assert_allclose(out[0], plain[0], rtol=1e-6)
    np.testing.assert_allclose(out[1:], cut[1:], rtol=1e-4, atol=1e-5)
    assert not np.allclose(out[1:], plain[1:], atol=1e-3)
    np.testing.assert_allclose(stop_ratios(SCHED, GRID, stop), [0.0, ratios[k], ratios[k]])


def test_kernel_rule_smooths_one_mode_and_spares_modes_and_spikes():
    pts = _points(n=6000)
    one = -0.5 * jnp.sum((pts - 0.3) ** 2, 1) / 0.5**2
    two = -0.5 * (jnp.abs(pts[:, 0]) - 1.0) ** 2 / 0.1**2  # modes at +-1 in the first axis
    r2 = jnp.sum(pts[:, :2] ** 2, 1)  # half the mass in a spike of sd 0.1, half in sd 0.6
    spike = jnp.logaddexp(
        -0.5 * r2 / 0.1**2 - 2 * jnp.log(0.1), -0.5 * r2 / 0.6**2 - 2 * jnp.log(0.6)
    )
    ll = jnp.stack([one, two, spike])
    stop, (_, lam, _, n_e) = smoothing_stops(ll, pts)
    silverman = min((4.0 / (float(n_e[0]) * 5)) ** (1 / 7), SMOOTH_CAP)
    assert float(stop[0]) == pytest.approx(silverman * float(np.sqrt(lam[0, 0])), rel=1e-4)
    assert 0.05 < float(stop[0]) < 0.5
    assert float(stop[1]) == 0.0 and float(stop[2]) == 0.0


@pytest.mark.slow  # a statistical check: 47 s of the default suite under load
def test_smoothed_labels_keep_the_weighted_moments_and_are_not_the_points():
    """A row's smoothed labels have the weighted mean (0.05 sd: 4 Monte Carlo errors of 8,000
    draws) and sd (3%), where the kernel
    without the shrinkage would widen the narrowest axis by ``sqrt(1 + f^2)``
    (~8% here); and they are not the prior points themselves (unsmoothed: at most
    as many distinct values as weighted points)."""
    pts = _points(n=4000)
    ll1 = _gauss_rows(pts, [0.3], 0.4)
    mean, lam, vec, n_e = row_moments(ll1, pts)
    sd = np.sqrt(np.diag((vec[0] * lam[0]) @ vec[0].T))
    z = jax.random.normal(jax.random.PRNGKey(2), (8000, 3))
    ll = jnp.repeat(ll1, z.shape[0], 0)
    smooth, _ = label_chunk(z, ll, pts, SCHED, GRID, 10**6, smooth=True)
    plain, _ = label_chunk(z, ll, pts, SCHED, GRID, 10**6, smooth=False)
    f = float(smoothing_stops(ll1, pts)[0][0]) / float(np.sqrt(lam[0, 0]))
    assert np.sqrt(1 + f**2) > 1.06  # what the missing shrinkage would cost
    np.testing.assert_allclose(np.asarray(smooth).mean(0), mean[0], atol=0.05 * sd.min())
    np.testing.assert_allclose(np.asarray(smooth).std(0), sd, rtol=0.03)
    np.testing.assert_allclose(np.asarray(plain).std(0), sd, rtol=0.05)
    distinct = lambda a: np.unique(np.round(np.asarray(a)[:, 0], 5)).size  # noqa: E731
    assert distinct(plain) < 0.5 * z.shape[0] < distinct(smooth)
