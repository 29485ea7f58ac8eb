"""Statistical checks against exact posteriors (slow: ``pytest -m slow``).

Fixed keys; tolerances as stated in each test.
"""

import jax
import numpy as np
import pytest
from models import (
    kl_quadratic,
    linear_gaussian,
    linear_gaussian_posterior,
    quadratic_exact_draws,
    quadratic_wrong_answers,
    stack_linear,
)

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.examples import quadratic

pytestmark = pytest.mark.slow

YS = (0.25, 1.0, 2.0, 3.5)


@pytest.fixture(scope="module")
def quadratic_inf():
    return MFDiff(quadratic, num_simulations=20_000, progress_bar=False).run(jax.random.PRNGKey(0))


@pytest.mark.parametrize("y", YS)
def test_quadratic_generator_kl(quadratic_inf, y):
    """KL(exact || G_low) <= 0.02 with 50,000 samples and 80 bins over [-2, 2].

    Measured (``MFDiff(quadratic, num_simulations=20_000).run(PRNGKey(seed))``, the
    draws of this test; 2026-12-01): at y = 0.25, 1, 2, 3.5 seed 0 (this test's) passes
    0.25 and 2 and gives 0.0103 at 1, 0.0129 at 3.5; seed 1 0.0023, 0.0095, 0.060,
    0.0092; seed 2 0.0033, 0.0060, 0.0039, 0.0071. The bound holds at 11 of those 12;
    seed 1 at y = 2 (0.060) is a fit that misplaces mass, left open in issue 19. Which
    seed lands where moves with any change to the labels' float rounding, so the bound
    sits above the spread of the typical fits rather than at one seed's figure.

    The four wrong answers built from 50,000 exact draws fail the same bound at every y
    (exact-draw keys 5, 15, 25; 2026-12-06): each mode shifted by
    0.3 sd KL 0.035-0.064, sds halved 0.36-0.88, doubled 0.25-0.30, prior draws 1.39-2.79
    (exact draws against the exact density: 0.0007-0.0008, the binning bias).

    Mass between the modes (``|theta| < sqrt(y) / 2``) and the modes' balance, within
    0.03 of the exact draws': a second exact sample is within 0.003 of the first at every
    y (keys above); the prior puts 0.05-0.47 more there and fails; the other three wrong
    answers are caught by the KL bound (shifted/halved/doubled move 0.02-0.09 between the
    modes at y = 0.25, none above). Over G_low's build keys 0, 1, 2 at the four y
    (main 43b76bf, 2026-12-06, ``/tmp/w26b/item3.py``): mass between the modes within
    0.0054 of the exact draws' (-0.0054 to +0.0035), the modes' balance within 0.0156
    of 0.5 (-0.0156 to +0.0103): the bound 0.03 holds at all 12 with a margin of 0.014;
    it guards a bridge of mass the 80 bins average out. The same builds' KL: seed 0
    0.0038, 0.0105, 0.0033, 0.0076; seed 1 0.0036, 0.0116, 0.0087, 0.0171; seed 2
    0.0021, 0.0060, 0.0054, 0.0069 (11 of 12 within 0.015 again, the miss now seed 1
    at y = 3.5: which fit misplaces mass moves with the programs' rounding).

    On a fresh install of jax 0.10.2 (2026-12-06, ``/tmp/s8/qkl.py 0 1 2``, this test's
    calls at build seeds 0-2) the test's own fit, seed 0, gave 0.0150 at y = 2 (0.0033
    before) and failed the former bound 0.015: KL seed 0 0.0040, 0.0127, 0.0150, 0.0086;
    seed 1 0.0046, 0.0096, 0.0054, 0.0077; seed 2 0.0026, 0.0064, 0.0034, 0.0074; mass
    between the modes within 0.0057 of the exact draws', balance within 0.0228 of 0.5.
    So the bound is 0.02: above all 35 typical fits of the three rounds of measurement
    (0.0021-0.0171; the one outlier, 0.060, is issue 19's), below the smallest wrong
    answer (0.035)."""
    s = np.asarray(quadratic_inf.get_samples(jax.random.PRNGKey(1), {"y": y}, 50_000)["theta"])
    assert kl_quadratic(s, y) <= 0.02
    exact = quadratic_exact_draws(jax.random.PRNGKey(5), y, 50_000)
    assert abs(_between(s, y) - _between(exact, y)) < 0.03
    assert abs((s > 0).mean() - 0.5) < 0.03
    prior = np.asarray(jax.random.uniform(jax.random.PRNGKey(6), (50_000,), minval=-2, maxval=2))
    for name, wrong in quadratic_wrong_answers(exact, prior).items():
        assert kl_quadratic(wrong, y) > 0.02, name  # fails the bound above
    assert abs(_between(prior, y) - _between(exact, y)) > 0.03


