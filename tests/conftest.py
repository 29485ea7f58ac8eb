import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpyro  # noqa: E402

numpyro.set_platform("cpu")

import pytest  # noqa: E402


@pytest.fixture
def no_simulation(monkeypatch):
    """Any simulation fails the test: for checks that must fail before simulating."""
    from numpyro_mfdiff import _model

    def fail(*a, **k):
        raise AssertionError("simulated before validating")

    monkeypatch.setattr(_model, "simulate", fail)
