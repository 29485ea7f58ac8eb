"""Runaway-electron stand-in: rates, solvers against the closed form, vmap and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers

from numpyro_mfdiff.examples import (
    RUNAWAY_NOISE,
    RUNAWAY_TIMES,
    RUNAWAY_TRUE,
    runaway_closed_form,
    runaway_high,
    runaway_low,
    runaway_rates,
    runaway_solve,
)

TRUE = tuple(RUNAWAY_TRUE[k] for k in ("E_f", "n_e", "T_f"))
T = len(RUNAWAY_TIMES)


def test_rates_match_textbook_values():
    """n_e = 1e20 m^-3, T_e = 1 keV (lnL = 14.9): E_c = 0.0760 V/m (Connor-Hastie), so at
    E = 10 E_c the avalanche rate is 9 / (tau_c lnL) sqrt(pi / 18) with tau_c = m_e c/(e E_c)
    = 22.4 ms; the Dreicer rate is tiny there (E_D / E = m_e c^2 / (10 T_e) = 51:
    S_D = 0.35 nu_ee 51^(3/8) exp(-51/4 - sqrt(102)) ~ 3e-5 / s)."""
    e_c = 0.0760
    s_d, gamma = (float(v) for v in runaway_rates(10 * e_c, 10.0, 1000.0))
    tau_c = 9.1093837015e-31 * 299_792_458.0 / (1.602176634e-19 * e_c)
    assert abs(tau_c - 0.0224) < 2e-4
    np.testing.assert_allclose(gamma, 9 / (tau_c * 14.9) * np.sqrt(np.pi / 18), rtol=2e-3)
    assert 1e-6 < s_d < 1e-3
    # below E_c: no avalanche; Dreicer grows steeply with the field
    assert float(runaway_rates(0.5 * e_c, 10.0, 1000.0)[1]) == 0.0
    s = [float(runaway_rates(e, 1.0, 10.0)[0]) for e in (5.0, 10.0, 20.0)]
    assert s[0] < s[1] < s[2] and s[2] / s[0] > 1e3


def test_fine_solver_matches_closed_form_and_coarse_is_biased():
    """Constant rates (no quench): RK4 with the fine step agrees with the Riccati closed form to
    1e-4 decades; with the quench, RK4 at 1/50 of the step agrees to 1e-3 decades while the
    coarse Euler solve is off by more than 3 noise sds somewhere."""
    exact = np.log10(runaway_closed_form(TRUE))
    fine = np.log10(np.asarray(runaway_solve(TRUE, t0=TRUE[2])))
    np.testing.assert_allclose(fine, exact, atol=1e-4)
    ref = np.log10(np.asarray(runaway_solve(TRUE, dt=0.002)))
    hi = np.log10(np.asarray(runaway_solve(TRUE)))
    lo = np.log10(np.asarray(runaway_solve(TRUE, dt=1.0, method="euler")))
    assert hi.shape == lo.shape == (T,)
    assert np.abs(hi - ref).max() < 1e-3
    assert np.abs(lo - ref).max() > 3 * RUNAWAY_NOISE
    # Euler converges at first order towards the same solution
    e1 = np.abs(np.log10(np.asarray(runaway_solve(TRUE, dt=0.02, method="euler"))) - ref).max()
    e2 = np.abs(np.log10(np.asarray(runaway_solve(TRUE, dt=0.01, method="euler"))) - ref).max()
    assert 1.6 < e1 / e2 < 2.4


def test_models_agree_in_sites_and_shapes():
    traces = [
        handlers.trace(handlers.seed(m, rng_seed=0)).get_trace()
        for m in (runaway_low, runaway_high)
    ]
    for name in ("E_f", "n_e", "T_f", "y"):
        assert traces[0][name]["value"].shape == traces[1][name]["value"].shape, name
    assert traces[0]["y"]["value"].shape == (T,)


def test_solver_vmap_and_grad():
    params = jnp.array([TRUE, (6.0, 1.2, 9.0), (10.0, 0.8, 12.0)])
    for kw in (dict(), dict(dt=1.0, method="euler")):
        batch = jax.jit(jax.vmap(lambda p, kw=kw: runaway_solve(tuple(p), **kw)))(params)
        assert batch.shape == (3, T)
        np.testing.assert_allclose(batch[1], runaway_solve(tuple(params[1]), **kw), rtol=1e-4)

        def loss(p, kw=kw):
            return jnp.sum(jnp.log10(runaway_solve(tuple(p), **kw)))

        g = np.asarray(jax.jit(jax.grad(loss))(params[0]))
        assert np.all(np.isfinite(g)) and np.all(g != 0)
        h = 1e-2 * params[0]
        fd = [
            (loss(params[0].at[i].add(h[i])) - loss(params[0].at[i].add(-h[i]))) / (2 * h[i])
            for i in range(3)
        ]
        np.testing.assert_allclose(g, np.asarray(fd), rtol=0.05)


def test_bad_input():
    with pytest.raises(ValueError, match="method"):
        runaway_solve(TRUE, method="rk45")
    with pytest.raises(ValueError, match="multiple of dt"):
        runaway_solve(TRUE, times=(1.5,), dt=1.0)


@pytest.mark.cheap  # its time goes to compiling (tests/conftest.py)
@pytest.mark.slow
def test_refine_reaches_nuts():
    """The settings of ``bench_runaway.py --fast``: G_low from 2,000 Euler solves, then
    500 RK4 solves for one observation, against NUTS on the RK4 model (2 chains x 500):
    G_high's 500 draws within C2ST 0.58 of 500 NUTS draws, every mean within 0.25 NUTS
    sd, every sd within a factor exp(0.35) = 1.42; NUTS's other 500 draws pass, and
    the prior, those draws shifted by 0.3 sd, with the sd halved or doubled fail.

    The default engine: ``"auto"`` probes the Laplace start at y (section 6 of
    docs/method.md) with 125 solves (ESS 0.86-0.88 of them) and spends the rest by
    importance sampling from it. Measured over build/refine keys (0, 3) (this test's),
    (10, 13), (20, 23) (``/tmp/w26d/rw.py auto``, 2026-12-06): G_high C2ST 0.514 /
    0.556 / 0.528, largest mean error 0.061 / 0.166 / 0.090 sd, largest |log sd ratio|
    0.022 / 0.178 / 0.063 (``engine="smc"``: 0.497 / 0.523 / 0.520; G_low before: C2ST
    0.85-0.92, 0.9-1.3 sd off). The Laplace start is what makes 500 solves enough: the
    KDE importance sampling of the same budget (``engine="is"``) gave C2ST 0.600 /
    0.654 / 0.762, 0.24 / 0.34 / 0.88 sd. NUTS's 0.3-sd shift measured C2ST 0.64 before.
    The NUTS draws (100 s of the test's 150 s on one core) are stored:
    ``tests/references.py`` made them with the call this test used to make, and checks
    at load that the observation and the RK4 model's log density at stored draws are
    unchanged."""
    import references
    from models import assert_wrong_answers_fail, moment_errors
    from numpyro.infer import Predictive

    from numpyro_mfdiff import MFDiff
    from numpyro_mfdiff.metrics import c2st

    _, _, obs, _ = references.runaway()  # y at the true parameters, noise key 1
    build = dict(num_labels=500, train_steps=200, num_steps=30, width=32, depth=2)
    build["ess_warning"] = 5.0  # G_low's ESS at y is small: refinement is the point
    inf = MFDiff(runaway_low, num_simulations=2000, progress_bar=False, **build)
    inf.run(jax.random.PRNGKey(0))

    def stack(s):
        return np.stack([np.ravel(np.asarray(s[k])) for k in ("E_f", "n_e", "T_f")], 1)

    inf.refine(jax.random.PRNGKey(3), obs, model=runaway_high, num_simulations=500)
    assert next(iter(inf.diagnostics["refinements"].values()))["engine"] == "smc"
    high = stack(inf.get_samples(jax.random.PRNGKey(4), obs, 500))
    ref_all = references.load("runaway_nuts")  # NUTS, stored: see tests/references.py
    perm = np.random.default_rng(0).permutation(len(ref_all))
    ref, other = ref_all[perm[:500]], ref_all[perm[500:]]
    m, sd = ref_all.mean(0), ref_all.std(0)

    def figures(d):
        return (float(c2st(d, ref, jax.random.PRNGKey(7))), *moment_errors(d, m, sd))

    def check(d):
        acc, err, log_sd = figures(d)
        return acc <= 0.58 and err <= 0.25 and log_sd <= 0.35

    assert check(high), figures(high)
    prior = stack(Predictive(runaway_high, num_samples=500)(jax.random.PRNGKey(8)))
    assert_wrong_answers_fail(check, other, prior)


def test_the_stored_reference_refuses_a_changed_model_or_observation(monkeypatch):
    """``references.load`` re-evaluates the model at stored draws and compares the
    observation: the Euler model in place of RK4, or another observation, is refused
    with the command that regenerates the file; the RK4 model as stored loads."""
    import references

    problem, sampler = references.ENTRIES["runaway_nuts"]
    assert references.load("runaway_nuts").shape == (1000, 3)
    model, args, obs, names = problem()
    for changed, match in (
        ((runaway_low, args, obs, names), "log density"),
        ((model, args, {"y": obs["y"] + 0.01}, names), "observation"),
    ):
        monkeypatch.setitem(references.ENTRIES, "runaway_nuts", (lambda c=changed: c, sampler))
        with pytest.raises(AssertionError, match=match) as err:
            references.load("runaway_nuts")
        assert "python tests/references.py runaway_nuts" in str(err.value)
