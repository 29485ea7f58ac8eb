"""The domain check of amortized answers and the checks of weights that are not finite
(issue 25): ``G_low`` answers only where it was trained, and says so elsewhere."""

import contextlib
import dataclasses
import re
import warnings

import equinox as eqx
import jax
import numpy as np
import pytest
from models import TINY

from numpyro_mfdiff import MFDiff, _compiled, _domain
from numpyro_mfdiff.examples import quadratic


@pytest.fixture(scope="module")
def quad():
    """The quadratic with 500 prior simulations and a tiny ``G_low``."""
    return MFDiff(quadratic, 500, **dict(TINY, ess_warning=0.0)).run(jax.random.PRNGKey(0))


@contextlib.contextmanager
def _nan_generator(inf):
    """``inf`` with every float parameter of its ``G_low`` NaN, restored on exit: draws
    that are not finite for any observation, whatever XLA's float32 arithmetic makes of
    an overflowing one (``y = 1e19`` gave NaN draws in earlier runs, and finite ones,
    1.9999995, on a fresh install of jax 0.10.2 / numpy 2.4.6)."""
    state = inf._state
    nan = jax.tree.map(lambda a: a * np.nan if eqx.is_inexact_array(a) else a, state.generator)
    inf._state = dataclasses.replace(state, generator=nan)
    try:
        yield inf
    finally:
        inf._state = state


def _fresh_observations(n, seed=100):
    sims = MFDiff(quadratic, n, progress_bar=False).simulate(jax.random.PRNGKey(seed))
    return np.asarray(sims.y[sims.valid])[:, 0]


def test_fires_where_the_model_cannot_produce_the_observation(quad):
    """``y = -3`` (``theta^2 >= 0``; the issue's case 3: ``G_low`` |theta| 0.72 or 1.93,
    exact 0.03) and ``y = 1e19`` (case 4: no finite likelihood; main served NaN without
    a word) are outside; the warning names the observation, the figure and the remedy."""
    with pytest.warns(UserWarning, match="observation 0 .*log evidence .*sample_ode.*refine"):
        quad.get_samples(jax.random.PRNGKey(1), {"y": -3.0}, 100)
    with warnings.catch_warnings(record=True) as seen:  # G_low's draws there may be NaN
        warnings.simplefilter("always")
        quad.get_samples(jax.random.PRNGKey(1), {"y": 1e19}, 100)
    said = [str(w.message) for w in seen]
    assert any(re.search("observation 0 .*no prior simulation gives", m) for m in said), said
    # a generator's NaN is said too, with the domain warning where both apply
    with _nan_generator(quad), pytest.warns(UserWarning, match="non-finite draws"):
        with pytest.warns(UserWarning, match="observation 0 .*no prior simulation gives"):
            quad.get_samples(jax.random.PRNGKey(1), {"y": 1e19}, 100)
    # in a batch, the outside row is named
    with pytest.warns(UserWarning, match=r"observation 1 .*1 of 3 observations"):
        quad.get_samples(jax.random.PRNGKey(1), {"y": np.array([1.0, -3.0, 2.0])}, 100)
    # and sample_ode's answer there is the exact one (|theta| near 0: theta^2 as small
    # as it goes), which is what the warning points to
    ode = np.abs(np.asarray(quad.sample_ode(jax.random.PRNGKey(2), {"y": -3.0}, 500)["theta"]))
    assert ode.mean() < 0.15, ode.mean()


def test_error_and_silence_settings(quad, tmp_path):
    """``domain_check="error"`` raises, ``None`` silences; the setting is validated,
    settable and saved."""
    with pytest.raises(ValueError, match="domain_check"):
        MFDiff(quadratic, domain_check="loud")
    try:
        quad.domain_check = "error"
        with pytest.raises(ValueError, match="outside the simulated observations"):
            quad.get_samples(jax.random.PRNGKey(1), {"y": -3.0}, 100)
        with pytest.raises(ValueError, match="outside"):
            quad.print_summary(jax.random.PRNGKey(1), {"y": -3.0}, 100)
        path = tmp_path / "q.npz"
        quad.save(path)
        assert MFDiff.load(path, quadratic).domain_check == "error"
        quad.domain_check = None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            quad.get_samples(jax.random.PRNGKey(1), {"y": -3.0}, 100)
    finally:
        quad.domain_check = "warn"


def test_prior_predictive_observations_pass(quad):
    """Fresh prior-predictive observations are flagged at most 1% of the time (measured
    on 5,000 per bank over five banks and keys 0-2: 0-0.02%; here 0 of 2,000 against
    the K = 500 references), and a batch of them draws without a warning; the package's
    own observations (quadratic at 0.25-3.5) pass."""
    y = _fresh_observations(2000)
    log_z, ess = _compiled.low_summary(quad.state, y[:, None])
    ref = _compiled.domain_reference(quad.config, quad.state)
    rate = _domain.outside(ref, log_z).mean()
    assert rate <= 0.01, rate
    assert ref.log_evidence.size == 500
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quad.get_samples(jax.random.PRNGKey(3), {"y": y[:40]}, 50)
        quad.get_samples(jax.random.PRNGKey(3), {"y": np.array([0.25, 1.0, 2.0, 3.5])}, 50)
        quad.to_inference_data(jax.random.PRNGKey(3), {"y": 1.0}, 100)


def test_no_nan_passes_quietly(quad):
    """Where no simulation gives the observation a finite likelihood, ``ess`` is 0 (main:
    NaN, which no ``< ess_warning`` test catches), ``sample_ode`` and ``refine`` raise a
    ``ValueError`` with the cause (main: ``IndexError`` from inside), and non-finite
    generator draws warn even with the domain check off (at an observation the domain
    check would pass)."""
    assert quad.ess({"y": 1e19}) == 0.0
    for call in (quad.sample_ode, quad.refine):
        with pytest.raises(ValueError, match="no prior simulation gives observation 0 a finite"):
            call(jax.random.PRNGKey(1), {"y": 1e19})
    try:
        quad.domain_check = None
        with _nan_generator(quad), pytest.warns(UserWarning, match="non-finite draws"):
            quad.get_samples(jax.random.PRNGKey(1), {"y": 1.0}, 100)
    finally:
        quad.domain_check = "warn"
