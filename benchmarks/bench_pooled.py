"""A batch of observations sharing one simulation budget, against refining each alone.

Run: ``python benchmarks/bench_pooled.py`` (``--fast`` for small budgets).

Model: sbibm's ``gaussian_linear`` (10-D, prior and noise covariances 0.1 I), whose
posterior for ``x`` is ``N(x / 2, 0.05 I)``; ``--batch`` observations drawn from the
model at a fixed key. One ``MFDiff(model, num_simulations).run`` builds ``G_low``;
then, side by side, with the same budget of further simulations:

- ``G_low``: the amortized generator as built (no further simulations);
- ``each alone``: ``refine(key, obs_b, max_simulations=budget // batch)`` for the first
  ``--alone`` observations, one ``G_high`` each (seconds scaled to the whole batch);
- ``batched``: one ``refine(key, {"x": batch}, max_simulations=budget)``, which pools the
  simulations into ``G_low``'s bank and refits ``G_low``.

Accuracy over the batch: RMS error of the posterior means in posterior sds, mean sd
ratio, and C2ST (0.5 is perfect) against exact draws for the first ``--alone``
observations; the likelihood-weight ESS (median, least) where it applies.
"""

import argparse
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.metrics import c2st

PRIOR_VAR = NOISE_VAR = 0.1
POST_SD = np.sqrt(PRIOR_VAR * NOISE_VAR / (PRIOR_VAR + NOISE_VAR))


def gaussian_linear(x=None):
    theta = numpyro.sample("theta", dist.Normal(jnp.zeros(10), np.sqrt(PRIOR_VAR)).to_event(1))
    numpyro.sample("x", dist.Normal(theta, np.sqrt(NOISE_VAR)).to_event(1), obs=x)


def observations(key, n):
    k_th, k_x = jax.random.split(key)
    theta = np.sqrt(PRIOR_VAR) * np.asarray(jax.random.normal(k_th, (n, 10)))
    return (theta + np.sqrt(NOISE_VAR) * np.asarray(jax.random.normal(k_x, (n, 10)))).astype(
        np.float32
    )


def accuracy(draws, xs, key, n_c2st):
    """(RMS mean error in sds, mean sd ratio, mean/min/max C2ST over the first n_c2st)."""
    draws = np.asarray(draws)
    mean = xs / 2
    err = float(np.sqrt(np.mean(((draws.mean(1) - mean) / POST_SD) ** 2)))
    ratio = float((draws.std(1) / POST_SD).mean())
    cs = []
    for i in range(min(n_c2st, len(xs))):
        k_ref, k_c = jax.random.split(jax.random.fold_in(key, i))
        ref = mean[i] + POST_SD * np.asarray(jax.random.normal(k_ref, draws[i].shape))
        cs.append(float(c2st(ref, draws[i], k_c)))
    return err, ratio, cs


def row(name, sims, seconds, err, ratio, cs, ess=None):
    """One line of the table; ``None`` prints as ``-``."""
    f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    c = f"{np.mean(cs):.3f} ({min(cs):.3f}-{max(cs):.3f})" if cs else "-"
    e = "-" if ess is None else f"{np.median(ess):.0f} / {np.min(ess):.0f}"
    print(
        f"{name:<30}{sims:>10,}{f(seconds, '.0f'):>9}{f(err, '.3f'):>10}{f(ratio, '.3f'):>9}"
        f"  {c:<22}{e}"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--alone", type=int, default=10, help="observations refined alone")
    p.add_argument("--num-simulations", type=int, default=10_000)
    p.add_argument("--budget", type=int, default=10_000)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast", action="store_true")
    a = p.parse_args()
    build = {}
    if a.fast:
        a.batch, a.alone, a.num_simulations, a.budget, a.num_samples = 10, 2, 2000, 1000, 500
        build = dict(num_labels=2000, train_steps=1000)
    warnings.simplefilter("ignore")  # low-ESS warnings are what this measures
    key = jax.random.PRNGKey(a.seed)
    k_build, k_obs, k_eval, k_alone, k_batch = jax.random.split(key, 5)
    xs = observations(k_obs, a.batch)
    per = a.budget // a.batch
    print(
        f"gaussian_linear (10-D): {a.batch} observations, {a.num_simulations:,} prior "
        f"simulations, {a.budget:,} more shared ({per} per observation alone); C2ST on "
        f"the first {a.alone} with {a.num_samples} draws per side"
    )
    inf = MFDiff(gaussian_linear, a.num_simulations, progress_bar=False, **build)
    t0 = time.perf_counter()
    inf.run(k_build)
    t_build = time.perf_counter() - t0
    obs = {"x": xs}
    ess0 = inf.ess(obs)
    low = inf.get_samples(k_eval, obs, a.num_samples)["theta"]
    res_low = accuracy(low, xs, k_eval, a.alone)

    t0 = time.perf_counter()
    alone = []
    for i in range(a.alone):
        inf.refine(jax.random.fold_in(k_alone, i), {"x": xs[i]}, max_simulations=per)
        alone.append(np.asarray(inf.get_samples(k_eval, {"x": xs[i]}, a.num_samples)["theta"]))
    t_alone = (time.perf_counter() - t0) / max(a.alone, 1) * a.batch
    _, _, cs_alone = accuracy(np.stack(alone), xs[: a.alone], k_eval, a.alone)
    err_alone, ratio_alone, _ = accuracy(np.stack(alone), xs[: a.alone], k_eval, 0)

    t0 = time.perf_counter()
    inf.refine(k_batch, obs, max_simulations=a.budget)
    t_batch = time.perf_counter() - t0
    pooled = inf.get_samples(k_eval, obs, a.num_samples, fidelity="low")["theta"]
    res_pooled = accuracy(pooled, xs, k_eval, a.alone)
    ode = np.stack(
        [
            np.asarray(inf.sample_ode(k_eval, {"x": x}, a.num_samples, fidelity="low")["theta"])
            for x in xs[: a.alone]
        ]
    )
    _, _, cs_ode = accuracy(ode, xs[: a.alone], k_eval, a.alone)

    print(f"\nbuild (G_low): {t_build:.0f} s")
    print(
        f"{'method':<30}{'more sims':>10}{'seconds':>9}{'mean err':>10}{'sd ratio':>9}  "
        f"{'C2ST':<22}ESS median / least"
    )
    row("G_low", 0, None, *res_low, ess0)
    row(
        f"each alone (first {a.alone}, x{a.batch})",
        per * a.batch,
        t_alone,
        err_alone,
        ratio_alone,
        cs_alone,
    )
    row("batched: G_low refitted", a.budget, t_batch, *res_pooled, inf.ess(obs, fidelity="low"))
    row("batched: ODE over the bank", a.budget, None, None, None, cs_ode)
    print(
        f"\nseconds, each alone / batched: {t_alone / t_batch:.1f}x (each alone timed on "
        f"{a.alone} observations and scaled to {a.batch})"
    )
    rounds = inf.diagnostics["pooled"]["rounds"]
    print(
        "batched rounds: "
        + "; ".join(
            f"{r['kernel_draws']} kernel + {r['prior_draws']} prior draws, ESS median "
            f"{r['ess_median']:.0f}, least {r['ess_min']:.0f}, {r['seconds']:.0f} s"
            for r in rounds
        )
    )


if __name__ == "__main__":
    main()
