"""Failing simulations, external (NumPy) simulators and executors."""

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import sims
from ext_models import SCALAR, ext_quadratic_fail, ext_quadratic_logged, jax_quadratic_fail
from models import assert_same

from numpyro_mfdiff import MFDiff, _model, external_simulator

KEY = jax.random.PRNGKey(0)
P_FAIL = 0.25  # prior mass of theta > 1 under U(-2, 2)


@pytest.fixture(scope="module")
def spec():
    return _model.inspect_model(ext_quadratic_fail)


def test_exceptions_mark_only_their_simulations_failed(spec):
    """The simulator raises on theta > 1: exactly those simulations fail, the rest are kept."""
    n = 400
    ext = _model.simulate(KEY, ext_quadratic_fail, spec, n, chunk_size=128)
    twin = _model.simulate(KEY, jax_quadratic_fail, spec, n, chunk_size=128)
    theta = np.asarray(jax.vmap(spec.constrain)(twin.theta)["theta"])
    # same keys, same prior draws: failed exactly where the simulator raises
    np.testing.assert_array_equal(ext.valid, twin.valid)
    np.testing.assert_array_equal(ext.theta, twin.theta)
    np.testing.assert_allclose(ext.y, twin.y, rtol=1e-6)
    assert np.all(theta[ext.valid] <= sims.FAIL_ABOVE)
    frac = 1.0 - ext.valid.mean()
    se = np.sqrt(P_FAIL * (1 - P_FAIL) / n)
    assert abs(frac - P_FAIL) < 4 * se
    assert 1 <= len(ext.errors) <= 5
    assert all(e.startswith("ValueError: solver diverged at theta=") for e in ext.errors)


def test_mfdiff_reports_failures_and_enforces_the_budget():
    inf = MFDiff(
        ext_quadratic_fail, num_simulations=200, max_failure_fraction=0.5, progress_bar=False
    )
    with pytest.warns(UserWarning, match=r"of 200 prior simulations failed.*solver diverged"):
        inf.simulate(KEY)
    failed = inf.diagnostics["num_failed"]
    assert failed == 200 - inf.simulations.valid.sum() > 0
    assert inf.diagnostics["simulation_errors"][0].startswith("ValueError")
    # the same run with a budget of 10% stops with a message saying how to change it
    strict = MFDiff(
        ext_quadratic_fail,
        num_simulations=200,
        simulation_chunk_size=50,
        max_failure_fraction=0.1,
        progress_bar=False,
    )
    with pytest.raises(RuntimeError, match=r"failed .*max_failure_fraction=0\.1.*solver diverged"):
        strict.simulate(KEY)
    assert strict.simulations is None


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan"), "0.2", True])
def test_max_failure_fraction_is_validated(value):
    with pytest.raises(ValueError, match="max_failure_fraction"):
        MFDiff(ext_quadratic_fail, max_failure_fraction=value)


def test_wrong_output_shape_is_a_failure(spec):
    bad = external_simulator(sims.wrong_shape, SCALAR)

    def model(y=None):
        theta = numpyro.sample("theta", dist.Uniform(-2.0, 2.0))
        numpyro.sample("y", dist.Normal(bad(theta), 0.1), obs=y)

    out = _model.simulate(KEY, model, spec, 8)
    assert not out.valid.any()
    assert "returned shape (2,), expected ()" in out.errors[0]


def test_outside_a_simulation_failures_warn():
    sim = external_simulator(sims.square_or_fail, SCALAR)
    with pytest.warns(UserWarning, match="1 of 3 external simulator calls failed"):
        out = jax.vmap(sim)(jnp.array([0.5, 1.5, -1.0]))
    np.testing.assert_array_equal(np.isnan(out), [False, True, False])
    np.testing.assert_allclose(np.asarray(out)[[0, 2]], [0.25, 1.0])


def test_nested_vmap_and_pytree_outputs():
    def two(a, b):
        return {"sum": np.float32(a + b.sum()), "prod": (a * b).astype(np.float32)}

    like = {"sum": SCALAR, "prod": jax.ShapeDtypeStruct((2,), jnp.float32)}
    sim = external_simulator(two, like)
    a, b = jnp.arange(3.0), jnp.arange(8.0).reshape(4, 2)
    out = jax.jit(jax.vmap(jax.vmap(sim, (0, None)), (None, 0)))(a, b)
    assert out["sum"].shape == (4, 3) and out["prod"].shape == (4, 3, 2)
    np.testing.assert_allclose(out["sum"], b.sum(1)[:, None] + a[None, :])
    np.testing.assert_allclose(out["prod"], a[None, :, None] * b[:, None, :])


def test_external_simulator_rejects_bad_setup():
    with pytest.raises(ValueError, match="floating dtype"):
        external_simulator(sims.square_or_fail, jax.ShapeDtypeStruct((), jnp.int32))
    with pytest.raises(TypeError, match="callable"):
        external_simulator(None, SCALAR)
    with pytest.raises(TypeError, match="Executor"):
        external_simulator(sims.square_or_fail, SCALAR, executor=object())
    with pytest.raises(TypeError, match="Executor"):
        MFDiff(ext_quadratic_fail, executor=object())


