"""The tempered-SMC refinement engine (numpyro_mfdiff.refine._smc) and its tempering steps."""

import copy
import dataclasses
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from models import TINY, assert_wrong_answers_fail

from numpyro_mfdiff import MFDiff, _compiled, _refining, _samplers
from numpyro_mfdiff.refine import _refine, _sequential, _smc, _smc_start
from numpyro_mfdiff.refine._refinement import Refinement

D = 12
NOISE = 0.3
_rng = np.random.default_rng(0)
B = _rng.normal(size=(D, D)) / np.sqrt(D) + np.eye(D)
X_TRUE = B @ _rng.normal(size=D) + NOISE * _rng.normal(size=D)


def gaussian(x=None):
    """theta ~ N(0, I_12); x ~ N(B theta, 0.3^2 I_12): a conjugate posterior 3-10 times
    narrower than the prior, correlated."""
    theta = numpyro.sample("theta", dist.Normal(jnp.zeros(D), 1.0).to_event(1))
    numpyro.sample("x", dist.Normal(jnp.asarray(B, jnp.float32) @ theta, NOISE).to_event(1), obs=x)


def exact_posterior(x):
    cov = np.linalg.inv(np.eye(D) + B.T @ B / NOISE**2)
    return cov @ B.T @ np.asarray(x) / NOISE**2, cov


def target():
    bj, xj = jnp.asarray(B, jnp.float32), jnp.asarray(X_TRUE, jnp.float32)

    def loglik(th):
        return -0.5 * jnp.sum(((xj - bj @ th) / NOISE) ** 2)

    def logprior(th):
        return -0.5 * jnp.sum(th**2)

    return _smc.Target(loglik, logprior, True)


def draws_of(res, key, n=4000):
    """``n`` draws from the weighted particles of an :class:`SMCResult` (systematic)."""
    w = np.exp(res.log_w - res.log_w.max())
    idx = _sequential._resample(key, np.log(w), n)
    return res.theta[idx].astype(np.float64)


def agrees(draws, mean, sd, mean_tol=0.2, log_sd_tol=0.2):
    """RMS over the coordinates of the mean error (in posterior sds) below ``mean_tol``
    and of ``|log sd ratio|`` below ``log_sd_tol``."""
    d = np.asarray(draws, np.float64)
    m_err = np.sqrt(np.mean(((d.mean(0) - mean) / sd) ** 2))
    s_err = np.sqrt(np.mean(np.log(d.std(0) / sd) ** 2))
    return m_err < mean_tol and s_err < log_sd_tol


@pytest.fixture(scope="module")
def exact():
    mean, cov = exact_posterior(X_TRUE)
    draws = np.random.default_rng(1).multivariate_normal(mean, cov, 4000)
    prior = np.random.default_rng(2).normal(size=(4000, D))
    return mean, np.sqrt(np.diag(cov)), draws, prior


@pytest.fixture(scope="module", params=["hmc", "rmh"])
def smc_run(request):
    """SMC from the prior, 2 x 10^4 evaluations, HMC or random-walk moves."""
    budget = 20_000
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x0 = jax.random.normal(k1, (_smc.num_particles(budget, request.param), D))
    t = target()
    return request.param, budget, _smc.run(k2, t, t.logprior, x0, budget, move=request.param)


def test_smc_matches_the_conjugate_gaussian(smc_run, exact):
    """12-d conjugate Gaussian, SMC from the prior with 2 x 10^4 evaluations (120 HMC
    or 104 random-walk particles): RMS mean error 0.037-0.061 sd and RMS |log sd ratio|
    0.030-0.043 (HMC, waste-free), 0.067-0.151 and 0.054-0.083 (random walk) over keys
    0-3; bound 0.2 for both, which the prior, a 0.3-sd shift and the sd halved or
    doubled fail."""
    move, _, res = smc_run
    mean, sd, draws, prior = exact
    check = lambda d: agrees(d, mean, sd)  # noqa: E731
    assert_wrong_answers_fail(check, draws, prior)
    assert check(draws_of(res, jax.random.PRNGKey(5))), move


