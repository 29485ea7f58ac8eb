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


def _hierarchical(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0))
    with numpyro.plate("j", 3):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, 1.0), obs=y)


def test_unknown_observed_site_lists_the_users_names(no_simulation):
    """Main listed the internal ``theta_decentered`` of the automatic non-centring."""
    with pytest.raises(ValueError, match=r"\['mu', 'tau', 'theta', 'y'\]"):
        MFDiff(_hierarchical, 10, observed_sites=["nope"]).run(jax.random.PRNGKey(0))


def test_load_of_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file"):
        MFDiff.load(tmp_path / "absent.npz", scalar_site)


def test_misspecification_repr_is_compact():
    from numpyro_mfdiff.diagnostics import Misspecification

    refs = np.linspace(-5.0, 0.0, 1000)
    text = repr(Misspecification(12.5, -450.0, 0.001, 0.001, refs, refs, "low"))
    assert "references=1000" in text and "log_evidence=-450" in text and len(text) < 200


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num-simulations", "abc"], "not an integer"),
        (["--num-samples", "0"], "must be >= 1"),
        (["--y", "nan"], "must be finite"),
        (["--plot", "/nonexistent-dir/q.png"], "cannot write there"),
    ],
)
def test_cli_refuses_bad_values_before_the_build(argv, message, capsys, no_simulation):
    """argparse errors (exit 2, the argument named) instead of tracebacks, and ``--y nan``
    or an unwritable ``--plot`` before the build (main: after minutes of it)."""
    from numpyro_mfdiff import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["run", "quadratic", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_version(capsys):
    from numpyro_mfdiff import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and "numpyro-mfdiff" in capsys.readouterr().out


def _residual_model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("n", 3):
        numpyro.sample("y", dist.Normal(mu, 0.5), obs=y)
    if y is not None:
        numpyro.deterministic("resid", y - mu)


def test_deterministic_site_defined_only_with_data(tiny, tmp_path):
    """``if y is not None: numpyro.deterministic("resid", y - mu)``: NUTS returns it
    computed with the data; main dropped it. Now it is computed per draw with the
    observation served (the data of ``run``, or those given to ``get_samples``), and
    kept by ``save``/``load``."""
    data = np.array([0.3, 0.9, 0.6])
    inf = MFDiff(_residual_model, 300, **tiny).run(jax.random.PRNGKey(0), y=data)
    s = inf.get_samples(jax.random.PRNGKey(1), num_samples=200)
    np.testing.assert_allclose(s["resid"], data - s["mu"][:, None], rtol=1e-6)
    other = data + 1.0
    s = inf.get_samples(jax.random.PRNGKey(1), {"y": other}, 200)
    np.testing.assert_allclose(s["resid"], other - s["mu"][:, None], rtol=1e-6)
    path = tmp_path / "r.npz"
    inf.save(path)
    s = MFDiff.load(path, _residual_model).get_samples(jax.random.PRNGKey(1), num_samples=200)
    np.testing.assert_allclose(s["resid"], data - s["mu"][:, None], rtol=1e-6)
