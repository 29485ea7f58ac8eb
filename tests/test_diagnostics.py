"""Calibration diagnostics: SBC, coverage, TARP and the misspecification score.

The array-level functions are checked on a conjugate Gaussian with an exact
posterior sampler (no training): the exact sampler passes, samplers shifted
by 0.5 posterior sd, with the sd halved or doubled fail, at fixed keys. The
wrappers are checked on the quadratic example with a small ``G_low``.
"""

import threading

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from numpyro_mfdiff import MFDiff, external_simulator
from numpyro_mfdiff import diagnostics as dg
from numpyro_mfdiff.examples import quadratic, quadratic_coarse

matplotlib.use("Agg")

B, S, D = 500, 100, 2  # datasets, draws per dataset, dimension
SIGMA = 0.5  # theta ~ N(0, I_D), y ~ N(theta, SIGMA^2 I_D)
POST_SD = SIGMA / np.sqrt(1 + SIGMA**2)
WRONG = {"shifted": (0.5, 1.0), "sd halved": (0.0, 0.5), "sd doubled": (0.0, 2.0)}


def gaussian_draws(key, shift=0.0, scale=1.0, num_datasets=B, num_samples=S):
    """Truths from the prior and draws from the exact posterior, moved by ``shift``
    posterior sds and scaled by ``scale`` about its mean: ((B, S, D), (B, D), log density)."""
    k_theta, k_y, k_z = jax.random.split(key, 3)
    theta = jax.random.normal(k_theta, (num_datasets, D))
    y = theta + SIGMA * jax.random.normal(k_y, theta.shape)
    mean = y / (1 + SIGMA**2)
    z = jax.random.normal(k_z, (num_datasets, num_samples, D))
    samples = mean[:, None, :] + POST_SD * (shift + scale * z)

    def log_density(x):  # exact posterior, up to a constant per dataset
        return -0.5 * jnp.sum(((x - mean[:, None, :]) / POST_SD) ** 2, axis=-1)

    return samples, theta, log_density


@pytest.fixture(scope="module")
def exact():
    return gaussian_draws(jax.random.PRNGKey(0))


def test_ranks_count_the_draws_below_the_truth():
    samples = jnp.array([[[0.1], [0.5], [0.9]], [[2.0], [3.0], [1.0]]])
    r = dg.ranks(samples, jnp.array([[0.6], [0.0]]))
    np.testing.assert_array_equal(r, [[2], [0]])
    assert r.dtype == jnp.int32


def test_sbc_passes_the_exact_sampler_and_fails_wrong_ones(exact):
    samples, theta, _ = exact
    key = jax.random.PRNGKey(1)
    ok = dg.sbc_from_samples(samples, theta, key)
    assert ok.ranks.shape == (B, D) and ok.ecdf_pvalue.shape == (D,)
    # measured at these keys: ECDF p 0.45 / 0.99, chi-square p 0.84 / 0.96
    assert np.all(ok.ecdf_pvalue > 0.05) and np.all(ok.chi2_pvalue > 0.05)
    ecdf = ok.ecdf()
    assert np.all((ecdf >= ok.lower[:, None]) & (ecdf <= ok.upper[:, None]))
    for name, (shift, scale) in WRONG.items():
        bad = dg.sbc_from_samples(*gaussian_draws(jax.random.PRNGKey(0), shift, scale)[:2], key)
        # the smallest p-value 1000 trials can give, 1 / 1001, in every coordinate
        assert np.all(bad.ecdf_pvalue < 0.002), (name, bad.ecdf_pvalue)
        assert np.all(bad.chi2_pvalue < 1e-6), (name, bad.chi2_pvalue)
        assert np.any((bad.ecdf() < bad.lower[:, None]) | (bad.ecdf() > bad.upper[:, None]))