def test_smc_stages_and_budget(smc_run):
    """The temperatures rise to 1, every stage's evaluations are counted and within the
    budget, the weights are normalised, the move is the one asked."""
    move, budget, res = smc_run
    lams = [s.lam for s in res.stages]
    assert all(b >= a for a, b in zip(lams, lams[1:], strict=False)) and res.lam == 1.0
    n = res.stages[0].particles
    staged = sum(s.evaluations for s in res.stages)
    # the stages at 1 are pooled, but the first FINAL_BURN
    kept = max(sum(s.lam == 1.0 for s in res.stages) - _smc.FINAL_BURN, 1)
    assert res.theta.shape[0] == kept * n
    assert res.evaluations == staged + kept * n <= budget  # + their log-likelihoods
    assert len(res.stages) <= 1 + (budget - n) // _smc.stage_cost(move, n, adaptive=False)
    assert {s.move for s in res.stages[1:]} == {move}
    np.testing.assert_allclose(np.exp(res.log_w).sum(), 1.0, rtol=1e-5)
    # the first increment (before any move) has an ESS of TARGET_ESS of the particles
    np.testing.assert_allclose(res.stages[0].ess / n, _smc.TARGET_ESS, atol=0.01)


def _gaussian_q(mean, cov):
    """``(log_q, draw_q)`` of N(mean, cov) for :func:`_smc.run`."""
    chol = np.linalg.cholesky(cov)
    prop = _smc_start.Proposal(mean, chol, 0.0)
    return (
        lambda th: _smc_start.proposal_logpdf(prop, None, th),
        lambda key, m: _smc_start.proposal_sample(key, prop, None, m),
    )


def test_a_close_start_spends_the_budget_on_importance_sampling(exact):
    """From q = N(exact mean, 1.1^2 exact covariance) the first stage keeps an ESS above
    IS_ESS at temperature 1, so the whole budget goes to independent draws of q: one
    evaluation each, every stage ``"is"``. Keys 0-4: ESS 0.831-0.836 of the draws, RMS
    mean error 0.013-0.019 sd, RMS |log sd ratio| 0.010-0.014; bound 0.08 for both,
    which the four wrong answers fail. From the prior (ESS far below IS_ESS at 1) the
    same call tempers with moves instead."""
    mean, sd, draws, prior = exact
    t = target()
    cov = exact_posterior(X_TRUE)[1]
    log_q, draw_q = _gaussian_q(mean, 1.1**2 * cov)
    k1, k2 = jax.random.split(jax.random.PRNGKey(7))
    x0 = draw_q(k1, 100)
    res = _smc.run(k2, t, log_q, x0, 5_000, draw_q=draw_q)
    assert {s.move for s in res.stages} == {"is"} and res.lam == 1.0
    assert res.evaluations == res.theta.shape[0] == 5_000
    np.testing.assert_allclose(np.exp(res.log_w).sum(), 1.0, rtol=1e-6)
    assert res.stages[-1].ess > 0.6 * 5_000
    check = lambda d: agrees(d, mean, sd, 0.08, 0.08)  # noqa: E731
    assert_wrong_answers_fail(check, draws, prior)
    assert check(draws_of(res, jax.random.PRNGKey(5)))
    # from the prior: tempering with HMC moves, not importance sampling
    log_p, draw_p = _gaussian_q(np.zeros(D), np.eye(D))
    res = _smc.run(k2, t, log_p, draw_p(k1, 100), 5_000, draw_q=draw_p)
    assert res.stages[0].move == "none" and {s.move for s in res.stages[1:]} == {"hmc"}


def test_multi_fidelity_tempering_reaches_the_high_fidelity_posterior(exact):
    """The low-fidelity model's observation mean is off by 0.1 (a third of the noise)
    in every coordinate, which moves its posterior 0.2-0.5 sd. SMC on ``p L_low^g``
    (``g = LOW_POWER``) gives the start, whose stages are marked ``-low``; tempering
    ``p L_low^(g (1-l)) L_high^l`` then reaches the exact high-fidelity posterior within
    the budget of high-fidelity evaluations. Keys 8, 1, 2, 3 (g = 1/4): the start's RMS
    mean error 0.49-0.70 sd, the result's 0.055-0.074 sd and RMS |log sd ratio|
    0.030-0.079 (g = 1, keys 0-3: 0.019-0.063 and 0.045-0.063); bound 0.2 (as for SMC
    from the prior), which the four wrong answers fail (test above)."""
    mean, sd, draws, prior = exact
    high = target()
    bj, xj = jnp.asarray(B, jnp.float32), jnp.asarray(X_TRUE, jnp.float32)

    def loglik_low(th):
        return -0.5 * jnp.sum(((xj - bj @ th - 0.1) / NOISE) ** 2)

    low = _smc.Target(loglik_low, high.logprior, True)

    def prior_draw(keys):
        return jax.vmap(lambda k: jax.random.normal(k, (D,)))(keys)

    def low_draw(key, y, n):
        return np.asarray(jax.random.normal(key, (n, D)))

    s = dict(budget=10_000, inflation=1.5, prior_fraction=0.1)
    n = _smc.num_particles(s["budget"])
    k1, k2 = jax.random.split(jax.random.PRNGKey(8))
    x, log_q, stages = _smc_start._low_posterior(k1, low, X_TRUE, n, s, prior_draw, low_draw)
    assert x.shape == (n, D) and all(st.move.endswith("-low") for st in stages)
    res = _smc.run(k2, high, log_q, x, s["budget"])
    assert res.lam == 1.0 and res.evaluations <= s["budget"]
    assert {st.move for st in res.stages[1:]} == {"hmc"}
    check = lambda d: agrees(d, mean, sd)  # noqa: E731
    assert check(draws_of(res, jax.random.PRNGKey(5)))
    low_mean = np.linalg.solve(np.eye(D) + B.T @ B / NOISE**2, B.T @ (X_TRUE - 0.1) / NOISE**2)
    assert np.abs((low_mean - mean) / sd).max() > 0.2  # the start is not the answer