def _between(theta, y):
    """Fraction of the draws between the two modes of the quadratic posterior at y."""
    return float((np.abs(theta) < np.sqrt(y) / 2).mean())


def test_quadratic_ode_kl(quadratic_inf):
    """The ODE sampler alone: KL <= 0.010 at y = 1 with 20,000 samples (80 bins).

    Measured (simulation key ``split(PRNGKey(seed), 3)[0]`` as in ``run``, the test's
    ``sample_ode`` call; draw keys 2 (this test's), 3 and 12; 2026-12-07, jax 0.10.2,
    ``/tmp/s12/odekl.py``): seed 0 (this test's) 0.00583, 0.00512, 0.00689; seed 1
    0.00686, 0.00509, 0.00717; seed 2 0.00591, 0.00520, 0.00608; seed 3 0.00494,
    0.00376, 0.00475; seed 4 0.00546, 0.00478, 0.00479: 0.0038-0.0072 over the 15, so
    0.010 leaves 0.0028 over the largest. The binned estimator is biased up by about
    (80 - 1) / (2 * 20,000) = 0.002: 20,000 exact draws give 0.0020-0.0023 (keys 5, 15,
    25). Wrong answers as 20,000 draws (each mode shifted by 0.3 sd, sds halved or
    doubled, prior draws) give 0.041 and more at the same keys. (It drew 50,000 with the
    bound 0.008 before, 0.0038-0.0062 at seeds 0-2, draw keys 2 and 3 on 2026-12-01: 29 s
    of the slow run for a check that 20,000 draws make as well.)"""
    s = quadratic_inf.sample_ode(jax.random.PRNGKey(2), {"y": 1.0}, 20_000)["theta"]
    assert kl_quadratic(s, 1.0) <= 0.010
    exact = quadratic_exact_draws(jax.random.PRNGKey(5), 1.0, 20_000)
    prior = np.asarray(jax.random.uniform(jax.random.PRNGKey(6), (20_000,), minval=-2, maxval=2))
    for name, wrong in quadratic_wrong_answers(exact, prior).items():
        assert kl_quadratic(wrong, 1.0) > 0.010, name


def test_linear_gaussian_generator():
    """Closed-form 3-D posterior from G_low, for three observations.

    Built with 10,000 simulations, 5,000 labels and 5,000 training steps (the defaults,
    20,000 labels and 10,000 steps, took 128 s of which 91 s labelling, one core; the
    defaults' accuracy is checked on the quadratic above). Tolerances: mean within 0.05
    per coordinate (posterior sds 0.54-0.61, so a 0.3-sd shift fails), covariance within
    0.02 per entry on average (variances 0.29-0.37), marginal standard deviations within
    8% (halved or doubled fail). Measured over build keys 3 (this test's), 4, 5, 6, draw
    key = build key + 1 (2026-12-07, jax 0.10.2, ``/tmp/s12/lgs.py``, the test's calls):
    largest mean error 0.015-0.024, covariance error 0.0034-0.0083, sd error 1.2-3.0%.
    With 10,000 labels: 5,000 steps gave 0.015-0.027, 0.0040-0.0082 and 1.3-3.1% at the
    same keys; 10,000 steps (the former build: 55 s of the test's 60 s on one core, 36 s
    now) 0.014-0.025, 0.005-0.009 and 1.4-3.1% (2026-12-06).
    (An earlier G_low was 10% under-dispersed here, hence the former 0.04 and 12%.)"""
    inf = MFDiff(
        linear_gaussian,
        num_simulations=10_000,
        num_labels=5_000,
        train_steps=5_000,
        progress_bar=False,
    )
    inf.run(jax.random.PRNGKey(3))
    xs = np.array([[0.8, -0.4, 0.3, 1.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 0.5, 1.2, -0.3]])
    s = inf.get_samples(jax.random.PRNGKey(4), {"x": xs}, 20_000)
    th = stack_linear(s)
    assert th.shape == (3, 20_000, 3)
    for x, t in zip(xs, th, strict=True):
        mean, cov = linear_gaussian_posterior(x)
        np.testing.assert_allclose(t.mean(0), mean, atol=0.05)
        assert np.abs(np.cov(t.T) - cov).sum() / 9 < 0.02
        np.testing.assert_allclose(t.std(0), np.sqrt(np.diag(cov)), rtol=0.08)
