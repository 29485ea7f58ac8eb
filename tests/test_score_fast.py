"""Every fast path of the Monte Carlo score against the plain reference, at fixed keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_mfdiff import LinearSchedule, denoise, geometric_grid, solve_ode
from numpyro_mfdiff.diffusion._label import bucket, label_triples
from numpyro_mfdiff.diffusion._ode import AUTO_BLOCK_WEIGHTS, auto_block_size
from numpyro_mfdiff.diffusion._score import (
    denoise_blocked,
    denoise_fused,
    dropped_mass,
    fuse_points,
    support_order,
)


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
    assert kern.shape == (3, 128, 4) and vals.shape == (3, 128, 4) and rows.shape == (16, 384)
    # padded points carry no weight: their value rows are zero
    np.testing.assert_array_equal(vals[2, 300 - 256 :], 0.0)


@pytest.mark.parametrize("solver", ["ddim", "dpm2m", "dpm3m"])
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
    for b, k in ((256, 100_000), (256, 6656), (4096, 20_000), (10**6, 10**6)):
        bs = auto_block_size(b, k)
        nb = -(-k // bs)
        assert bs % 8 == 0 and nb * bs - k < 8 * nb  # even blocks, little padding
        assert b * bs <= max(AUTO_BLOCK_WEIGHTS, 264 * b)


def test_support_order_drops_at_most_tol():
    """Points below every row's threshold hold < tol of each row's mass, exactly."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(6))
    pts = jax.random.normal(k1, (5000,))
    centres = jnp.linspace(-1.0, 1.0, 8)[:, None]
    ll = -0.5 * ((pts[None] - centres) / 0.2) ** 2 + jax.random.normal(k2, (8, 1)) * 100
    for tol in (1e-2, 1e-6):
        order, count = support_order(ll, tol)
        count = int(count)
        assert 0 < count < 5000  # something is dropped, something kept
        d = np.asarray(dropped_mass(ll, ll[:, order[:count]]))
        assert np.all(d <= tol) and np.all(d >= 0)
        # the kept points are exactly those above the threshold in some row
        thr = jax.nn.logsumexp(ll, axis=1, keepdims=True) + np.log(tol / 5000)
        above = np.flatnonzero(np.any(np.asarray(ll) >= np.asarray(thr), axis=0))
        assert set(np.asarray(order[:count]).tolist()) == set(above.tolist())


def test_bucket_sizes():
    sizes = {bucket(c, 10**6) for c in range(1, 70_000, 7)}
    assert len(sizes) < 25  # few compiled solves
    for c in (1, 511, 512, 513, 7000, 65_536):
        b = bucket(c, 10**6)
        assert c <= b <= max(512, 1.25 * c + 512) and b % 512 == 0
    assert bucket(7000, 5000) == 5000


def test_pruned_labelling_matches_unpruned():
    """Labels with the exact likelihood pruning against all N points weighed:
    within 2e-3 (the pruned weight is below tol = 1e-6; the rest is float32 rounding
    of different summation orders), the dropped mass below tol, and fewer points."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(7), 3)
    n = 4000
    pts = jax.random.normal(k1, (n, 1))
    y = np.asarray(jax.random.normal(k2, (300, 1))) * 0.8
    z = np.asarray(jax.random.normal(k3, (300, 1)))

    def loglik_fn(yi):
        return -0.5 * ((yi[0] - pts[:, 0]) / 0.05) ** 2

    args = (loglik_fn, pts, LinearSchedule(), geometric_grid(30), n, "dpm2m", 64)
    o_full, th_full, d_full, used_full = label_triples(y, y, z, *args, tol=None)
    o, th, d, used = label_triples(y, y, z, *args, tol=1e-6)
    np.testing.assert_array_equal(o, o_full)
    np.testing.assert_allclose(d_full, 0.0, atol=1e-6)
    assert np.all(d <= 1e-6)
    assert used.mean() < 0.7 * n
    np.testing.assert_allclose(th, th_full, atol=2e-3)


def test_labelling_warns_when_the_cap_drops_mass():
    """A point cap below the support drops real mass: measured, and a warning names it."""
    pts = jnp.linspace(-2.0, 2.0, 2000)[:, None]
    y = np.zeros((8, 1), np.float32)
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(8), (8, 1)))

    def loglik_fn(yi):
        return -0.5 * ((yi[0] - pts[:, 0]) / 0.5) ** 2

    with pytest.warns(UserWarning, match="label_points"):
        _, _, d, used = label_triples(
            y, y, z, loglik_fn, pts, LinearSchedule(), geometric_grid(5), 100, "dpm2m", 8, tol=1e-6
        )
    assert np.all(used == 100) and np.all(d > 0.01)


def _dot_precisions(fn, *args):
    """The precision of every dot_general in ``fn``'s jaxpr, sub-jaxprs (scan) included."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                found.append(eqn.params["precision"])
            for sub in jax.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("per_row", [True, False])
def test_denoiser_matmuls_ask_for_full_float32(fused, per_row):
    """On a GPU the default float32 matmul is TF32 (10-bit mantissa): measured on
    an H200, an ODE solve with it moved outputs by 1.2 standardised units (the
    logits scale as alpha / beta^2). Every matmul of every denoiser path must ask
    for HIGHEST precision, which the CPU computes anyway."""
    x, pts, ll, ll_rows = _problem(2, k=2048)
    grid = geometric_grid(3)
    w = ll_rows if per_row else ll
    precisions = _dot_precisions(
        lambda z: solve_ode(
            z, pts, w, LinearSchedule(), grid, "dpm2m", block_size=512, fused=fused
        ),
        x,
    )
    assert precisions, "no matmul found"
    high = jax.lax.Precision.HIGHEST
    assert all(p == (high, high) for p in precisions), precisions
