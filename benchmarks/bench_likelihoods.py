"""Labelling time by observation family: generic ``log_prob`` against the natural form.

Labelling evaluates ``log p(y_i | theta_j)`` for every (observation, prior
point) pair of a chunk. The generic path calls each observed site's
``log_prob`` per pair; the natural form (``numpyro_mfdiff._model._expfam``) is one
matmul of sufficient statistics against natural parameters computed once per
prior point. This script labels the same triples both ways, on the quadratic
example (Gaussian noise, one observation), a Poisson model (ten counts) and a
Binomial model (ten counts out of 1,000), with the same N, labels and ODE
steps, and prints two tables: (1) labelling seconds before (generic) and after
(natural form), microseconds per weighed point (labels x points weighed per
chunk on average), weighed points per second, and the largest difference
between the labels of the two paths; (2) milliseconds for the log-likelihood
matrix of one labelling chunk alone (256 observations x N points), each path.

The two paths alternate (generic, natural, generic, natural, ... ``--repeats``
times each) and the fastest time of each is reported, so that both see the same
compilation caches and a shared machine's noise hits both alike.

Run: ``PYTHONPATH=. python benchmarks/bench_likelihoods.py`` (``--fast`` for a
smoke run), from the repository root.
"""

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from _common import cost_per_solve

from numpyro_mfdiff import MFDiff, _stages
from numpyro_mfdiff._model._expfam import log_likelihood_natural, natural_form
from numpyro_mfdiff.examples import quadratic

EXPOSURE = np.linspace(0.5, 2.0, 10).astype(np.float32)
DOSES = np.linspace(-1.0, 1.0, 10).astype(np.float32)


def poisson_counts(y=None):
    """``log_rate ~ N(1, 0.5^2)``; ten counts ``y_i ~ Poisson(exposure_i exp(log_rate))``."""
    log_rate = numpyro.sample("log_rate", dist.Normal(1.0, 0.5))
    numpyro.sample("y", dist.Poisson(EXPOSURE * jnp.exp(log_rate)).to_event(1), obs=y)


def binomial_doses(y=None):
    """Dose response: ``a, b ~ N(0, 1)``; ``y_i ~ Binomial(1000, sigmoid(a + b dose_i))``."""
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Binomial(1000, logits=a + b * DOSES).to_event(1), obs=y)


MODELS = {"Gaussian (quadratic)": quadratic, "Poisson": poisson_counts, "Binomial": binomial_doses}


def time_label(inf, key, fast):
    """Seconds of labelling ``inf``'s state with the natural form on or off, the labels
    and the points weighed per label."""
    t0 = time.perf_counter()
    _, triples, stats = _stages.label(inf.config, inf.state, key, fast_likelihood=fast)
    return time.perf_counter() - t0, triples["theta"], stats.label_points_mean


def loglik_ms(inf, rows=256):
    """Milliseconds (compiled, fastest of 3) for the (rows, N) log-likelihood matrix of
    ``rows`` prior-predictive observations: generic ``log_prob``, natural form."""
    ys = jnp.asarray(inf.simulations.y[:rows])
    natural = lambda y: log_likelihood_natural(inf.bank.natural, y, base=False)  # noqa: E731
    return [1e3 * rows * cost_per_solve(f, ys) for f in (inf.bank.log_likelihood, natural)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fast", action="store_true", help="small budgets (a smoke run)")
    p.add_argument("--num-simulations", type=int, default=10_000)
    p.add_argument("--num-labels", type=int, default=2_048)
    p.add_argument("--num-steps", type=int, default=100, help="ODE steps")
    p.add_argument("--repeats", type=int, default=2, help="labellings per path (fastest kept)")
    a = p.parse_args()
    if a.fast:
        a.num_simulations, a.num_labels, a.num_steps = 4_000, 512, 30
    print(
        f"N={a.num_simulations}, labels={a.num_labels}, ODE steps={a.num_steps}, "
        f"repeats={a.repeats}, devices={jax.devices()}"
    )
    head = (
        f"{'model':<22}{'simulate s':>11}{'generic s':>11}{'natural s':>11}{'speed-up':>10}"
        f"{'points':>8}{'us/pt gen':>11}{'us/pt nat':>11}{'Mpt/s nat':>11}{'max |dθ|':>10}"
    )
    print(head)
    rows, matrix = {}, {}
    for name, model in MODELS.items():
        inf = MFDiff(
            model,
            num_simulations=a.num_simulations,
            num_labels=a.num_labels,
            num_steps=a.num_steps,
            progress_bar=False,
        )
        t0 = time.perf_counter()
        inf.simulate(jax.random.PRNGKey(0))
        t_sim = time.perf_counter() - t0
        if inf.bank.natural is None:  # Gaussian sites: MFDiff labels with log_prob; time both
            natural = natural_form(inf.spec, inf.bank.dists, inf.simulations.valid)
            inf._state = inf.state.replace(bank=dataclasses.replace(inf.bank, natural=natural))
        key = jax.random.PRNGKey(1)
        times, theta = {False: np.inf, True: np.inf}, {}
        for fast in (False, True) * a.repeats:
            t, theta[fast], points = time_label(inf, key, fast)
            times[fast] = min(times[fast], t)
        matrix[name] = loglik_ms(inf)
        pts = a.num_labels * points
        us = {k: 1e6 * v / pts for k, v in times.items()}
        rows[name] = us
        print(
            f"{name:<22}{t_sim:>11.2f}{times[False]:>11.2f}{times[True]:>11.2f}"
            f"{times[False] / times[True]:>9.1f}x{points:>8.0f}"
            f"{us[False]:>11.3f}{us[True]:>11.3f}{pts / times[True] / 1e6:>11.1f}"
            f"{np.abs(theta[True] - theta[False]).max():>10.1e}"
        )
    print(f"\n{'log-likelihood matrix, 256 x N':<32}{'generic ms':>12}{'natural ms':>12}")
    for name, (gen, nat) in matrix.items():
        print(f"{name:<32}{gen:>12.1f}{nat:>12.1f}")
    gauss = rows["Gaussian (quadratic)"]
    for name in ("Poisson", "Binomial"):
        print(
            f"{name} per weighed point against the Gaussian: "
            f"generic {rows[name][False] / gauss[False]:.2f}x, "
            f"natural {rows[name][True] / gauss[False]:.2f}x (goal <= 1.5x; the Gaussian "
            "labels with log_prob, its natural column is for comparison)"
        )


if __name__ == "__main__":
    main()
