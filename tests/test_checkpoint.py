"""Chunked prior simulation written to disk: resume after a kill, mismatch detection."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from ext_models import ext_quadratic_fail, ext_quadratic_logged
from models import assert_same

import numpyro_mfdiff
from numpyro_mfdiff import MFDiff, _model

KEY = jax.random.PRNGKey(0)
N, CHUNK = 32, 8


@pytest.fixture
def call_log(tmp_path, monkeypatch):
    """A file that ``sims.logged_square`` appends one line per call to; returns a reader."""
    log = tmp_path / "calls.txt"
    log.touch()
    monkeypatch.setenv("MFDIFF_TEST_CALL_LOG", str(log))

    def calls(reset=False):
        lines = [float(line.split()[0]) for line in log.read_text().splitlines()]
        if reset:
            log.write_text("")
        return np.array(lines, np.float32)

    return calls


@pytest.fixture(scope="module")
def spec():
    return _model.inspect_model(ext_quadratic_logged)


def test_a_shared_batch_simulator_never_pads_external_calls(call_log, spec):
    """A refinement shares one batch simulator between its stages and pads JAX models'
    stages (``pad_to``); an external simulator is called exactly once per simulation,
    also on the second call, whose shape trace JAX has cached (counted from that
    cached trace, the external calls were missed and 54 padding rows called it)."""
    batch = _model.batch_simulator(ext_quadratic_logged, spec)
    theta = np.linspace(-1.0, 1.0, 10, dtype=np.float32)[:, None]
    for _ in range(2):
        sims = _model.simulate(
            KEY, ext_quadratic_logged, spec, 10, theta=theta, batch=batch, pad_to=64
        )
        assert len(call_log(reset=True)) == 10 and sims.y.shape[0] == 10


def test_rerun_loads_finished_chunks_and_runs_only_the_missing_one(tmp_path, call_log, spec):
    ck = tmp_path / "ck"
    full = _model.simulate(KEY, ext_quadratic_logged, spec, N, chunk_size=CHUNK, checkpoint=ck)
    first = call_log(reset=True)
    assert sorted(p.name for p in ck.iterdir()) == [
        "chunk_00000.npz",
        "chunk_00001.npz",
        "chunk_00002.npz",
        "chunk_00003.npz",
        "manifest.json",
    ]
    assert first.size == N
    again = _model.simulate(KEY, ext_quadratic_logged, spec, N, chunk_size=CHUNK, checkpoint=ck)
    assert call_log().size == 0  # everything came from disk
    assert_same(full, again)
    (ck / "chunk_00002.npz").unlink()
    again = _model.simulate(KEY, ext_quadratic_logged, spec, N, chunk_size=CHUNK, checkpoint=ck)
    np.testing.assert_array_equal(call_log(), first[16:24])
    assert_same(full, again)


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(key=jax.random.PRNGKey(1)), "key"),
        (dict(num=N + 8), "num"),
        (dict(chunk_size=CHUNK * 2), "chunk_size"),
        (dict(model=ext_quadratic_fail), "model"),
        (dict(kwargs={"y": None}), "model_args"),
    ],
)
def test_mismatched_checkpoint_is_an_error(tmp_path, call_log, spec, change, field):
    ck = tmp_path / "ck"
    base = dict(key=KEY, model=ext_quadratic_logged, spec=spec, num=N, chunk_size=CHUNK)
    _model.simulate(**base, checkpoint=ck)
    call_log(reset=True)
    with pytest.raises(ValueError, match=f"written for a different run: {field} is"):
        _model.simulate(**{**base, **change}, checkpoint=ck)
    assert call_log().size == 0  # the error comes before any simulation


def test_corrupted_chunk_is_an_error(tmp_path, call_log, spec):
    ck = tmp_path / "ck"
    _model.simulate(KEY, ext_quadratic_logged, spec, N, chunk_size=CHUNK, checkpoint=ck)
    path = ck / "chunk_00001.npz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="chunk_00001.npz is unreadable.*delete it"):
        _model.simulate(KEY, ext_quadratic_logged, spec, N, chunk_size=CHUNK, checkpoint=ck)


def test_failure_budget_keeps_finished_chunks(tmp_path):
    """Stopping on too many failures keeps the chunks; a larger budget then reuses them."""
    ck = tmp_path / "ck"
    kw = dict(num_simulations=64, simulation_chunk_size=16, progress_bar=False)
    with pytest.raises(RuntimeError, match="finished chunks are kept in"):
        MFDiff(ext_quadratic_fail, max_failure_fraction=0.05, checkpoint_dir=ck, **kw).simulate(KEY)
    kept = {p.name: p.stat().st_mtime_ns for p in (ck / "prior").glob("chunk_*.npz")}
    assert 1 <= len(kept) < 4
    inf = MFDiff(ext_quadratic_fail, max_failure_fraction=0.5, checkpoint_dir=ck, **kw)
    with pytest.warns(UserWarning, match="solver diverged"):
        inf.simulate(KEY)
    for name, mtime in kept.items():  # not rewritten
        assert (ck / "prior" / name).stat().st_mtime_ns == mtime
    plain = MFDiff(ext_quadratic_fail, max_failure_fraction=0.5, **kw)
    with pytest.warns(UserWarning, match="solver diverged"):
        plain.simulate(KEY)
    assert_same(inf.simulations, plain.simulations)


_SCRIPT = """
import sys
import jax
import ext_models
from numpyro_mfdiff import MFDiff