def test_simultaneous_band_holds_its_probability():
    """The band of probability 0.95 holds the ECDF of uniform ranks in about 95% of
    independent sets (here 200 sets of 200 ranks)."""
    key = jax.random.PRNGKey(2)
    band = dg.sbc_from_samples(jnp.zeros((200, 19, 1)), jnp.zeros((200, 1)), key, num_trials=2000)
    sets = np.asarray(jax.random.randint(jax.random.PRNGKey(3), (200, 200), 0, 20))
    k = np.round(band.points * 20).astype(int) - 1
    ecdf = (sets[:, :, None] <= k).mean(axis=1)  # (sets, K)
    inside = np.all((ecdf >= band.lower) & (ecdf <= band.upper), axis=1).mean()
    assert 0.9 <= inside <= 0.99, inside  # measured 0.945


def test_coverage_of_the_exact_sampler_is_nominal(exact):
    samples, theta, log_density = exact
    c = dg.coverage_from_samples(samples, theta)
    assert c.central.shape == (19, D) and c.hdr.shape == (19,)
    # central intervals: within 3.5 binomial standard errors at each of the 19 (correlated)
    # levels; measured at most 3.1 (at 0.95: 0.928 and 0.949)
    assert np.all(np.abs(c.central - c.levels[:, None]) < 3.5 * c.stderr[:, None])
    # exact highest-density regions from the true log density, truth first
    logp = np.concatenate(
        [log_density(theta[:, None, :]), log_density(samples)], axis=1
    )  # (B, S + 1)
    exact_hdr = dg.coverage_from_samples(samples, theta, density=logp).hdr
    assert np.all(np.abs(exact_hdr - c.levels) < 3.5 * c.stderr)  # measured at most 3.1
    # estimated from the draws: noisier, within 0.05 (measured at most 0.04)
    for density in ("knn", "kde"):
        h = dg.coverage_from_samples(samples, theta, density=density).hdr
        assert np.max(np.abs(h - c.levels)) < 0.05, (density, h)


def test_coverage_of_wrong_samplers_departs_from_nominal():
    samples, theta, _ = gaussian_draws(jax.random.PRNGKey(0), 0.0, 0.5)
    narrow = dg.coverage_from_samples(samples, theta, [0.5, 0.9])
    # measured: central 0.24-0.25 and 0.57-0.58, highest density 0.19 and 0.47
    assert np.all(narrow.central < [[0.35], [0.7]]) and np.all(narrow.hdr < [0.3, 0.7])
    samples, theta, _ = gaussian_draws(jax.random.PRNGKey(0), 0.0, 2.0)
    wide = dg.coverage_from_samples(samples, theta, [0.5, 0.9])
    # measured: central 0.80 and 1.0, highest density 0.83 and 1.0
    assert np.all(wide.central > [[0.65], [0.98]]) and np.all(wide.hdr > [0.8, 0.98])


def test_tarp_is_diagonal_for_the_exact_sampler_and_not_for_wrong_ones(exact):
    samples, theta, _ = exact
    key = jax.random.PRNGKey(4)
    for references in ("prior", "box"):
        ok = dg.tarp_from_samples(samples, theta, key, references=references)
        # measured: ATC 0.006 / 0.012, KS p 0.57 / 0.26, largest gap 0.028 / 0.040
        assert abs(ok.atc) < 0.02 and ok.ks_pvalue > 0.05, (references, ok.atc, ok.ks_pvalue)
        assert np.max(np.abs(ok.ecp - ok.alpha)) < 0.06
    narrow = dg.tarp_from_samples(*gaussian_draws(jax.random.PRNGKey(0), 0.0, 0.5)[:2], key)
    wide = dg.tarp_from_samples(*gaussian_draws(jax.random.PRNGKey(0), 0.0, 2.0)[:2], key)
    # measured: ATC -0.068 and +0.085, KS p 6e-18 and 5e-29 (the 0.5 sd shift is nearly
    # invisible to TARP here, KS p 0.20, where SBC rejects it with p < 1e-17)
    assert narrow.atc < -0.04 and narrow.ks_pvalue < 1e-6
    assert wide.atc > 0.04 and wide.ks_pvalue < 1e-6
    assert np.max(np.abs(wide.ecp - wide.alpha)) > 0.2