def test_no_simulator_calls_for_inspection_or_padding(tmp_path, monkeypatch):
    """Inspecting the model calls nothing; the last short chunk is not padded with calls."""
    log = tmp_path / "calls.txt"
    log.touch()
    monkeypatch.setenv("MFDIFF_TEST_CALL_LOG", str(log))
    spec = _model.inspect_model(ext_quadratic_logged)
    assert log.read_text() == ""
    out = _model.simulate(KEY, ext_quadratic_logged, spec, 10, chunk_size=4)
    assert len(log.read_text().splitlines()) == 10
    assert out.valid.all()


class CountingExecutor:
    """Wraps an executor: counts the calls submitted through it (in this process)."""

    def __init__(self, inner):
        self.inner = inner
        self.submitted = 0

    def submit(self, fn, *args, **kwargs):
        self.submitted += 1
        return self.inner.submit(fn, *args, **kwargs)


class RecordingThreadPool(ThreadPoolExecutor):
    """A thread pool that records the threads its calls ran on."""

    def __init__(self, workers):
        super().__init__(workers)
        self.threads = set()
        self.submitted = 0

    def submit(self, fn, *args, **kwargs):
        self.submitted += 1

        def run():
            self.threads.add(threading.get_ident())
            return fn(*args, **kwargs)

        return super().submit(run)


def test_thread_pool_executor_gives_the_serial_result(spec):
    """Same result as serial, and the calls really ran on the pool: one submit per
    simulation (48, none padded), none on this thread; also through ``MFDiff``."""
    serial = _model.simulate(KEY, ext_quadratic_fail, spec, 48, chunk_size=16)
    with RecordingThreadPool(2) as ex:
        par = _model.simulate(KEY, ext_quadratic_fail, spec, 48, chunk_size=16, executor=ex)
    assert_same(serial, par)
    assert ex.submitted == 48
    assert ex.threads and threading.get_ident() not in ex.threads
    with RecordingThreadPool(2) as ex:
        inf = MFDiff(
            ext_quadratic_fail,
            48,
            simulation_chunk_size=16,
            max_failure_fraction=0.5,
            executor=ex,
            progress_bar=False,
        )
        with pytest.warns(UserWarning, match="of 48 prior simulations failed"):
            inf.simulate(KEY)
    assert ex.submitted == 48
    assert ex.threads and threading.get_ident() not in ex.threads
    # MFDiff draws its own keys from KEY: compared with a serial MFDiff run
    serial_inf = MFDiff(
        ext_quadratic_fail,
        48,
        simulation_chunk_size=16,
        max_failure_fraction=0.5,
        progress_bar=False,
    )
    with pytest.warns(UserWarning, match="of 48 prior simulations failed"):
        serial_inf.simulate(KEY)
    assert_same(serial_inf.simulations, inf.simulations)


def test_process_pool_executor_gives_the_serial_result(tmp_path, monkeypatch):
    log = tmp_path / "calls.txt"
    log.touch()
    monkeypatch.setenv("MFDIFF_TEST_CALL_LOG", str(log))
    spec = _model.inspect_model(ext_quadratic_logged)
    serial = _model.simulate(KEY, ext_quadratic_logged, spec, 24, chunk_size=12)
    log.write_text("")
    # spawn: forking a process that runs JAX threads is unsafe
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as ex:
        inf = MFDiff(
            ext_quadratic_logged, 24, simulation_chunk_size=12, executor=ex, progress_bar=False
        )
        inf.simulate(KEY)
    assert_same(serial, inf.simulations)
    pids = {line.split()[1] for line in log.read_text().splitlines()}
    assert len(log.read_text().splitlines()) == 24
    assert str(os.getpid()) not in pids


@pytest.mark.slow
def test_dask_local_cluster_gives_the_serial_result(tmp_path, monkeypatch):
    """Same result as serial, every call submitted through the Dask executor (40) and
    run in the two worker processes, none in this one."""
    import distributed

    log = tmp_path / "calls.txt"
    log.touch()
    monkeypatch.setenv("MFDIFF_TEST_CALL_LOG", str(log))  # inherited by the workers
    spec = _model.inspect_model(ext_quadratic_logged)
    serial = _model.simulate(KEY, ext_quadratic_logged, spec, 40, chunk_size=20)
    log.write_text("")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        ex = CountingExecutor(client.get_executor())
        par = _model.simulate(KEY, ext_quadratic_logged, spec, 40, chunk_size=20, executor=ex)
        workers = set(client.run(os.getpid).values())
    assert_same(serial, par)
    assert ex.submitted == 40
    lines = log.read_text().splitlines()
    assert len(lines) == 40
    pids = {int(line.split()[1]) for line in lines}
    assert pids <= workers and os.getpid() not in pids
    assert len(workers) == 2 and os.getpid() not in workers