def _tempered_posterior(g):
    """Mean (D,) and sds (D,) of the exact ``p L^g`` of :func:`target`."""
    cov = np.linalg.inv(np.eye(D) + g * B.T @ B / NOISE**2)
    return cov @ B.T @ X_TRUE * g / NOISE**2, np.sqrt(np.diag(cov))


def test_a_tempered_low_fidelity_start_draws_p_l_to_the_power():
    """``_low_posterior(..., power=g)`` starts from ``p L_low^g``: its ``log q`` is
    ``log p + g log L_low`` and its particles draw the exact tempered posterior (here
    the conjugate Gaussian, g = 1/4, 200 particles, 4 x 10^3 low-fidelity evaluations).
    Keys 0-2: RMS mean error 0.05-0.11 sd and RMS |log sd ratio| 0.09-0.10 against the
    exact ``p L^(1/4)``; bound 0.2, which the exact draws of g = 1 and g = 1/16 fail
    (and the same SMC with those powers: 0.41-0.51 sd, 0.25-0.48), as do the four
    wrong answers."""
    t = target()
    g = 0.25
    mean, sd = _tempered_posterior(g)
    draws = np.random.default_rng(1).normal(mean, sd, (4000, D))
    check = lambda d: agrees(d, mean, sd)  # noqa: E731
    assert_wrong_answers_fail(check, draws, np.random.default_rng(2).normal(size=(4000, D)))
    for wrong in (1.0, 1 / 16):  # another power's exact draws fail the bound
        m, s = _tempered_posterior(wrong)
        assert not check(np.random.default_rng(3).normal(m, s, (4000, D))), wrong

    def prior_draw(keys):
        return jax.vmap(lambda k: jax.random.normal(k, (D,)))(keys)

    def low_draw(key, y, n):
        return np.asarray(jax.random.normal(key, (n, D)))

    s, n = dict(budget=4_000, inflation=1.5, prior_fraction=0.1), 200
    x, log_q, stages = _smc_start._low_posterior(
        jax.random.PRNGKey(0), t, X_TRUE, n, s, prior_draw, low_draw, power=g
    )
    assert x.shape == (n, D) and all(st.move.endswith("-low") for st in stages)
    th = jnp.asarray(x[0])
    np.testing.assert_allclose(log_q(th), t.logprior(th) + g * t.loglik(th), rtol=1e-5)
    assert check(np.asarray(x, np.float64))


def test_first_increment_hits_the_target_ess():
    """From exact prior draws of a known Gaussian, the first increment's weights have an
    ESS of TARGET_ESS of the particles and sum to 1."""
    t = target()
    x = jax.random.normal(jax.random.PRNGKey(3), (500, D))
    delta_fn, _ = _smc._kernels(t.logprior, t.loglik, "hmc", 500)
    state = _smc._first_stage(x, 0.0, delta_fn)
    w = np.asarray(state.weights, np.float64)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(w.sum() ** 2 / (w**2).sum() / 500, _smc.TARGET_ESS, atol=0.01)
    assert 0.0 < float(state.tempering_param) < 1.0


def test_sequential_next_temperature_hits_the_conditional_ess():
    """The importance-sampling engine's tempering: on prior draws of a known Gaussian,
    the next temperature's conditional ESS is CESS_TARGET; a flat likelihood goes to 1."""
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(4), (1000, D)))
    ll = np.asarray(jax.vmap(target().loglik)(jnp.asarray(x)), np.float64)
    pool = _sequential.init(x, ll, -0.5 * np.sum(x**2, 1))
    lam = _sequential.next_temperature(pool, ess_floor=2000.0)  # floor above n: CESS rules
    assert 0.0 < lam < 1.0
    u = np.exp(lam * (ll - ll.max()))
    np.testing.assert_allclose(u.sum() ** 2 / (u**2).sum() / 1000, _sequential.CESS_TARGET, 1e-3)
    flat = _sequential.init(x, np.zeros(1000), -0.5 * np.sum(x**2, 1))
    assert _sequential.next_temperature(flat, ess_floor=10.0) == 1.0