def test_same_key_same_result_and_datasets(exact):
    samples, theta, _ = exact
    a = dg.sbc_from_samples(samples, theta, jax.random.PRNGKey(5), names=["a", "b"])
    b = dg.sbc_from_samples(samples, theta, jax.random.PRNGKey(5), names=["a", "b"])
    np.testing.assert_array_equal(a.ecdf_pvalue, b.ecdf_pvalue)
    np.testing.assert_array_equal(a.lower, b.lower)
    ds = a.to_dataset()
    assert ds["ranks"].dims == ("dataset", "coordinate")
    assert list(ds["coordinate"].values) == ["a", "b"]
    assert ds["ecdf"].shape == (a.points.size, 2)
    t1 = dg.tarp_from_samples(samples, theta, jax.random.PRNGKey(6))
    t2 = dg.tarp_from_samples(samples, theta, jax.random.PRNGKey(6))
    np.testing.assert_array_equal(t1.ecp, t2.ecp)
    assert t1.to_dataset().attrs["atc"] == t1.atc
    cov = dg.coverage_from_samples(samples, theta).to_dataset()
    assert cov["central"].dims == ("level", "coordinate")


def test_bad_inputs_name_the_argument(exact):
    samples, theta, _ = exact
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="samples .* and truth .* disagree"):
        dg.sbc_from_samples(samples, theta[:, :1], key)
    with pytest.raises(ValueError, match="samples contains NaN"):
        dg.coverage_from_samples(samples.at[0, 0, 0].set(jnp.nan), theta)
    with pytest.raises(ValueError, match="prob must be"):
        dg.sbc_from_samples(samples, theta, key, prob=1.0)
    with pytest.raises(ValueError, match="bins must be at most"):
        dg.sbc_from_samples(samples, theta, key, bins=500)
    with pytest.raises(ValueError, match="levels must be"):
        dg.coverage_from_samples(samples, theta, [0.5, 1.5])
    with pytest.raises(ValueError, match="density must be"):
        dg.coverage_from_samples(samples, theta, density="gaussian")
    with pytest.raises(ValueError, match=r"density as an array .* \(500, 101\)"):
        dg.coverage_from_samples(samples, theta, density=np.zeros((B, S)))
    with pytest.raises(ValueError, match="references must be"):
        dg.tarp_from_samples(samples, theta, key, references="uniform")
    with pytest.raises(ValueError, match="names must have 2 entries"):
        dg.sbc_from_samples(samples, theta, key, names=["a"])


def test_plots_return_axes(exact):
    import matplotlib.pyplot as plt

    samples, theta, _ = exact
    axes = dg.plot_sbc_ecdf(dg.sbc_from_samples(samples, theta, jax.random.PRNGKey(0)))
    assert len(axes) == D and axes[0].get_title().startswith("theta[0]: p = ")
    ax = dg.plot_coverage(dg.coverage_from_samples(samples, theta))
    assert ax.get_xlabel() == "nominal coverage"
    ax = dg.plot_tarp(dg.tarp_from_samples(samples, theta, jax.random.PRNGKey(0)))
    assert ax.get_ylabel() == "expected coverage"
    plt.close("all")


# ----------------------------------------------------------------------------- MFDiff

# the tutorials' fast budget: a G_low calibrated enough for SBC on 300 datasets
FAST = dict(num_labels=1000, train_steps=500, batch_size=256, progress_bar=False)


@pytest.fixture(scope="module")
def quad(quadratic_small):
    """The session's small quadratic build (``conftest.quadratic_small``)."""
    return quadratic_small


def test_posterior_draws_shapes_and_keys(quad):
    d = dg.posterior_draws(quad, jax.random.PRNGKey(1), 50, 20)
    assert d.theta.shape == (50, 1) and d.y.shape == (50, 1) and d.samples.shape == (50, 20, 1)
    assert d.names == ("theta",)
    # the datasets follow the model: y = theta^2 + N(0, 0.1^2) at the constrained theta
    t = 4.0 * jax.nn.sigmoid(d.theta[:, 0]) - 2.0
    assert np.std(np.asarray(d.y[:, 0] - t**2)) < 0.15
    again = dg.posterior_draws(quad, jax.random.PRNGKey(1), 50, 20)
    np.testing.assert_array_equal(d.samples, again.samples)
    with pytest.raises(ValueError, match="num_datasets must be an integer >= 2"):
        dg.sbc(quad, jax.random.PRNGKey(1), 1, 20)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        dg.sbc(quad, jax.random.PRNGKey(1), 10, 0)
    r = dg.sbc(quad, jax.random.PRNGKey(1), 20, 10)
    assert r.ranks.shape == (20, 1) and r.names == ("theta",)


