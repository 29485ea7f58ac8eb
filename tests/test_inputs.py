"""Inputs a NumPyro user gives, read as NumPyro reads them (issue 25): data passed to
``run`` at the site's shape, refinement checkpoints named by the whole observation."""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from models import linear_gaussian

from numpyro_mfdiff import MFDiff, _model


def scalar_site(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(mu, 0.5), obs=y)


def test_run_refuses_data_shaped_unlike_the_site(no_simulation):
    """``run(key, y=[1.0, 1.1])`` on a scalar site means two i.i.d. data points to
    ``MCMC.run``; main read them as two observations (samples (2, S)) and then failed in
    ``to_inference_data``. Now: a ``ValueError`` naming the site, both shapes and the
    fix, before any simulation."""
    with pytest.raises(ValueError, match=r"site 'y' has shape \(2,\).*shape \(\).*plate"):
        MFDiff(scalar_site, 100).run(jax.random.PRNGKey(0), y=np.array([1.0, 1.1]))


def test_checkpoint_tags_hash_the_whole_observation(tiny, tmp_path):
    """Two observations equal in their first two float32 values get different refinement
    checkpoint folders (main tagged them by the first 8 bytes: the same folder)."""
    a = np.array([0.5, -0.2, 1.0, 0.3])
    b = np.array([0.5, -0.2, 1.0, 0.4])
    assert _model.obs_tag(a) != _model.obs_tag(b)
    assert _model.obs_tag(a) == _model.obs_tag(a.astype(np.float32))
    inf = MFDiff(linear_gaussian, 300, checkpoint_dir=tmp_path, **tiny)
    inf.run(jax.random.PRNGKey(0))
    for i, x in enumerate((a, b)):
        inf.refine(jax.random.PRNGKey(1 + i), {"x": x}, num_simulations=100, rounds=1)
    tags = sorted(p.name for p in tmp_path.glob("refine-*"))
    assert tags == sorted(f"refine-{_model.obs_tag(x)}" for x in (a, b)), tags
