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
