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
    After two rounds of 5,000 exact simulations: KL(exact || G_high) <= 0.003 (50,000
    samples, 80 bins on [-2, 2]) and each mode holds 50% +- 2 points of the mass."""
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
    s = np.asarray(inf.get_samples(jax.random.PRNGKey(3), obs, 50_000)["theta"])
    assert kl_quadratic(s, 1.0) <= 0.003
    assert abs((s > 0).mean() - 0.5) <= 0.02


SIG10 = 0.9


def gaussian10(x=None):
    theta = numpyro.sample("theta", dist.Normal(jnp.zeros(10), 1.0).to_event(1))
    numpyro.sample("x", dist.Normal(theta, SIG10).to_event(1), obs=x)


def test_gaussian10_refinement_matches_closed_form():
    """theta ~ N(0, I_10), x ~ N(theta, 0.9^2 I): the prior-only likelihood ESS of this
    observation is below 100 with 10,000 simulations; 10,000 more (two rounds) give
    mean within 0.1, marginal sd within 10%, and C2ST(G_high, exact) <= 0.55."""
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
    )
    inf.run(jax.random.PRNGKey(0))
    assert inf.ess(obs) < 100
    inf.refine(jax.random.PRNGKey(2), obs, num_simulations=5_000, rounds=2)
    s = np.asarray(inf.get_samples(jax.random.PRNGKey(3), obs, 5_000)["theta"])
    assert np.abs(s.mean(0) - mean).max() < 0.1
    np.testing.assert_allclose(s.std(0), np.sqrt(var), rtol=0.1)
    exact = mean + np.sqrt(var) * np.asarray(jax.random.normal(jax.random.PRNGKey(9), (5_000, 10)))
    assert float(c2st(s, exact, jax.random.PRNGKey(4))) <= 0.55
