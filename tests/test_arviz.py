"""InferenceData export and ArviZ workflows on MFDiff output."""

import warnings

import jax
import numpy as np
import pytest
from models import linear_gaussian
from test_mfdiff import SMALL

from numpyro_mfdiff import MFDiff

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


@pytest.fixture(scope="module")
def inf():
    return MFDiff(linear_gaussian, num_simulations=2000, **SMALL).run(jax.random.PRNGKey(0))


def test_inference_data_groups_and_shapes(inf):
    x = np.array([0.5, 0.0, 0.2, 0.4])
    idata = inf.to_inference_data(
        jax.random.PRNGKey(1), {"x": x}, 400, num_chains=4, posterior_predictive=True
    )
    assert isinstance(idata, az.InferenceData)
    for g in ("posterior", "observed_data", "prior", "prior_predictive", "posterior_predictive"):
        assert g in idata.groups()
    assert idata.posterior["a"].shape == (4, 100)
    assert idata.posterior["b"].shape == (4, 100, 2)
    assert idata.posterior_predictive["x"].shape == (4, 100, 4)
    np.testing.assert_allclose(idata.observed_data["x"].values, x)
    assert idata.attrs["fidelity"] == "low"
    assert idata.attrs["ess_likelihood"] == pytest.approx(inf.ess({"x": x}))
    assert idata.attrs["num_simulations"] == 2000
    # same key, same draws as get_samples
    s = inf.get_samples(jax.random.split(jax.random.PRNGKey(1))[0], {"x": x}, 400)
    np.testing.assert_allclose(idata.posterior["b"].values.reshape(400, 2), s["b"])


def test_arviz_summary_and_plot(inf):
    import matplotlib

    matplotlib.use("Agg")
    idata = inf.to_inference_data(
        jax.random.PRNGKey(2), {"x": np.zeros(4)}, 400, num_chains=2, method="ode"
    )
    summ = az.summary(idata)
    assert {"mean", "sd", "r_hat"} <= set(summ.columns)
    assert set(summ.index) == {"a", "b[0]", "b[1]"}
    az.plot_posterior(idata)


def test_inference_data_bad_args(inf):
    with pytest.raises(ValueError, match="multiple of num_chains"):
        inf.to_inference_data(jax.random.PRNGKey(0), {"x": np.zeros(4)}, 10, num_chains=3)
    with pytest.raises(ValueError, match="single observation"):
        inf.to_inference_data(jax.random.PRNGKey(0), {"x": np.zeros((2, 4))}, 10)


def test_loo_and_compare_against_nuts(inf):
    """az.loo / az.compare work on MFDiff output and on the NUTS baseline of the same model."""
    from numpyro_mfdiff.baselines import nuts

    x = np.array([0.5, 0.0, 0.2, 0.4])
    idata = inf.to_inference_data(jax.random.PRNGKey(3), {"x": x}, 400, num_chains=2, method="ode")
    # one pointwise term per draw: the site is a single event (to_event(1)), as in NumPyro
    assert idata.log_likelihood["x"].shape == (2, 200)
    ref = nuts(
        linear_gaussian,
        {"x": x},
        jax.random.PRNGKey(4),
        num_chains=2,
        num_warmup=200,
        num_samples=200,
    )
    assert ref.log_likelihood["x"].shape == (2, 200)  # the baseline exports it too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pointwise-ELPD warnings on 4 data points
        loo = az.loo(idata)
        table = az.compare({"mfdiff": idata, "nuts": ref})
    assert np.isfinite(loo.elpd_loo)
    assert set(table.index) == {"mfdiff", "nuts"}
    # both approximate the same posterior: their ELPDs agree within a few standard errors
    assert abs(table["elpd_loo"].iloc[0] - table["elpd_loo"].iloc[1]) < 1.0