MFDiff(ext_models.ext_quadratic_logged, {n}, simulation_chunk_size={chunk},
       checkpoint_dir=sys.argv[1], progress_bar=False).simulate(jax.random.PRNGKey(0))
"""


def test_killed_run_resumes_from_the_last_finished_chunk(tmp_path, call_log):
    """SIGKILL a real process in the middle of chunk 1; resuming runs chunks 1-3 only."""
    ck = tmp_path / "ck"
    script = tmp_path / "simulate.py"
    script.write_text(_SCRIPT.format(n=N, chunk=CHUNK))
    repo = Path(numpyro_mfdiff.__file__).parents[1]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(repo), str(Path(__file__).parent)]),
        JAX_PLATFORMS="cpu",
        MFDIFF_TEST_BLOCK_AFTER=str(CHUNK + CHUNK // 2),  # blocks half-way through chunk 1
    )
    proc = subprocess.Popen(
        [sys.executable, str(script), str(ck)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while call_log().size < CHUNK + CHUNK // 2:
            if proc.poll() is not None:
                pytest.fail(f"the simulation process exited early:\n{proc.stdout.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("the simulation process made no progress in 180 s")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (ck / "prior").glob("chunk_*")) == ["chunk_00000.npz"]
    call_log(reset=True)

    kw = dict(simulation_chunk_size=CHUNK, progress_bar=False)
    resumed = MFDiff(ext_quadratic_logged, N, checkpoint_dir=ck, **kw)
    resumed.simulate(KEY)
    resumed_calls = call_log(reset=True)
    uninterrupted = MFDiff(ext_quadratic_logged, N, **kw)
    uninterrupted.simulate(KEY)
    all_calls = call_log()
    assert resumed_calls.size == N - CHUNK
    np.testing.assert_array_equal(resumed_calls, all_calls[CHUNK:])
    assert_same(resumed.simulations, uninterrupted.simulations)


def test_simulate_at_given_latents(tmp_path, call_log, spec):
    """Refinement path: the latent sites take given values; the checkpoint records them."""
    ck = tmp_path / "ck"
    theta = np.linspace(-2.0, 2.0, 12, dtype=np.float32)[:, None]  # unconstrained
    out = _model.simulate(
        KEY, ext_quadratic_logged, spec, 12, chunk_size=5, theta=theta, checkpoint=ck
    )
    constrained = np.asarray(jax.vmap(spec.constrain)(theta)["theta"])
    np.testing.assert_allclose(call_log(), constrained, rtol=1e-6)
    np.testing.assert_allclose(out.theta, theta, atol=1e-5)
    assert out.valid.all()
    with pytest.raises(ValueError, match="different run: theta is"):
        _model.simulate(
            KEY, ext_quadratic_logged, spec, 12, chunk_size=5, theta=theta + 0.1, checkpoint=ck
        )
    with pytest.raises(ValueError, match=r"theta must have shape \(12, 1\)"):
        _model.simulate(KEY, ext_quadratic_logged, spec, 12, theta=theta[:5])


def test_unreadable_manifest_and_wrong_shaped_chunk_are_errors(tmp_path, call_log):
    """Through ``MFDiff(checkpoint_dir=...)``: a manifest that is not JSON, and a chunk
    whose arrays have another shape (or dtype) than the run's, are ValueErrors naming the
    file, raised before any simulator call; the intact directory resumes with none."""
    ck = tmp_path / "ck"
    kw = dict(simulation_chunk_size=CHUNK, checkpoint_dir=ck, progress_bar=False)
    first = MFDiff(ext_quadratic_logged, N, **kw)
    first.simulate(KEY)
    call_log(reset=True)
    again = MFDiff(ext_quadratic_logged, N, **kw)
    again.simulate(KEY)  # all chunks on disk: no call
    assert call_log().size == 0
    assert_same(first.simulations, again.simulations)

    manifest = ck / "prior" / "manifest.json"
    good = manifest.read_bytes()
    manifest.write_text("{not json")
    with pytest.raises(ValueError, match=r"manifest\.json is not a readable checkpoint manifest"):
        MFDiff(ext_quadratic_logged, N, **kw).simulate(KEY)
    manifest.write_bytes(good)

    path = ck / "prior" / "chunk_00002.npz"
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    name = next(k for k in data if k != "info" and data[k].ndim >= 1)
    data[name] = np.concatenate([data[name], data[name][:1]])  # one row too many
    np.savez(path, **data)
    with pytest.raises(
        ValueError, match=rf"chunk_00002\.npz: array {re.escape(name)} has shape \(9,"
    ):
        MFDiff(ext_quadratic_logged, N, **kw).simulate(KEY)
    assert call_log().size == 0