def test_the_laplace_start_needs_only_reverse_mode():
    """A likelihood that JAX differentiates in reverse mode only (a ``custom_vjp``, as
    diffrax's adjoint of an adaptive solve: ``lorenz63_high`` raised a TypeError here):
    the Laplace start's Hessian by central differences of the gradient, on a linear
    Gaussian model where it is exact: the posterior's mean and covariance."""
    a = np.array([[1.0, 0.5], [0.0, 2.0], [0.3, -1.0]], np.float32)
    y, s = np.array([0.5, 1.0, -0.2], np.float32), 0.5

    @jax.custom_vjp
    def forward(theta):
        return a @ theta

    @jax.custom_vjp
    def adjoint(g):  # the backward pass is a custom_vjp too, as diffrax's is
        return a.T @ g

    forward.defvjp(lambda th: (a @ th, None), lambda _, g: (adjoint(g),))
    adjoint.defvjp(lambda g: (a.T @ g, None), lambda _, h: (a @ h,))

    def loglik(th):
        return jnp.sum(jax.scipy.stats.norm.logpdf(y, forward(th), s))

    def logprior(th):
        return jnp.sum(jax.scipy.stats.norm.logpdf(th))

    with pytest.raises(TypeError, match="jvp"):  # forward mode really is undefined
        jax.hessian(loglik)(jnp.zeros(2))
    target = _smc.Target(loglik, logprior, True)
    prop, evaluations = _smc_start.laplace_proposal(target, np.zeros(2), 1.0, 0.0)
    cov = np.linalg.inv(np.eye(2) + a.T @ a / s**2)
    np.testing.assert_allclose(prop.mean, cov @ a.T @ y / s**2, atol=1e-4)
    np.testing.assert_allclose(prop.chol @ prop.chol.T, cov, rtol=1e-3, atol=1e-6)
    h, n = _smc_start.hessian(lambda th: -(loglik(th) + logprior(th)), prop.mean)
    assert n == 4 and evaluations > n
    # the same Hessian as forward over reverse of the plain (no custom_vjp) function
    plain = jax.hessian(lambda th: -jnp.sum(jax.scipy.stats.norm.logpdf(y, a @ th, s)))
    np.testing.assert_allclose(h, np.asarray(plain(jnp.zeros(2))) + np.eye(2), rtol=1e-4)


def test_choose_engine():
    assert _smc.choose_engine("auto", _smc.SMC_MIN_DIM) == "is"
    assert _smc.choose_engine("auto", _smc.SMC_MIN_DIM + 1) == "smc"
    assert _smc.choose_engine("is", 50) == "is"


def _probe(inf, obs, budget=1_000, stage=None):
    """``_smc_start.probe_start`` on a built ``inf`` at ``obs`` with a budget (and stage)."""
    cfg, st = inf.config, inf.state
    y = _compiled.check(cfg, st, obs, warn=False, sampler="refine")
    log_prior, prior_draw = _compiled.prior(st)
    s = _refining.RefineSettings(max_simulations=budget, num_labels=256, train_steps=20)
    s = s.replace(num_simulations=stage)
    low_draw = partial(_samplers.low_draw, cfg, st)
    key = jax.random.PRNGKey(1)
    high = _refining.high_fidelity(st)
    return _smc_start.probe_start(key, y, high, log_prior, prior_draw, low_draw, s.plan(cfg))


