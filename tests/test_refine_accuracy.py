"""Refinement against exact posteriors (slow: ``pytest -m slow``). Fixed keys; stated tolerances."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from models import kl_quadratic

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.examples import quadratic, quadratic_coarse
from numpyro_mfdiff.metrics import c2st

pytestmark = pytest.mark.slow


def test_quadratic_refinement_corrects_a_poor_low_fidelity_model():
    """Low fidelity: theta^2 interpolated on 6 nodes (posterior modes at +-0.925 for y = 1).
    After two rounds of 5,000 exact simulations (50,000 samples, 80 bins on [-2, 2]):
    KL(exact || refined ODE) <= 0.003 and KL(exact || G_high) <= 0.003 (the issue's
    target; measured 0.0021 and 0.0024 at these keys), each mode 50% +- 2 points."""
    inf = MFDiff(
        quadratic_coarse,
        num_simulations=10_000,
        num_labels=10_000,
        train_steps=3_000,
        progress_bar=False,
    ).run(jax.random.PRNGKey(0))
    obs = {"y": 1.0}
    low = np.asarray(inf.get_samples(jax.random.PRNGKey(1), obs, 50_000)["theta"])
    assert kl_quadratic(low, 1.0) > 0.1  # the low-fidelity posterior is visibly wrong
    inf.refine(
        jax.random.PRNGKey(2),
        obs,
        model=quadratic,
        num_simulations=5_000,
        rounds=2,
        num_labels=20_000,
        train_steps=10_000,
    )
    ode = np.asarray(inf.sample_ode(jax.random.PRNGKey(4), obs, 50_000)["theta"])
    assert kl_quadratic(ode, 1.0) <= 0.003
    assert abs((ode > 0).mean() - 0.5) <= 0.02
    s = np.asarray(inf.get_samples(jax.random.PRNGKey(3), obs, 50_000)["theta"])
    print(
        f"quadratic: KL refined ODE {kl_quadratic(ode, 1.0):.4f}, G_high {kl_quadratic(s, 1.0):.4f}"
    )
    assert kl_quadratic(s, 1.0) <= 0.003
    assert abs((s > 0).mean() - 0.5) <= 0.02


SIG10 = 0.9


def gaussian10(x=None):
    theta = numpyro.sample("theta", dist.Normal(jnp.zeros(10), 1.0).to_event(1))
    numpyro.sample("x", dist.Normal(theta, SIG10).to_event(1), obs=x)


def test_gaussian10_refinement_matches_closed_form():
    """theta ~ N(0, I_10), x ~ N(theta, 0.9^2 I): the prior-only likelihood ESS of this
    observation is 76 with 10,000 simulations; after 10,000 more (two rounds) with
    smoothing 0.4: refined ODE and G_high both within 0.05 (ODE) / 0.1 (G_high) of the
    mean, sd within 6% / 10%, C2ST against exact samples <= 0.55. Without smoothing
    the ODE repeats weighted points and G_high regresses a piecewise-constant map
    (measured: ODE C2ST 0.576 unsmoothed, 0.525 smoothed; G_high 0.65 unsmoothed in
    an earlier version, 0.530 smoothed): see the note on issue 4."""
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(7), (10,))) * np.sqrt(1 + SIG10**2)
    obs = {"x": x}
    var = SIG10**2 / (1 + SIG10**2)
    mean = x / (1 + SIG10**2)
    inf = MFDiff(
        gaussian10,
        num_simulations=10_000,
        num_labels=10_000,
        train_steps=3_000,
        progress_bar=False,
    ).run(jax.random.PRNGKey(0))
    assert inf.ess(obs) < 100
    inf.refine(
        jax.random.PRNGKey(2),
        obs,
        num_simulations=5_000,
        rounds=2,
        train_steps=5_000,
        smoothing=0.4,
    )
    exact = mean + np.sqrt(var) * np.asarray(jax.random.normal(jax.random.PRNGKey(9), (5_000, 10)))
    ode = np.asarray(inf.sample_ode(jax.random.PRNGKey(4), obs, 5_000)["theta"])
    assert np.abs(ode.mean(0) - mean).max() < 0.05
    np.testing.assert_allclose(ode.std(0), np.sqrt(var), rtol=0.06)
    c_ode = float(c2st(ode, exact, jax.random.PRNGKey(3)))
    assert c_ode <= 0.55
    s = np.asarray(inf.get_samples(jax.random.PRNGKey(3), obs, 5_000)["theta"])
    assert np.abs(s.mean(0) - mean).max() < 0.1
    np.testing.assert_allclose(s.std(0), np.sqrt(var), rtol=0.1)
    c_high = float(c2st(s, exact, jax.random.PRNGKey(3)))
    print(f"10-D: C2ST refined ODE {c_ode:.3f}, G_high {c_high:.3f}; sd/exact G_high", s.std(0))
    assert c_high <= 0.55
    # the same weights without smoothing: the ODE returns repeated points
    (ref,) = inf._refinements.values()
    ref.smoothing = 0.0
    raw = np.asarray(inf.sample_ode(jax.random.PRNGKey(4), obs, 5_000)["theta"])
    c_raw = float(c2st(raw, exact, jax.random.PRNGKey(3)))
    print(f"10-D: C2ST refined ODE without smoothing {c_raw:.3f}")
    assert c_raw > c_ode
