"""Refinement against exact posteriors (slow: ``pytest -m slow``). Fixed keys; stated tolerances."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from models import kl_quadratic, quadratic_exact_draws, quadratic_wrong_answers

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.examples import quadratic, quadratic_coarse
from numpyro_mfdiff.metrics import c2st

pytestmark = pytest.mark.slow


def test_quadratic_refinement_corrects_a_poor_low_fidelity_model():
    """Low fidelity: theta^2 interpolated on 6 nodes (posterior modes at +-0.925 for y = 1).
    After two rounds of 5,000 exact simulations (80 bins on [-2, 2]): KL(exact ||
    G_high) <= 0.003 on 50,000 draws (the issue's target) and KL(exact || refined ODE)
    <= 0.004 on 20,000 (the same target: the histogram's plug-in KL of N draws is biased
    up by about 79 / 2N, 0.0008 at 50,000 and 0.0020 at 20,000; the ODE's 50,000 draws
    took 48 of the test's 121 s), each mode 50% +- 2 points.

    Measured over (build, refine) keys (0, 2) (this test's), (10, 12), (20, 22), the
    test's calls repeated (2026-12-06, /tmp/t28b/item10.py): KL refined ODE (then on
    50,000 draws) 0.0015, 0.0017, 0.0015; G_high 0.0018, 0.0023, 0.0021; G_low 0.65,
    0.64, 0.65; positive mode ODE 0.500-0.501, G_high 0.492-0.493. 50,000 exact draws
    (3 keys) give 0.0007-0.0009, the histogram's plug-in floor. The wrong answers made
    from exact draws fail the same bound (checked at the end): shifted 0.3 sd
    0.041-0.043, sd doubled 0.29-0.30, sd halved 0.51-0.52, prior draws 2.2.

    The refined ODE on 20,000 draws at the same keys (2026-12-06, /tmp/s7/quad20.py,
    the test's calls): KL 0.0026 / 0.0029 / 0.0029, modes 0.492-0.493 (disjoint
    20,000-draw subsets of the 50,000: 0.0024-0.0029); 20,000 exact draws (keys 5-7)
    0.0018-0.0021; the wrong answers as 20,000 draws fail 0.004: shifted 0.3 sd
    0.043-0.045, sd doubled 0.29-0.30, sd halved 0.50-0.51, prior draws 2.2."""
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
    ode = np.asarray(inf.sample_ode(jax.random.PRNGKey(4), obs, 20_000)["theta"])
    assert kl_quadratic(ode, 1.0) <= 0.004
    assert abs((ode > 0).mean() - 0.5) <= 0.02
    s = np.asarray(inf.get_samples(jax.random.PRNGKey(3), obs, 50_000)["theta"])
    print(
        f"quadratic: KL refined ODE {kl_quadratic(ode, 1.0):.4f}, G_high {kl_quadratic(s, 1.0):.4f}"
    )
    assert kl_quadratic(s, 1.0) <= 0.003
    assert abs((s > 0).mean() - 0.5) <= 0.02
    exact = quadratic_exact_draws(jax.random.PRNGKey(5), 1.0, 50_000)
    prior = np.asarray(jax.random.uniform(jax.random.PRNGKey(6), (50_000,), minval=-2, maxval=2))
    assert kl_quadratic(exact, 1.0) <= 0.003
    for name, wrong in quadratic_wrong_answers(exact, prior).items():
        assert kl_quadratic(wrong, 1.0) > 0.003, name
        assert kl_quadratic(wrong[:20_000], 1.0) > 0.004, name  # the ODE's bound


SIG10 = 0.9
# the unsmoothed ODE's draws in the gaussian10 check
RAW_DRAWS = 1_000


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
    an earlier version, 0.530 smoothed): see the note on issue 4.

    Spread over four (build, refine) key pairs, the test's (0, 2) and (1, 3), (2, 5),
    (3, 6) (``/tmp`` script repeating this test's calls, 2026-12-01): prior ESS 76 /
    45 / 103 / 116; ODE largest mean error 0.023-0.041 (bound 0.05), sd error <= 2.3%
    (6%), C2ST 0.525-0.542 (0.55); G_high mean error 0.018-0.027 (0.1), sd error <=
    3.2% (10%), C2ST 0.530-0.535 (0.55). The C2ST and the ODE mean bounds are the thin
    ones (margins 0.008 and 0.009 at the worst pair).

    ``G_low`` is now built with 4,000 labels and 1,500 training steps (it only proposes
    the first round; the build was 42 of the test's 140 s, one core). The same four
    pairs with that build (2026-12-06, ``/tmp/s6/spread.py g10 4000 1500``): ODE mean
    error 0.021-0.041, sd error <= 2.3%, C2ST 0.531-0.542; G_high 0.028-0.035, <= 5.1%,
    0.532-0.537 (margins 0.008 and 0.009 again); unsmoothed, 2,495-2,552 of 5,000 draws
    distinct (smoothed: all). The unsmoothed ODE now draws ``RAW_DRAWS`` = 1,000: 785,
    794, 809 distinct at the test's (build, refine) keys and draw keys 4 (the test's),
    14, 24; 801-813 at keys (1, 3) (2026-12-07, jax 0.10.2, ``/tmp/s12/g10raw.py``),
    against the bound's 950 (about 3,150 equally weighted points would give 2,500 of
    5,000 and 860 of 1,000; at 2,000 draws, the former count, 1,382 on 2026-12-06)."""
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(7), (10,))) * np.sqrt(1 + SIG10**2)
    obs = {"x": x}
    var = SIG10**2 / (1 + SIG10**2)
    mean = x / (1 + SIG10**2)
    inf = MFDiff(
        gaussian10,
        num_simulations=10_000,
        num_labels=4_000,
        train_steps=1_500,
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
    ((key, ref),) = inf.state.refinements.items()
    inf._state = inf.state.replace(refinements={key: dataclasses.replace(ref, smoothing=0.0)})
    raw = np.asarray(inf.sample_ode(jax.random.PRNGKey(4), obs, RAW_DRAWS)["theta"])
    print(f"10-D: distinct draws unsmoothed {_distinct(raw)} of {len(raw)}")
    # what smoothing is for, stated so that it can fail: unsmoothed, the ODE draws land on
    # the weighted points, so some repeat (to 3 decimals); smoothed, none does. (The former
    # ``c_raw > c_ode`` passed on any difference, 0.576 against 0.525 here.)
    assert _distinct(raw) < 0.95 * len(raw)
    assert _distinct(ode) == len(ode)


def _distinct(draws):
    """The number of distinct rows of ``draws`` (S, D), rounded to 3 decimals."""
    return np.unique(np.round(draws, 3), axis=0).shape[0]


def _regression_problem():
    """y = X beta + N(0, 0.5^2), 50 points, beta ~ N(0, I_5): the exact posterior."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 5)).astype(np.float32)
    y = (X @ rng.normal(size=5) + 0.5 * rng.normal(size=50)).astype(np.float32)

    def model(y=None):
        b = numpyro.sample("beta", dist.Normal(jnp.zeros(5), 1.0).to_event(1))
        numpyro.sample("y", dist.Normal(jnp.asarray(X) @ b, 0.5).to_event(1), obs=y)

    cov = np.linalg.inv(np.eye(5) + X.T @ X / 0.25)
    return model, {"y": y}, cov @ X.T @ y / 0.25, cov


def test_regression_refine_reaches_the_posterior_from_collapsed_weights():
    """A 50-point regression in 5-D: the likelihood ESS of 10,000 prior simulations is 1
    (posterior sds 14x narrower than the prior's). ``refine`` with only the budget set
    (10,000 more simulations) tempers its way to the posterior: refined ODE and G_high
    means within 0.1 posterior sd, sds within 10%, C2ST against exact draws <= 0.55.
    Measured (docs/benchmarks.md, "Accuracy on models nobody here wrote"): ODE C2ST
    0.499-0.505, mean errors <= 0.023 sd, sds 0.96-1.01x; G_high C2ST 0.509-0.519,
    mean errors <= 0.029 sd, sds 0.98-1.04x, at seeds 0 and 1 and two settings of the
    temperature rule. A wrong answer (G_low here: sds 0.01-0.03x) fails every bound.

    ``G_low`` is built with 5,000 labels and 3,000 training steps (the defaults: 20,000
    and 10,000): at ESS 1 it only starts the refinement, and the build took 49 of the
    test's 119 s (one core). Over (build, refine) keys (0, 2) (this test's), (1, 3),
    (2, 4), (3, 5) with that build (2026-12-06, ``/tmp/s6/spread.py reg 5000 3000``):
    prior ESS 1.0-2.0; ODE mean errors 0.010-0.026 sd, sds 0.980-1.021x, C2ST
    0.501-0.511; G_high 0.019-0.037 sd, 0.977-1.023x, C2ST 0.512-0.519; G_high's
    check against its labels 0.008-0.030, sd ratios 0.98-1.02."""
    model, obs, mean, cov = _regression_problem()
    sd = np.sqrt(np.diag(cov))
    inf = MFDiff(
        model, num_simulations=10_000, num_labels=5_000, train_steps=3_000, progress_bar=False
    ).run(jax.random.PRNGKey(0))
    assert inf.ess(obs) < 2
    exact = np.random.default_rng(1).multivariate_normal(mean, cov, size=5_000)

    def check(s, bound=0.55):
        err = np.abs(s.mean(0) - mean) / sd
        ratio = s.std(0) / sd
        if err.max() >= 0.1 or np.any(np.abs(ratio - 1) >= 0.1):
            return False  # the C2ST (a classifier's training) only where the moments pass
        return float(c2st(s, exact, jax.random.PRNGKey(3))) <= bound

    with pytest.warns(UserWarning, match="effective sample size"):
        low = np.asarray(inf.get_samples(jax.random.PRNGKey(1), obs, 5_000)["beta"])
    assert not check(low)
    inf.refine(jax.random.PRNGKey(2), obs, max_simulations=10_000)
    (d,) = inf.diagnostics["refinements"].values()
    assert d["num_high_fidelity_simulations"] <= 10_000
    assert d["rounds"][-1]["lam"] == 1.0
    fit = d["rounds"][-1]["generator_check"]  # G_high against its own labels: no warning
    assert fit["mean_error"] < 0.2 and 0.8 <= min(fit["sd_ratio"]) <= max(fit["sd_ratio"]) <= 1.25
    ode = np.asarray(inf.sample_ode(jax.random.PRNGKey(4), obs, 5_000)["beta"])
    assert check(ode)
    high = np.asarray(inf.get_samples(jax.random.PRNGKey(5), obs, 5_000)["beta"])
    assert check(high)