def test_the_start_decides_the_low_dimensional_engine(linear_gaussian_small, quadratic_small):
    """The probe of ``engine="auto"`` below ``SMC_MIN_DIM``: on the linear Gaussian the
    Laplace start keeps most of its draws (importance sampling from it spends the whole
    budget: every stage ``"is"``); on the bimodal quadratic ``G_low``'s draws spread over
    both modes, far wider than the start around one: the KDE engine, only the Laplace
    search spent; by the ESS alone the same (below a fifth of its 100 draws), the draws
    handed to the KDE engine (a one-kernel proposal, the prior's share last)."""
    res = _probe(linear_gaussian_small, {"x": np.array([0.8, -0.4, 1.1, 0.3])})
    assert isinstance(res, _smc.SMCResult) and {st.move for st in res.stages} == {"is"}
    assert res.stages[0].ess > _smc.IS_ESS * res.stages[0].particles
    assert res.evaluations <= 1_000 and res.theta.shape[0] > 900
    probe = _probe(quadratic_small, {"y": 1.0})  # G_low's draws on both modes: no draws
    assert isinstance(probe, _smc_start.Probe) and probe.theta.shape == (0, 1)
    assert probe.info.simulations > 0 and probe.info.ess == 0.0  # the Laplace search
    with pytest.MonkeyPatch.context() as mp:  # the ESS alone
        mp.setattr(_smc_start, "SPREAD", np.inf)
        probe = _probe(quadratic_small, {"y": 1.0})
    assert isinstance(probe, _smc_start.Probe) and probe.info.ess < 0.2 * 100
    assert probe.theta.shape == (100, 1) and probe.n_prior == 10
    assert probe.kde.centers.shape == (1, 1) and probe.info.simulations > 100


def test_a_one_stage_budget_is_probed_with_a_quarter(linear_gaussian_small):
    """``refine(num_simulations=B)`` is one stage of the whole budget (the runaway
    test's): the probe draws a quarter of it, not a stage, and importance sampling from
    the start spends the rest; below ``4 PROBE_MIN`` there is no probe."""
    x = {"x": np.array([0.8, -0.4, 1.1, 0.3])}
    res = _probe(linear_gaussian_small, x, budget=400, stage=400)
    assert isinstance(res, _smc.SMCResult) and res.stages[0].particles == 100
    assert res.evaluations <= 400 and res.theta.shape[0] > 300
    low = 4 * _smc_start.PROBE_MIN - 1
    assert _probe(linear_gaussian_small, x, budget=low, stage=low) is None


@pytest.mark.cheap  # its time goes to compiling (tests/conftest.py)
@pytest.mark.slow
def test_auto_engine_by_the_start(linear_gaussian_small, quadratic_small):
    """Through the API (slow: the KDE engine's stages and two G_high fits), ``engine="auto"``
    below ``SMC_MIN_DIM``: on the linear Gaussian (3 coordinates, a
    Gaussian posterior: the Laplace start is all but exact) importance sampling from that
    start (record ``"smc"``, every stage ``"is"``, the first's ESS above half its draws);
    on the bimodal quadratic (the start finds one mode, ``G_low``'s draws spread over
    both) the KDE engine, its first round the start's draws at temperature 1."""
    from models import linear_gaussian_posterior, stack_linear

    x = {"x": np.array([0.8, -0.4, 1.1, 0.3])}
    lin, quad = copy.deepcopy(linear_gaussian_small), copy.deepcopy(quadratic_small)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # G_high's fit check at SMALL budgets
        fit = dict(max_simulations=1_000, num_labels=256, train_steps=20)
        lin.refine(jax.random.PRNGKey(1), x, **fit)
        quad.refine(jax.random.PRNGKey(1), {"y": 1.0}, **fit)
    rec = next(iter(lin.diagnostics["refinements"].values()))
    assert rec["engine"] == "smc" and {r["move"] for r in rec["rounds"]} == {"is"}
    assert rec["rounds"][0]["ess"] > 0.5 * rec["rounds"][0]["particles"]
    assert rec["num_high_fidelity_simulations"] <= 1_000 and rec["ess_after"] > 500
    mean, cov = linear_gaussian_posterior(x["x"])
    ode = stack_linear(lin.sample_ode(jax.random.PRNGKey(2), x, 1000))
    assert np.max(np.abs(ode.mean(0) - mean) / np.sqrt(np.diag(cov))) < 0.2
    rec = next(iter(quad.diagnostics["refinements"].values()))
    assert rec["engine"] == "is" and rec["rounds"][0]["lam"] == 1.0
    assert rec["num_high_fidelity_simulations"] == 1_000 and rec["num_rounds"] > 2