@pytest.mark.cheap  # its time goes to compiling (tests/conftest.py)
@pytest.mark.slow
def test_sbc_of_g_low_on_the_quadratic():
    inf = MFDiff(quadratic, num_simulations=2000, **FAST).run(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(10)
    d = dg.posterior_draws(inf, key, 300, 100)
    ok = dg.sbc_from_samples(d.samples, d.theta, key, names=d.names)
    assert ok.ecdf_pvalue[0] > 0.01 and ok.chi2_pvalue[0] > 0.01, ok
    # the same draws made wrong, per dataset: moved by 0.5 sd, squeezed and
    # spread about their mean
    mean = d.samples.mean(axis=1, keepdims=True)
    sd = d.samples.std(axis=1, keepdims=True)
    for name, wrong in {
        "shifted": d.samples + 0.5 * sd,
        "sd halved": mean + 0.5 * (d.samples - mean),
        "sd doubled": mean + 2.0 * (d.samples - mean),
    }.items():
        bad = dg.sbc_from_samples(wrong, d.theta, key)
        assert bad.ecdf_pvalue[0] < 0.002 and bad.chi2_pvalue[0] < 1e-4, (name, bad)
    # data from the coarse model: G_low of the exact model is miscalibrated for them
    coarse = dg.sbc(inf, jax.random.PRNGKey(11), 300, 100, model=quadratic_coarse)
    assert coarse.ecdf_pvalue[0] < 0.002, coarse


def test_misspecification_flags_an_observation_outside_the_prior_predictive(quad):
    m = dg.misspecification(quad, jax.random.PRNGKey(3), {"y": np.array([1.0, 6.0])}, 300)
    assert m.ess.shape == (2,) and m.reference_ess.shape == (300,)
    np.testing.assert_allclose(m.ess, quad.ess({"y": np.array([1.0, 6.0])}), rtol=1e-4)
    assert m.ess_pvalue[0] > 0.1 and m.evidence_pvalue[0] > 0.1
    assert m.ess_pvalue[1] == m.evidence_pvalue[1] == 1 / 301  # below every reference
    assert list(m.fidelity) == ["low", "low"]
    one = dg.misspecification(quad, jax.random.PRNGKey(3), {"y": 6.0}, 300)
    assert isinstance(one.ess, float) and one.ess_pvalue == m.ess_pvalue[1]
    assert one.to_dataset()["ess"].dims == ("observation",)


def test_reference_simulations_go_through_the_executor():
    """The 40 reference simulations of ``misspecification`` are submitted to MFDiff's
    executor (40 submits) and run on its threads, none on this one: a misspecification
    that ignored the executor (40 calls on this thread, no submit) fails."""
    from test_external import RecordingThreadPool

    calls = []
    lock = threading.Lock()

    def square(theta):
        with lock:
            calls.append(threading.get_ident())
        return np.float32(theta) ** 2

    sim = external_simulator(square, jax.ShapeDtypeStruct((), jnp.float32))

    def model(y=None):
        theta = numpyro.sample("theta", dist.Uniform(-2.0, 2.0))
        numpyro.sample("y", dist.Normal(sim(theta), 0.1), obs=y)

    with RecordingThreadPool(2) as pool:
        inf = MFDiff(model, num_simulations=200, progress_bar=False, executor=pool)
        inf.simulate(jax.random.PRNGKey(0))
        n, submitted = len(calls), pool.submitted
        m = dg.misspecification(inf, jax.random.PRNGKey(1), {"y": 1.0}, 40)
    assert len(calls) - n == 40 and m.reference_ess.shape == (40,)
    assert pool.submitted - submitted == 40
    assert threading.get_ident() not in calls[n:] and set(calls[n:]) <= pool.threads
