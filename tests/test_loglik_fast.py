"""The natural (exponential-family) form of the observed-site log-likelihoods.

``_expfam.log_likelihood_natural`` against the generic ``log_prob`` path
(``_model.log_likelihood``) at fixed keys, for every supported family.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from models import assert_wrong_answers_fail
from scipy import stats

from numpyro_mfdiff import MFDiff, _model, _stages
from numpyro_mfdiff._model import _expfam
from numpyro_mfdiff.metrics import kl_divergence_hist

X = jnp.linspace(-1.0, 1.0, 6)


def normal_scale(y=None):
    m = numpyro.sample("m", dist.Normal(0.0, 3.0))
    s = numpyro.sample("s", dist.LogNormal(0.0, 0.5))
    numpyro.sample("y", dist.Normal(m, s).expand([4]).to_event(1), obs=y)


def normal_fixed(y=None):
    m = numpyro.sample("m", dist.Normal(0.0, 3.0))
    with numpyro.plate("p", 5):
        numpyro.sample("y", dist.Normal(m, 0.1), obs=y)


def lognormal(y=None):
    m = numpyro.sample("m", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.LogNormal(m, 0.3).expand([5]).to_event(1), obs=y)


def mvn(y=None):
    m = numpyro.sample("m", dist.Normal(jnp.zeros(3), 1.0).to_event(1))
    s = numpyro.sample("s", dist.LogNormal(0.0, 0.3))
    cov = s * (jnp.eye(3) + 0.5)
    numpyro.sample("y", dist.MultivariateNormal(m, cov).expand([2]).to_event(1), obs=y)


def binomial_logits(y=None):
    a = numpyro.sample("a", dist.Normal(0.0, 1.5))
    numpyro.sample("y", dist.Binomial(1000, logits=a * X).to_event(1), obs=y)


def binomial_probs(y=None):
    p = numpyro.sample("p", dist.Beta(2.0, 2.0))
    numpyro.sample("y", dist.Binomial(50, probs=p).expand([6]).to_event(1), obs=y)


def poisson_batch(y=None):
    r = numpyro.sample("r", dist.LogNormal(1.0, 1.0))
    with numpyro.plate("a", 2, dim=-2), numpyro.plate("b", 3, dim=-1):  # site shape (2, 3)
        numpyro.sample("y", dist.Poisson(r * jnp.arange(1.0, 4.0)), obs=y)


def bernoulli_probs(y=None):
    p = numpyro.sample("p", dist.Beta(2.0, 2.0))
    numpyro.sample("y", dist.Bernoulli(probs=p).expand([8]).to_event(1), obs=y)


def bernoulli_logits(y=None):
    a = numpyro.sample("a", dist.Normal(0.0, 2.0))
    with numpyro.plate("n", 8):
        numpyro.sample("y", dist.Bernoulli(logits=a * jnp.linspace(-1, 1, 8)), obs=y)


def categorical_logits(y=None):
    a = numpyro.sample("a", dist.Normal(jnp.zeros(3), 1.0).to_event(1))
    numpyro.sample("y", dist.Categorical(logits=a).expand([7]).to_event(1), obs=y)


def categorical_probs(y=None):
    p = numpyro.sample("p", dist.Dirichlet(jnp.ones(4)))
    numpyro.sample("y", dist.Categorical(probs=p).expand([7]).to_event(1), obs=y)


def gamma(y=None):
    c = numpyro.sample("c", dist.LogNormal(1.0, 0.3))
    r = numpyro.sample("r", dist.LogNormal(0.0, 0.5))
    numpyro.sample("y", dist.Gamma(c, r).expand([5]).to_event(1), obs=y)


def two_sites(y1=None, y2=None):
    m = numpyro.sample("m", dist.Normal(0.0, 1.0))
    numpyro.sample("y1", dist.Normal(m, 0.5), obs=y1)
    numpyro.sample("y2", dist.Poisson(jnp.exp(m)).expand([3]).to_event(1), obs=y2)


# model -> statistics left in the matmul: those whose natural parameter varies over
# the simulations (a fixed Normal scale moves the y^2 column into h(y); so does a fixed
# MultivariateNormal covariance shape... here the covariance varies)
SUPPORTED = {
    normal_scale: 8,
    normal_fixed: 5,
    lognormal: 5,
    mvn: 2 * 3 + 2 * 9,
    binomial_logits: 6,
    binomial_probs: 6,
    poisson_batch: 6,
    bernoulli_probs: 8,
    bernoulli_logits: 8,
    categorical_logits: 7 * 3,
    categorical_probs: 7 * 4,
    gamma: 10,
    two_sites: 1 + 3,
}


def _simulations(model, n=400, seed=0):
    spec = _model.inspect_model(model)
    sims = _model.simulate(jax.random.PRNGKey(seed), model, spec, n)
    return spec, jax.tree.map(jnp.asarray, sims.dists), np.asarray(sims.valid), sims


def _both(spec, dists, valid, form, ys, base=True):
    """Generic and natural log-likelihoods (B, N) of the rows of ``ys``."""

    def generic(y):
        return _model.log_likelihood(spec, dists, jnp.asarray(valid), y)

    def natural(y):
        return _expfam.log_likelihood_natural(form, y, base=base)

    ys = jnp.asarray(ys)
    return np.asarray(jax.vmap(generic)(ys)), np.asarray(jax.vmap(natural)(ys))


def _assert_close(fast, ref):
    """Same ``-inf`` pattern; finite values within float32 rounding of the row's
    magnitudes (8 ulp of its largest |value|, plus 1e-5)."""
    fin = np.isfinite(ref)
    np.testing.assert_array_equal(np.isfinite(fast), fin)
    scale = np.max(np.abs(np.where(fin, ref, 0.0)), axis=1, keepdims=True)
    err = np.abs(np.where(fin, fast, 0.0) - np.where(fin, ref, 0.0))
    assert np.all(err <= 1e-6 * scale + 1e-5), float(np.max(err - 1e-6 * scale))


def _row_shift_spread(fast, ref):
    """Largest spread over a row of ``fast - ref`` (finite entries): 0 when the two
    differ by a constant per row, which is all the softmax over points allows."""
    fin = np.isfinite(ref) & np.isfinite(fast)
    d = np.where(fin, fast, 0.0) - np.where(fin, ref, np.nan)
    return float(np.max(np.nanmax(d, axis=1) - np.nanmin(d, axis=1)))


@pytest.mark.parametrize("model", list(SUPPORTED), ids=lambda m: m.__name__)
def test_natural_form_matches_log_prob(model):
    spec, dists, valid, sims = _simulations(model)
    form = _expfam.natural_form(spec, dists, valid)
    assert form is not None and form.eta.shape == (400, SUPPORTED[model])
    y = sims.y
    ref, fast = _both(spec, dists, valid, form, y[:24])
    assert np.isfinite(ref).mean() > 0.5
    _assert_close(fast, ref)
    # base=False: the same up to h(y), a constant per observation
    _, rows = _both(spec, dists, valid, form, y[:24], base=False)
    assert _row_shift_spread(rows, ref) <= 1e-6 * np.nanmax(np.abs(ref)) + 1e-4


def test_integer_observations_and_constant_columns():
    """Counts as the user gives them (int arrays) score as the simulated floats do, and
    as scipy does."""
    spec, dists, valid, sims = _simulations(poisson_batch)
    assert np.issubdtype(spec.observed_dtypes["y"], np.integer)
    form = _expfam.natural_form(spec, dists, valid)
    counts = np.array([[3, 0, 7], [1, 12, 4]])
    flat = _model.check_observations(spec, {"y": counts})
    ref, fast = _both(spec, dists, valid, form, flat[None])
    _assert_close(fast, ref)
    # the natural form at one simulation against scipy
    r = float(spec.constrain(jnp.asarray(sims.theta[0]))["r"])
    exact = stats.poisson.logpmf(counts, r * np.arange(1.0, 4.0)).sum()
    assert abs(fast[0, 0] - exact) < 1e-4 * abs(exact)


def test_wrong_form_is_caught():
    """The checks above fail for a form that drops a term that is not constant per
    observation (the log-normaliser A_j), or that keeps only part of h(y)."""
    spec, dists, valid, sims = _simulations(binomial_logits)
    y = sims.y
    form = _expfam.natural_form(spec, dists, valid)
    wrong = form._replace(neg_log_norm=jnp.where(jnp.isfinite(form.neg_log_norm), 0.0, -jnp.inf))
    ref, fast = _both(spec, dists, valid, wrong, y[:8], base=False)
    assert _row_shift_spread(fast, ref) > 1.0
    with pytest.raises(AssertionError):
        _assert_close(_both(spec, dists, valid, wrong, y[:8])[1], ref)
    # h(y) is not constant over observations: base=False values are not the exact ones
    rows = _both(spec, dists, valid, form, y[:8], base=False)[1]
    with pytest.raises(AssertionError):
        _assert_close(rows, ref)


def test_invalid_simulations_and_zero_rates():
    """Invalid simulations give -inf in both paths; a Poisson rate of 0 gives log p = 0
    for a zero count and -inf for a positive one, as ``log_prob`` (``xlogy``) does."""
    spec, dists, valid, sims = _simulations(poisson_batch, n=50)
    y = sims.y
    leaves, tree = jax.tree.flatten(dists)
    leaves = [x.at[0].set(0.0).at[1].set(jnp.nan) for x in leaves]  # rate 0; a failed one
    dists = jax.tree.unflatten(tree, leaves)
    valid = valid.copy()
    valid[1] = valid[5] = False
    form = _expfam.natural_form(spec, dists, valid)
    ys = np.concatenate([np.zeros((1, 6), np.float32), y[:6]])
    ref, fast = _both(spec, dists, valid, form, ys)
    _assert_close(fast, ref)
    assert np.all(np.isneginf(fast[:, [1, 5]]))
    assert abs(fast[0, 0]) < 1e-5 and np.all(np.isneginf(fast[1:, 0]))


@pytest.mark.parametrize("kind", ["student", "varying_total_count"])
def test_unsupported_falls_back(kind):
    """No natural form for a non-exponential family (Student-t) or a Binomial whose
    total count moves with the latents; MFDiff then labels with ``log_prob``."""

    def student(y=None):
        m = numpyro.sample("m", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.StudentT(3.0, m, 1.0).expand([2]).to_event(1), obs=y)

    def varying(y=None):
        p = numpyro.sample("p", dist.Beta(2.0, 2.0))
        n = (10 + jnp.round(20 * p)).astype(jnp.int32)
        numpyro.sample("y", dist.Binomial(n, probs=p), obs=y)

    model = student if kind == "student" else varying
    spec, dists, valid, _ = _simulations(model, n=100)
    assert _expfam.natural_form(spec, dists, valid) is None
    inf = MFDiff(model, num_simulations=100, progress_bar=False)
    inf.simulate(jax.random.PRNGKey(0))
    assert inf.bank.natural is None
    yj = jnp.asarray(inf.simulations.y[0])
    np.testing.assert_array_equal(inf.bank.log_weights(yj), inf.bank.log_likelihood(yj))


def test_gaussian_sites_keep_log_prob():
    """MFDiff labels Gaussian-only models with the exact ``log_prob`` (as fast there); a
    model with a count site among Gaussian ones gets the natural form."""
    inf = MFDiff(two_sites, num_simulations=200, progress_bar=False)
    inf.simulate(jax.random.PRNGKey(0))
    assert inf.bank.natural is not None
    spec, dists, valid, _ = _simulations(normal_fixed, n=100)
    assert _expfam.natural_form(spec, dists, valid) is not None
    assert _expfam.natural_form(spec, dists, valid, gaussian=False) is None


def test_labels_match_generic_path():
    """MFDiff.label on a Binomial model: the natural form gives the labels of the generic
    path (same order, same points weighed, thetas within float32 rounding)."""
    inf = MFDiff(
        binomial_logits, num_simulations=2000, num_labels=128, num_steps=20, progress_bar=False
    )
    inf.simulate(jax.random.PRNGKey(0))
    assert inf.bank.natural is not None and inf.bank.natural.eta.shape == (2000, 6)
    key = jax.random.PRNGKey(1)
    fast = dict(inf.label(key))
    used_fast = inf.diagnostics["label_points_mean"]
    _, slow, stats = _stages.label(inf.config, inf.state, key, fast_likelihood=False)
    assert stats.label_points_mean == used_fast
    np.testing.assert_array_equal(fast["y"], slow["y"])
    np.testing.assert_allclose(fast["theta"], slow["theta"], atol=5e-3)


# ---------------------------------------------------------------- accuracy
COUNTS = (np.array([3, 5, 4, 6, 2]), np.array([14, 11, 16, 12, 15]))  # of 20 each


def binomial_beta(y=None):
    """``p ~ Beta(2, 2)``; five counts ``y_i ~ Binomial(20, p)``: posterior
    ``Beta(2 + sum y, 2 + 100 - sum y)``."""
    p = numpyro.sample("p", dist.Beta(2.0, 2.0))
    numpyro.sample("y", dist.Binomial(20, probs=p).expand([5]).to_event(1), obs=y)


def _grid_kl(samples, counts, bins=60):
    """KL(exact || samples) on ``bins`` bins over the exact posterior's mean +- 6 sd."""
    post = stats.beta(2 + counts.sum(), 2 + 20 * counts.size - counts.sum())
    lo, hi = post.mean() - 6 * post.std(), post.mean() + 6 * post.std()
    edges = np.linspace(lo, hi, bins + 1)
    probs = np.diff(post.cdf(edges))
    return float(kl_divergence_hist(probs, samples, bins=bins, range=(lo, hi), p_is_probs=True))


