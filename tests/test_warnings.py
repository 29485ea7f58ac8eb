"""The package warns when it must (few effective simulations, likelihood mass dropped
in labelling, failed simulations, a refinement resting on few simulations) and stays
silent on a well-posed problem."""

import re
import warnings

import jax
import numpy as np
import pytest
from models import TINY, linear_gaussian, quadratic, quadratic_exact_draws, quadratic_wrong_answers
from test_mfdiff import _nan_sim, _quadratic_abs_close
from test_refine import X_OBS

from numpyro_mfdiff import MFDiff

# whole-file model builds: the default suite measured 23.5 min with them (2026-12-01),
# over its 15-minute budget; CI runs them with -m slow
# its time goes to compiling: XLA's cheapest compile (tests/conftest.py)
pytestmark = [pytest.mark.slow, pytest.mark.cheap]


def _simulated(model=quadratic, num_simulations=1000, **kwargs):
    inf = MFDiff(model, num_simulations=num_simulations, **{**TINY, **kwargs})
    inf.simulate(jax.random.PRNGKey(0))
    return inf


def test_well_posed_problem_is_silent():
    """y = 1 with 1000 simulations (ESS ~ 89 > 50): no warning anywhere from run to draws."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inf = MFDiff(quadratic, num_simulations=1000, **TINY).run(jax.random.PRNGKey(0))
        k = jax.random.PRNGKey(1)
        assert np.isfinite(np.asarray(inf.get_samples(k, {"y": 1.0}, 100)["theta"])).all()
        assert np.isfinite(np.asarray(inf.sample_ode(k, {"y": 1.0}, 100)["theta"])).all()
    assert inf.diagnostics["num_failed"] == 0
    assert inf.diagnostics["label_dropped_mass_max"] <= 0.01


def test_low_ess_warns_with_its_figure():
    """ESS at y = 1 (1000 simulations) is ~ 89: ess_warning above it warns and names the
    ESS and the threshold; below it the same call is silent."""
    k = jax.random.PRNGKey(1)
    loud = _simulated(ess_warning=200.0)
    e = float(loud.ess({"y": 1.0}))
    assert 50 < e < 150
    with pytest.warns(UserWarning, match="effective sample size") as rec:
        loud.sample_ode(k, {"y": 1.0}, 10)
    (w,) = [r for r in rec if "effective sample size" in str(r.message)]
    assert f"is {e:.1f} (< 200)" in str(w.message)
    quiet = _simulated(ess_warning=20.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet.sample_ode(k, {"y": 1.0}, 10)
    # an observation in the prior predictive's tail (ESS ~ 5) warns at the default 50
    with pytest.warns(UserWarning, match="effective sample size"):
        _simulated().sample_ode(k, {"y": 4.5}, 10)


def test_labelling_warns_when_it_drops_likelihood_mass():
    """With label_points far below the ~ 100 prior points that carry an observation's
    likelihood, labelling drops mass and says so; the diagnostics record the figure."""
    inf = _simulated(label_points=4, label_smoothing=False)
    with pytest.warns(UserWarning, match=r"labelling dropped up to .*raise label_points \(now 4\)"):
        inf.label(jax.random.PRNGKey(1))
    assert inf.diagnostics["label_dropped_mass_max"] > 0.01
    silent = _simulated()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        silent.label(jax.random.PRNGKey(1))
    assert silent.diagnostics["label_dropped_mass_max"] <= 0.01


def test_failed_simulations_warn_with_a_count_and_the_rest_survive():
    """About 12.5% of the simulations fail (theta > 1.5): a warning with their count, and
    the survivors' ODE (40 steps) is the exact posterior at y = 1 (test_mfdiff's
    ``_quadratic_abs_close``: mean |theta| within 0.25 sd, sd 0.8-1.25x, modes 40-60%).
    Measured over simulation keys 0-4 (2026-12-06): mean error -0.040 to 0.029 sd, sd
    ratio 0.92-1.08, mode balance 0.43-0.53; the 10 ODE steps of ``models.TINY`` bias
    |theta| by about half a posterior sd. Prior draws, each mode shifted by 0.3 sd, sds
    halved or doubled fail the same check (the former ``0.3 < P(theta > 0) < 0.7``
    passed prior draws)."""
    inf = MFDiff(_nan_sim, num_simulations=1000, **{**TINY, "num_steps": 40})
    with pytest.warns(UserWarning, match="prior simulations failed") as rec:
        inf.simulate(jax.random.PRNGKey(0))
    failed = inf.diagnostics["num_failed"]
    assert 60 < failed < 190  # P(theta > 1.5) = 0.125: 125 expected
    (w,) = [r for r in rec if "prior simulations failed" in str(r.message)]
    assert re.match(rf"{failed} of 1000 prior simulations failed", str(w.message))
    sims = inf.simulations
    valid = np.asarray(sims.valid)
    theta = -2.0 + 4.0 / (1.0 + np.exp(-np.asarray(sims.theta)[:, 0]))  # constrained
    assert valid.sum() == 1000 - failed
    # the simulations above 1.5 are left out; the others are finite
    assert theta[valid].max() < 1.5
    assert np.isfinite(np.asarray(sims.y)[valid]).all()
    # the survivors give the exact posterior, both modes (the failures are above 1.5)
    s = np.asarray(inf.sample_ode(jax.random.PRNGKey(1), {"y": 1.0}, 2000)["theta"])
    ref = quadratic_exact_draws(jax.random.PRNGKey(2), 1.0, 20_000)
    assert np.isfinite(s).all() and _quadratic_abs_close(s, ref)
    prior = np.asarray(jax.random.uniform(jax.random.PRNGKey(3), (2000,), minval=-2, maxval=2))
    for name, wrong in quadratic_wrong_answers(ref[:2000], prior).items():
        assert not _quadratic_abs_close(wrong, ref), name


@pytest.mark.filterwarnings("ignore:G_high is off")  # 20 training steps: a crude G_high
def test_refine_warns_when_its_final_ess_is_small():
    """The same 60-simulation refinement warns under ess_warning = 1e6 and not under 1."""
    for threshold, loud in ((1e6, True), (1.0, False)):
        inf = MFDiff(linear_gaussian, num_simulations=500, **{**TINY, "ess_warning": threshold})
        inf.simulate(jax.random.PRNGKey(0))
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            inf.refine(jax.random.PRNGKey(1), X_OBS, num_simulations=60, rounds=1, train_steps=20)
        hits = [r for r in rec if "importance ESS after refinement" in str(r.message)]
        assert len(hits) == int(loud), [str(r.message) for r in rec]
