"""Property-based checks (hypothesis) of the public entry points' input validation."""

import functools
import warnings

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from models import quadratic

from numpyro_mfdiff import MFDiff, _model
from numpyro_mfdiff._config import BUDGETS

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
KEY = jax.random.PRNGKey(0)
SHAPES = {"a": (3,), "b": (2, 2)}


def two_sites(a=None, b=None):
    """Observed sites of shapes (3,) and (2, 2)."""
    t = numpyro.sample("t", dist.Normal(0.0, 1.0))
    numpyro.sample("a", dist.Normal(t, 1.0).expand([3]).to_event(1), obs=a)
    numpyro.sample("b", dist.Normal(t, 1.0).expand([2, 2]).to_event(2), obs=b)


@functools.cache
def spec():
    return _model.inspect_model(two_sites)


@functools.cache
def small():
    """One tiny fitted MFDiff on the quadratic model, shared by the tests."""
    return MFDiff(
        quadratic,
        num_simulations=300,
        num_labels=128,
        num_steps=10,
        train_steps=20,
        label_points=300,  # every simulation: fewer drop likelihood mass (and warn)
        width=8,
        depth=1,
        progress_bar=False,
    ).run(KEY)


finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


def arrays(shape):
    return hnp.arrays(np.float32, shape, elements=finite)


@st.composite
def observations(draw, batch=None):
    prefix = () if batch is None else (batch,)
    return {k: draw(arrays(prefix + s)) for k, s in SHAPES.items()}


@SETTINGS
@given(st.one_of(st.none(), st.integers(1, 4)).flatmap(observations))
def test_any_finite_value_of_the_right_shape_is_accepted(obs):
    y = _model.check_observations(spec(), obs)
    lead = obs["a"].shape[:-1]
    assert y.shape == lead + (7,)
    expected = np.concatenate([obs["a"].reshape(lead + (-1,)), obs["b"].reshape(lead + (-1,))], -1)
    np.testing.assert_array_equal(y, expected)


bad_shape = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=5)


@SETTINGS
@given(st.sampled_from(sorted(SHAPES)), bad_shape, observations())
def test_any_wrong_shape_names_the_site(site, shape, obs):
    ok = SHAPES[site]
    if shape == ok or shape[1:] == ok:
        shape = shape + (6,)  # neither the site's shape nor a batch of it
    obs[site] = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=f"site '{site}' has shape"):
        _model.check_observations(spec(), obs)


@SETTINGS
@given(
    st.sampled_from(sorted(SHAPES)),
    st.integers(0, 100),
    st.sampled_from([np.nan, np.inf, -np.inf]),
    st.one_of(st.none(), st.integers(1, 3)).flatmap(observations),
)
def test_nan_or_inf_anywhere_names_the_site(site, where, bad, obs):
    flat = obs[site].reshape(-1)
    flat[where % flat.size] = bad
    with pytest.raises(ValueError, match=f"site '{site}' contains NaN"):
        _model.check_observations(spec(), obs)


@SETTINGS
@given(st.sampled_from(sorted(SHAPES)), st.sampled_from(["complex", "str", "object"]))
def test_non_real_dtypes_name_the_site(site, kind):
    obs = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
    shape = SHAPES[site]
    obs[site] = {
        "complex": np.zeros(shape, np.complex64),
        "str": np.full(shape, "1.0"),
        "object": np.full(shape, None, object),
    }[kind]
    with pytest.raises(ValueError, match=f"site '{site}' has dtype"):
        _model.check_observations(spec(), obs)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 4))
def test_batch_sizes_must_agree(na, nb):
    obs = {"a": np.zeros((na, 3)), "b": np.zeros((nb, 2, 2))}
    if na == nb:
        assert _model.check_observations(spec(), obs).shape == (na, 7)
    else:
        with pytest.raises(ValueError, match="site 'b' has batch shape"):
            _model.check_observations(spec(), obs)


@SETTINGS
@given(st.one_of(arrays(()), arrays(st.integers(1, 3).map(lambda n: (n,)))))
def test_public_entry_points_accept_any_finite_observation(y):
    inf = small()
    e = np.atleast_1d(inf.ess({"y": y}))
    assert e.shape == np.atleast_1d(y).shape
    # each row's ESS is Kish's (sum w)^2 / sum w^2 of its own log-weights over the 300
    # simulations, computed here in float64 one row at a time: a batch that mixed rows,
    # dropped the weights (ESS 300) or read another observation fails. Far outside the
    # prior predictive (y in [0, 4] +- 0.1) the float32 log-weights tie, so there only
    # "one or two simulations carry the weight" is checked.
    for yi, ei in zip(np.atleast_1d(y), e, strict=True):
        if abs(yi) > 10:
            assert 1.0 - 1e-3 <= ei < 3.0, (yi, ei)
            continue
        log_w = np.asarray(inf.bank.log_weights(np.reshape(yi, (1,))), np.float64)
        w = np.exp(log_w - log_w.max())
        np.testing.assert_allclose(ei, w.sum() ** 2 / (w**2).sum(), rtol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the small-ESS warning
        s = np.asarray(inf.get_samples(KEY, {"y": y}, 16)["theta"])
    assert s.shape == y.shape + (16,)
    assert np.all(np.isfinite(s)) and np.all(np.abs(s) <= 2.0)


@SETTINGS
@given(
    st.sampled_from(["get_samples", "sample_ode", "ess"]),
    st.one_of(
        hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=3), elements=finite).map(
            lambda v: ({"y": v}, "site 'y' has shape")
        ),
        st.sampled_from([np.nan, np.inf]).map(lambda v: ({"y": v}, "site 'y' contains NaN")),
        st.text(min_size=1, max_size=3)
        .filter(lambda k: k != "y")
        .map(lambda k: ({"y": 1.0, k: 1.0}, "unknown observed")),
        st.just(({}, "missing observation")),
    ),
)
def test_public_entry_points_reject_bad_observations(method, case):
    obs, match = case
    args = (obs,) if method == "ess" else (KEY, obs, 8)
    with pytest.raises(ValueError, match=match):
        getattr(small(), method)(*args)


@SETTINGS
@given(
    st.sampled_from(BUDGETS),
    st.one_of(st.integers(-(10**6), 0), st.floats(allow_nan=True), st.booleans(), st.text()),
)
def test_non_positive_or_non_integer_budgets_name_the_setting(name, value):
    with pytest.raises(ValueError, match=name):
        MFDiff(quadratic, **{name: value})


@SETTINGS
@given(st.sampled_from(BUDGETS), st.integers(2, 10**6))
def test_positive_budgets_are_accepted(name, value):
    inf = MFDiff(quadratic, **{name: value})
    assert inf.config.to_json()[name] == value


@SETTINGS
@given(
    st.sampled_from(["max_failure_fraction", "prune_tol"]),
    st.floats(allow_nan=True, allow_infinity=True),
)
def test_fractions_must_lie_in_zero_one(name, value):
    if 0.0 <= value < 1.0:
        assert MFDiff(quadratic, **{name: value}).config.to_json()[name] == value
    else:
        with pytest.raises(ValueError, match=name):
            MFDiff(quadratic, **{name: value})
