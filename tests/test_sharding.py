"""The Monte Carlo score sharded over two (forced) CPU devices equals the single-device result.

``XLA_FLAGS`` must be set before JAX initialises, so the check runs in a subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import json
    import jax
    import jax.numpy as jnp
    import numpy as np
    from numpyro_mfdiff import LinearSchedule, geometric_grid
    from numpyro_mfdiff.diffusion._label import label_triples
    from numpyro_mfdiff.diffusion._ode import row_sharding, sample_pruned, solve_ode, solve_ode_jit

    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    pts = jax.random.normal(k1, (1500, 2))
    y = np.asarray(jax.random.normal(k2, (200, 2)))
    z = np.asarray(jax.random.normal(k3, (200, 2)))
    sched, grid = LinearSchedule(), geometric_grid(20)

    def loglik_fn(yi):
        return -0.5 * jnp.sum((yi - pts) ** 2, -1) / 0.2**2

    sh = row_sharding()
    res = dict(devices=len(jax.devices()), sharded=sh is not None)
    # one compiled ODE solve with the rows split over the devices
    ll = loglik_fn(jnp.asarray(y[0]))
    out = solve_ode_jit(jax.device_put(jnp.asarray(z), sh), pts, ll, sched, grid, "dpm2m")
    ref = solve_ode(jnp.asarray(z), pts, ll, sched, grid, "dpm2m")
    res["out_devices"] = len(out.sharding.device_set)
    res["ode"] = float(np.abs(np.asarray(out) - np.asarray(ref)).max())
    # labelling (pruned, bucketed) and sample_ode's batches
    args = (y, y, z, loglik_fn, pts, sched, grid, 1500, "dpm2m", 64)
    _, th_sh, d_sh, _ = label_triples(*args, tol=1e-6, sharding=sh)
    _, th, d, _ = label_triples(*args, tol=1e-6, sharding=None)
    res["label"] = float(np.abs(th_sh - th).max())
    res["dropped"] = float(np.abs(d_sh - d).max())
    u, _, _ = sample_pruned(jnp.asarray(z[:150]), pts, np.asarray(ll), sched, grid, "dpm2m", 1e-6)
    res["sample"] = float(np.abs(np.asarray(u) - np.asarray(ref[:150])).max())
    print(json.dumps(res))

    """
)


def _two_devices():
    """This session's XLA flags (tests/conftest.py's compile settings) and two CPU devices."""
    return f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()


def test_two_devices_match_one():
    """Tolerance 1e-5: each row's arithmetic is the same on either device (float32)."""
    env = dict(os.environ, XLA_FLAGS=_two_devices())
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["devices"] == 2 and res["sharded"] and res["out_devices"] == 2
    for name in ("ode", "label", "dropped", "sample"):
        assert res[name] <= 1e-5, (name, res)


MFDIFF_CHILD = textwrap.dedent(
    """
    import sys
    import jax
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from models import TINY, linear_gaussian
    from numpyro_mfdiff import MFDiff
    from numpyro_mfdiff.diffusion._ode import row_sharding

    inf = MFDiff(linear_gaussian, 1000, **TINY).run(jax.random.PRNGKey(0))
    x = {"x": np.array([0.8, -0.4, 1.1, 0.3])}
    ode = inf.sample_ode(jax.random.PRNGKey(1), x, 600)
    gen = inf.get_samples(jax.random.PRNGKey(2), x, 600)
    np.savez(
        sys.argv[1], devices=len(jax.devices()), sharded=row_sharding() is not None,
        triples=inf.triples["theta"],
        ode=ode["b"], gen=gen["b"],
    )
    """
)


@pytest.mark.cheap  # compile-bound: 99 -> 38 s on one loaded core
@pytest.mark.slow  # two small builds, one in a subprocess with two devices
def test_mfdiff_on_two_devices_matches_one(tmp_path):
    """``MFDiff.run``, ``sample_ode`` and ``get_samples`` with the rows sharded over two
    (forced) CPU devices give this process's single-device results: labels and ODE
    draws to 1e-5 (same arithmetic per row), the generator's draws to 1e-3 (trained on
    those labels)."""
    import jax
    import numpy as np
    from models import TINY, linear_gaussian

    from numpyro_mfdiff import MFDiff

    assert len(jax.devices()) == 1
    out = tmp_path / "two.npz"
    env = dict(os.environ, XLA_FLAGS=_two_devices())
    env["JAX_PLATFORMS"] = "cpu"
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run(
        [sys.executable, "-c", MFDIFF_CHILD, str(out), here],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = np.load(out)
    assert int(two["devices"]) == 2 and bool(two["sharded"])  # labels and draws sharded
    inf = MFDiff(linear_gaussian, 1000, **TINY).run(jax.random.PRNGKey(0))
    x = {"x": np.array([0.8, -0.4, 1.1, 0.3])}
    np.testing.assert_allclose(two["triples"], inf.triples["theta"], atol=1e-5)
    ode = inf.sample_ode(jax.random.PRNGKey(1), x, 600)["b"]
    np.testing.assert_allclose(two["ode"], ode, atol=1e-5)
    gen = inf.get_samples(jax.random.PRNGKey(2), x, 600)["b"]
    np.testing.assert_allclose(two["gen"], gen, atol=1e-3)
