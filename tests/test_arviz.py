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
    idata = inf.to_inference_data(jax.random.PRNGKey(1), {"x": x}, 400, num_chains=4,
                                  posterior_predictive=True)
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
    idata = inf.to_inference_data(jax.random.PRNGKey(2), {"x": np.zeros(4)}, 400, num_chains=2,
                                  method="ode")
    summ = az.summary(idata)
    assert {"mean", "sd", "r_hat"} <= set(summ.columns)
    assert set(summ.index) == {"a", "b[0]", "b[1]"}
    az.plot_posterior(idata)


def test_inference_data_bad_args(inf):
    with pytest.raises(ValueError, match="multiple of num_chains"):
        inf.to_inference_data(jax.random.PRNGKey(0), {"x": np.zeros(4)}, 10, num_chains=3)
    with pytest.raises(ValueError, match="single observation"):
        inf.to_inference_data(jax.random.PRNGKey(0), {"x": np.zeros((2, 4))}, 10)
