"""Every fast path of the Monte Carlo score against the plain reference, at fixed keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_mfdiff import LinearSchedule, denoise, geometric_grid, solve_ode
from numpyro_mfdiff._ode import AUTO_BLOCK_WEIGHTS, auto_block_size
from numpyro_mfdiff._score import denoise_blocked, denoise_fused, fuse_points


def _problem(d, b=16, k=300, seed=0):
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    x = jax.random.normal(k1, (b, d))
    pts = jax.random.normal(k2, (k, d))
    ll = -5.0 * jax.random.uniform(k3, (k,))
    ll_rows = -5.0 * jax.random.uniform(k4, (b, k))
    # excluded points, including every point of the last block of 64 in the blocked runs
    ll = ll.at[jnp.array([0, 7])].set(-jnp.inf).at[256:].set(-jnp.inf)
    ll_rows = ll_rows.at[:, 3].set(-jnp.inf).at[2, 256:].set(-jnp.inf)
    return x, pts, ll, ll_rows


@pytest.mark.parametrize("d", [1, 4])
@pytest.mark.parametrize("t", [0.9, 0.3, 0.01])
def test_fused_and_blocked_denoiser_match_plain(d, t):
    """Tolerance: float32 rounding of logits of size ~alpha |x| |theta| / beta^2
    (about 1e3 at t = 0.01), hence 1e-4 absolute."""
    x, pts, ll, ll_rows = _problem(d)
    s = LinearSchedule()
    a, b = float(s.alpha(t)), float(s.beta(t))
    for w in (ll, ll_rows):
        ref = denoise(x, a, b, pts, w)
        np.testing.assert_allclose(denoise_fused(x, a, b, *fuse_points(pts, w)), ref, atol=1e-4)
        for block in (64, 100, 1000):  # padding, uneven, one block larger than K
            out = denoise_blocked(x, a, b, pts, w, block)
            np.testing.assert_allclose(out, ref, atol=1e-4)
    # huge log-likelihoods lose no precision: they are shifted by their maximum first
    # (``big + 1e4`` is exact in float32, so both see the same rounded log-likelihoods)
    big = ll - 1e4
    ref = denoise(x, a, b, pts, big + 1e4)
    np.testing.assert_allclose(denoise_blocked(x, a, b, pts, big, 64), ref, atol=1e-4)


def test_fuse_points_shapes():
    x, pts, ll, ll_rows = _problem(3)
    kern, vals, rows = fuse_points(pts, ll)
    assert kern.shape == (300, 5) and vals.shape == (300, 4) and rows is None
    kern, vals, rows = fuse_points(pts, ll_rows, 128)
    assert kern.shape == (3, 128, 4) and vals.shape == (3, 128, 4) and rows.shape == (3, 16, 128)
    # padded points carry no weight: their value rows are zero
    np.testing.assert_array_equal(vals[2, 300 - 256 :], 0.0)


@pytest.mark.parametrize("solver", ["ddim", "dpm2m"])
def test_solve_ode_fast_paths_match_plain(solver):
    """The fused one-block and blocked ODE solves against the plain denoiser, shared and
    per-row log-likelihoods; the ODE amplifies float32 rounding a little: 5e-4."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(5), 3)
    pts = jax.random.normal(k1, (2000, 2))
    ll = -0.5 * jnp.sum((pts - 0.5) ** 2, -1) / 0.3
    ll_rows = ll[None] - 0.5 * jax.random.normal(k3, (64, 1)) * pts[None, :, 0]
    z = jax.random.normal(k2, (64, 2))
    grid, sched = geometric_grid(40), LinearSchedule()
    for w in (ll, ll_rows):
        ref = solve_ode(z, pts, w, sched, grid, solver, fused=False)
        for block in (None, 256, 700):
            out = solve_ode(z, pts, w, sched, grid, solver, block_size=block)
            np.testing.assert_allclose(out, ref, atol=5e-4)


def test_auto_block_size():
    assert auto_block_size(256, AUTO_BLOCK_WEIGHTS // 256) is None
    bs = auto_block_size(256, 100_000)
    assert bs % 256 == 0 and bs * 256 <= AUTO_BLOCK_WEIGHTS
    assert auto_block_size(10**6, 10**6) == 256