@pytest.mark.slow
def test_binomial_generator_grid_posterior():
    """G_low of a Binomial model (labelled through the natural form) against its exact
    Beta posterior, for two observations, 50,000 samples, 60 bins over mean +- 6 sd.

    Bound KL <= 0.005. Measured with this budget (N = 10,000, 5,000 labels, 3,000
    training steps; likelihood ESS about 1,400 and 2,100), KL for the two observations:
    seed 0: 0.0008, 0.0007; seed 1: 0.0010, 0.0006; seed 2: 0.0006, 0.0006 (the
    histogram floor of 50,000 samples in 60 bins is about 0.0006). Command:
    ``JAX_PLATFORMS=cpu python -m pytest tests/test_loglik_fast.py -m slow -q`` with the
    seed as a parameter [0, 1, 2] (the suite ran all three until 2026-12-06: 102 CPU-s;
    it now runs seed 0, whose margin, 0.0042, is that of the others). Exact draws pass
    and the four wrong answers fail the same bound (checked at the end).
    """
    seed = 0
    inf = MFDiff(
        binomial_beta,
        num_simulations=10_000,
        num_labels=5_000,
        train_steps=3_000,
        progress_bar=False,
    )
    inf.run(jax.random.PRNGKey(seed))
    assert inf.bank.natural is not None
    for i, counts in enumerate(COUNTS):
        s = inf.get_samples(jax.random.PRNGKey(10 + i), {"y": counts}, 50_000)["p"]
        assert _grid_kl(np.asarray(s), counts) <= 0.005
        a, b = 2 + counts.sum(), 2 + 20 * counts.size - counts.sum()
        exact = np.random.default_rng(i).beta(a, b, size=50_000)
        prior = np.random.default_rng(10 + i).beta(2.0, 2.0, size=50_000)
        assert_wrong_answers_fail(lambda d, c=counts: _grid_kl(d, c) <= 0.005, exact, prior)