@pytest.fixture(scope="module")
def low():
    return MFDiff(gaussian, num_simulations=1000, **TINY).run(jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def smc_refined(low):
    inf = copy.deepcopy(low)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # G_high's fit check at TINY budgets
        return inf.refine(jax.random.PRNGKey(1), {"x": X_TRUE}, max_simulations=20_000)


def test_refine_picks_smc_and_counts_evaluations(smc_refined, exact):
    """Through the API: 12 latent coordinates -> SMC; the evaluations recorded are the
    stages' plus the final log-likelihoods, within the budget; the refined ODE's 1,000
    draws agree with the exact posterior: RMS mean error and RMS |log sd ratio| below
    0.1, where a 0.3-sd shift, halved or doubled sds and prior draws fail. Measured over
    refine keys 1 (this test's), 11, 21, 31 and draw keys 2 (this test's) and 12
    (2026-12-07, ``/tmp/s11/smcspread.py``): 0.028-0.034 sd and 0.023-0.040 with 1,000
    draws (4,000, the former count and 6 s more: 0.011-0.021 and 0.022-0.037)."""
    rec = next(iter(smc_refined.diagnostics["refinements"].values()))
    assert rec["engine"] == "smc" and rec["temperature"] == 1.0
    spent = rec["num_high_fidelity_simulations"]
    staged = sum(r["evaluations"] for r in rec["rounds"])
    assert staged < spent <= 20_000
    assert {"lam", "ess", "acceptance", "step_size", "evaluations"} <= set(rec["rounds"][-1])
    mean, sd, _, _ = exact
    ode = smc_refined.sample_ode(jax.random.PRNGKey(2), {"x": X_TRUE}, 1000)["theta"]
    assert agrees(ode, mean, sd, mean_tol=0.1, log_sd_tol=0.1)


def test_smc_refinement_saves_and_loads(smc_refined, tmp_path):
    smc_refined.save(tmp_path / "smc.npz")
    back = MFDiff.load(tmp_path / "smc.npz", gaussian)
    k = jax.random.PRNGKey(8)
    a = back.sample_ode(k, {"x": X_TRUE}, 100)["theta"]
    np.testing.assert_array_equal(a, smc_refined.sample_ode(k, {"x": X_TRUE}, 100)["theta"])
    rec = next(iter(back.diagnostics["refinements"].values()))
    assert rec["engine"] == "smc"
    ref = next(iter(back._state.refinements.values()))
    assert ref.engine == "smc" and type(ref.rounds[-1].stage) is _smc.StageInfo


def test_a_continuation_pools_the_record_with_its_new_particles(smc_refined, exact):
    """``refine`` again on an observation refined by SMC: the new particles (HMC moves
    from the record's, resampled) join the record's, each pool weighted by its share of
    the summed ESS, so the pooled ESS is the sum and the record is never thrown away
    (on Lorenz 63 the new pool alone was 0.22 sd off where the record was 0.023). The
    pooled ODE's 1,000 draws agree with the exact posterior to 0.1 (as above; measured
    after refines with keys 1/5, 11/15, 21/25, 31/35 and draw keys 2 and 12: RMS mean
    error 0.027-0.036 sd, RMS |log sd ratio| 0.024-0.043, ``/tmp/s11/smcspread.py``)."""
    inf = copy.deepcopy(smc_refined)
    before = next(iter(inf.state.refinements.values()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # G_high's fit check at TINY budgets
        inf.refine(jax.random.PRNGKey(5), {"x": X_TRUE}, max_simulations=6_000)
    after = next(iter(inf.state.refinements.values()))
    n = before.theta.shape[0]
    np.testing.assert_array_equal(after.theta[:n], before.theta)
    assert after.theta.shape[0] > n and after.engine == "smc"
    new_ess = _sequential.ess(after.log_w[n:])
    assert after.ess == pytest.approx(before.ess + new_ess, rel=1e-3) and new_ess > 100
    # the record's share of the weight is its share of the ESS
    share = np.exp(np.logaddexp.reduce(after.log_w[:n]) - np.logaddexp.reduce(after.log_w))
    assert share == pytest.approx(before.ess / after.ess, rel=1e-3)
    mean, sd, _, _ = exact
    ode = inf.sample_ode(jax.random.PRNGKey(2), {"x": X_TRUE}, 1000)["theta"]
    assert agrees(ode, mean, sd, mean_tol=0.1, log_sd_tol=0.1)


def test_engine_errors(low):
    with pytest.raises(ValueError, match="engine must be one of"):
        low.refine(jax.random.PRNGKey(1), {"x": X_TRUE}, engine="nuts")
    with pytest.raises(ValueError, match="below one SMC stage"):
        low.refine(jax.random.PRNGKey(1), {"x": X_TRUE}, max_simulations=300, engine="smc")


def test_is_cannot_continue_smc(smc_refined):
    with pytest.raises(ValueError, match="cannot continue a refinement made by SMC"):
        smc_refined.refine(jax.random.PRNGKey(3), {"x": X_TRUE}, engine="is")


def test_warns_when_target_ess_is_not_reached():
    """A refinement that stops below ``target_ess`` (or short of temperature 1) warns
    about it; one that reaches it does not; SMC short of temperature 1 always warns."""
    y, theta = np.zeros(2, np.float32), np.zeros((10, 2), np.float32)
    log_w = np.log(np.r_[[0.9], np.full(9, 0.1 / 9)])  # ESS about 1.2
    ref = Refinement(y, theta, np.zeros(10), np.zeros(10), log_w=log_w, lam=1.0)
    with pytest.warns(UserWarning, match="without reaching target_ess=5"):
        _refine._warn_short(ref, 0.0, 5.0)
    with pytest.warns(UserWarning, match="temperature 0.5"):
        _refine._warn_short(dataclasses.replace(ref, log_w=np.zeros(10), lam=0.5), 0.0, 5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _refine._warn_short(dataclasses.replace(ref, log_w=np.zeros(10)), 0.0, 5.0)
        # importance sampling weights at temperature 1 whatever its proposals' temperature
        _refine._warn_short(dataclasses.replace(ref, log_w=np.zeros(10), lam=0.5), 0.0, None)
    # SMC's particles short of temperature 1 are not the posterior, whatever their ESS
    smc_short = dataclasses.replace(ref, log_w=np.zeros(10), lam=0.5, engine="smc")
    with pytest.warns(UserWarning, match="its particles are not the posterior"):
        _refine._warn_short(smc_short, 0.0, None)


@pytest.mark.slow
def test_smc_varying_intercepts_against_nuts():
    """16 groups of 5 points (18 latent coordinates, non-centred by ``reparam="auto"``),
    10^4 prior simulations then 3 x 10^4 evaluations of SMC, against NumPyro NUTS
    (2 x 2,000 draws, non-centred): every mean within 0.2 posterior sd and every sd
    ratio in 0.85-1.2 (the refined ODE); a 0.3-sd shift or the sd halved or doubled
    fails the same bound. Measured at refine keys 2 (this test's), 12, 22: largest mean
    error 0.069, 0.047, 0.106 sd, sd ratios 0.95-1.12, 0.95-1.08, 0.93-1.09. The same
    key lands elsewhere when the compiled programs round differently (it failed the
    former 1.15 once in the suite), hence the margin. G_high (calibrated onto its ODE
    labels' moments in the centred coordinates of the non-centred ``alpha`` too) is held
    to the same bound: key 2, 0.075 sd and 0.97-1.15 (2026-12-06, one core; the ODE it
    copies 0.96-1.13 there; before the centred calibration 0.98-1.16; calibrated onto the
    particles' moments instead, 0.94-1.09). With the smoothing checked in the centred
    coordinates (``_smoothing``: h 0.5 -> 0.4 at key 2, kept at keys 12 and 22): key 2
    ODE 0.067 sd, 0.96-1.11 and G_high 0.071 sd, 0.97-1.12; keys 12 / 22 G_high 0.052 /
    0.044 sd, 0.95-1.08 / 0.92-1.10 (2026-12-06, one core, default compile settings).
    (J = 32 with 5 x 10^4 evaluations in bench_dimension: mean error 0.05-0.06 sd, sd
    ratios 0.93-1.11 over four seeds.) The NUTS draws are stored (``tests/references.py``,
    made by the call this test used to make: 27 s of its 81 s)."""
    import references

    varying_intercepts, (group,), obs, _ = references.varying_intercepts()
    y = obs["y"]
    ref = references.load("varying_intercepts_nuts")  # NUTS, stored: tests/references.py
    inf = MFDiff(varying_intercepts, 10_000, num_labels=4_000, train_steps=2_000)
    inf.run(jax.random.PRNGKey(1), group)
    inf.refine(jax.random.PRNGKey(2), {"y": y}, max_simulations=30_000)
    assert next(iter(inf.diagnostics["refinements"].values()))["engine"] == "smc"
    d = inf.sample_ode(jax.random.PRNGKey(3), {"y": y}, 8_000)
    draws = np.column_stack([d["mu"], d["tau"], d["alpha"]])
    m, sd = ref.mean(0), ref.std(0)

    def within(x, tol, lo, hi):
        ratio = x.std(0) / sd
        return np.max(np.abs(x.mean(0) - m) / sd) < tol and lo < ratio.min() <= ratio.max() < hi

    check = partial(within, tol=0.2, lo=0.85, hi=1.2)  # the ODE and G_high
    assert_wrong_answers_fail(check, ref, ref + 3.0 * sd)
    g = inf.get_samples(jax.random.PRNGKey(3), {"y": y}, 8_000)
    for x in (draws, np.column_stack([g["mu"], g["tau"], g["alpha"]])):
        ratio = x.std(0) / sd
        err = np.max(np.abs(x.mean(0) - m) / sd)
        assert check(x), f"mean error {err:.3f} sd, sd ratios {ratio.min():.2f}-{ratio.max():.2f}"


def test_an_unknown_start_is_refused_before_simulating(linear_gaussian_small):
    """The SMC start is a setting of the refinement (``"start"``, default
    ``"proposal"``), not a module switch: an unknown one is a ``ValueError`` naming the
    choices, raised before any simulation."""
    inf = linear_gaussian_small
    cfg, st = inf.config, inf.state
    obs = {"x": np.array([0.8, -0.4, 0.3, 1.0])}
    y = _compiled.check(cfg, st, obs, warn=False, sampler="refine")
    s = _refining.RefineSettings(max_simulations=2_000, engine="smc").plan(cfg)
    high = _refining.high_fidelity(st)
    with pytest.raises(ValueError, match=r"start must be one of \('proposal', 'low', 'prior'\)"):
        _refining.refine_observation(
            cfg, st, jax.random.PRNGKey(0), y, {**s, "start": "nope"}, high, _samplers.low_draw
        )
    assert not inf.state.refinements  # the session's build is left as it was


def _funnel_points(n, coupled):
    """``n`` equally weighted points of the 16-group varying-intercepts model in its
    non-centred coordinates (``mu``, ``log tau``, ``eta_j``), and its centring: ``eta_j``
    of sd ``1 / sqrt(1 + 4 tau^2)`` given ``tau`` (data that pin ``alpha_j = mu + tau
    eta_j`` where ``tau`` is large; ``coupled``) or independent standard normals."""
    from jax.flatten_util import ravel_pytree
    from models import varying_intercepts, varying_intercepts_data

    from numpyro_mfdiff import _model

    group, _ = varying_intercepts_data()
    sites = _model.auto_reparam_sites(varying_intercepts, (group,), observed=["y"])
    inner = _model.reparam_model(varying_intercepts, sites)
    spec = _model.inspect_model(inner, (group,), observed_sites=["y"])
    cm = _model.centring(varying_intercepts, spec, (group,), None, sites)
    rng = np.random.default_rng(0)
    log_tau = rng.normal(0.0, 0.5, n)
    sd = 1.0 / np.sqrt(1.0 + 4.0 * np.exp(2 * log_tau)) if coupled else np.ones(n)
    parts = {"alpha_decentered": rng.normal(size=(n, 16)) * sd[:, None]}
    parts |= {"mu": rng.normal(1.0, 0.3, n), "tau": log_tau}
    u = jax.vmap(lambda p: ravel_pytree(p)[0])(jax.tree.map(jnp.asarray, parts))
    return np.asarray(u, np.float32), np.zeros(n), cm


def test_smoothing_narrowed_where_it_widens_centred_sites():
    """The refined ODE's end-point kernel is Gaussian in the whitened non-centred
    coordinates ``u`` (Liu-West shrinkage: their mean and covariance kept) and mixes
    ``tau`` and ``eta`` across points: on points whose ``eta`` narrows as ``tau`` grows,
    ``h = 0.5`` widens some ``alpha_j = mu + tau eta_j`` by over 10%, and the bandwidth
    ``refine`` keeps (``_smoothing.centred_bandwidth``) widens none by more than
    ``SMOOTH_WIDEN`` (5%), checked on other noise; points Gaussian in ``u`` (which the
    kernel keeps exactly) and a model without centring keep ``h``. Measured on eight
    schools (bench_sbi, seed 0): the refined ODE at h = 0.47, 0.25, 0.15 had ``theta_j``
    sds 1.08-1.17, 1.01-1.06, 1.00-1.03 of NUTS's (the particles' 0.98-1.01)."""
    from numpyro_mfdiff.refine import _smoothing

    k_h, k_check = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
    theta, log_w, cm = _funnel_points(4000, coupled=True)
    assert _smoothing.centred_widening(k_check, theta, log_w, 0.5, cm) > 0.1
    h = _smoothing.centred_bandwidth(k_h, theta, log_w, 0.5, cm)
    assert 0.0 < h < 0.5
    assert _smoothing.centred_widening(k_check, theta, log_w, h, cm) < 1.2 * _smoothing.SMOOTH_WIDEN
    assert _smoothing.centred_bandwidth(k_h, theta, log_w, 0.5, None) == 0.5
    theta, log_w, cm = _funnel_points(4000, coupled=False)
    assert _smoothing.centred_bandwidth(k_h, theta, log_w, 0.5, cm) == 0.5
