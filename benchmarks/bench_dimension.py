"""Refinement against NUTS as the dimension grows (issue 26).

Two NumPyro models nobody on the project wrote, through the public API with defaults
and only the budget set: 10^4 prior simulations, then
``refine(key, y, max_simulations=B - 10^4)``, so that ``B`` counts every model
evaluation (prior simulations, refinement simulations and gradient evaluations);
``B`` is 6 x 10^4 for the varying intercepts (1.7 x 10^5 at ``J = 64``) and 2 x 10^4
for the logistic regressions:

- varying intercepts, ``J`` groups of 5 points (centred as written; ``reparam="auto"``
  non-centres it), ``J`` in 8, 16, 32, 64 (data simulated once per ``J``, seed 0);
- logistic regression with ``p`` features and 300 points, ``p`` in 5, 10, 20.

Against NumPyro NUTS, 4 chains x 2,000 draws after 1,000 warm-up steps (the varying
intercepts non-centred for NUTS too): the refined draws' largest mean error in posterior
sds and the range of sd ratios over the latent coordinates (constrained), C2ST where
``d <= 12``, the evaluations spent and the seconds, side by side with NUTS's seconds and
gradient evaluations (leapfrog steps, warm-up included).

    python benchmarks/bench_dimension.py                  # everything
    python benchmarks/bench_dimension.py --only vi32 lr10 # a subset
    python benchmarks/bench_dimension.py --fast           # a smoke run
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS
from numpyro.infer.reparam import LocScaleReparam

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.metrics import c2st

POINTS_PER_GROUP = 5
LOGISTIC_POINTS = 300
# total evaluations per problem (10^4 prior simulations included), as in the goals
# (J = 64: 1.7 x 10^5, fewer than NUTS's ~1.8 x 10^5 gradient evaluations on it)
BUDGETS = {"vi": 60_000, "lr": 20_000, "vi64": 170_000}
PRIOR_SIMULATIONS = 10_000


def varying_intercepts(group, y=None, num_groups=8):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(5.0))
    with numpyro.plate("groups", num_groups):
        alpha = numpyro.sample("alpha", dist.Normal(mu, tau))
    numpyro.sample("y", dist.Normal(alpha[group], 1.0), obs=y)


def logistic(X, y=None):
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 1.0))
    beta = numpyro.sample("beta", dist.Normal(jnp.zeros(X.shape[1]), 1.0).to_event(1))
    numpyro.sample("y", dist.Bernoulli(logits=alpha + X @ beta), obs=y)


def problem(name):
    """``(model, args, kwargs, data y, latent site names)`` of a problem ``vi<J>``/``lr<p>``,
    its data simulated once at seed 0."""
    rng = np.random.default_rng(0)
    if name.startswith("vi"):
        j = int(name[2:])
        group = jnp.repeat(jnp.arange(j), POINTS_PER_GROUP)
        alpha = 1.0 + 1.5 * rng.normal(size=j)
        y = alpha[np.asarray(group)] + rng.normal(size=group.size)
        return varying_intercepts, (group,), dict(num_groups=j), jnp.asarray(y, jnp.float32)
    p = int(name[2:])
    X = jnp.asarray(rng.normal(size=(LOGISTIC_POINTS, p)), jnp.float32)
    beta = rng.normal(size=p) * 0.7
    y = (rng.uniform(size=LOGISTIC_POINTS) < 1 / (1 + np.exp(-(0.3 + X @ beta)))).astype(np.float32)
    return logistic, (X,), {}, jnp.asarray(y)


def flat(samples, names):
    """Draws of the sites ``names`` flattened to (S, d)."""
    return np.concatenate(
        [np.asarray(samples[n]).reshape(np.asarray(samples[n]).shape[0], -1) for n in names], 1
    )


def run_nuts(key, model, args, kwargs, y, names, chains, samples, warmup):
    m = model
    if model is varying_intercepts:
        m = numpyro.handlers.reparam(model, config={"alpha": LocScaleReparam(0)})
    mcmc = MCMC(
        NUTS(m),
        num_warmup=warmup,
        num_samples=samples,
        num_chains=chains,
        chain_method="sequential",
        progress_bar=False,
    )
    t0 = time.perf_counter()
    mcmc.run(key, *args, y=y, **kwargs, extra_fields=("num_steps",))
    secs = time.perf_counter() - t0
    steps = int(np.sum(mcmc.get_extra_fields()["num_steps"]))
    # the warm-up's leapfrog steps are not kept: estimate them at the sampling rate
    steps = int(steps * (samples + warmup) / samples)
    return flat(mcmc.get_samples(), names), secs, steps


def run_mfdiff(key, model, args, kwargs, y, names, budget, fast):
    k_run, k_ref, k_draw = jax.random.split(key, 3)
    settings = {} if not fast else dict(num_labels=1_000, train_steps=300, width=32)
    n_prior = 2_000 if fast else PRIOR_SIMULATIONS
    t0 = time.perf_counter()
    inf = MFDiff(model, num_simulations=n_prior, progress_bar=False, **settings)
    inf.run(k_run, *args, **kwargs)
    inf.refine(k_ref, {"y": y}, max_simulations=budget - n_prior)
    secs = time.perf_counter() - t0
    rec = next(iter(inf.diagnostics["refinements"].values()))
    draws = flat(inf.get_samples(k_draw, {"y": y}, num_samples=8_000), names)
    ode = flat(inf.sample_ode(k_draw, {"y": y}, num_samples=8_000), names)
    return draws, ode, secs, n_prior + rec["num_high_fidelity_simulations"], rec


def compare(draws, ref):
    sd = ref.std(0)
    err = float(np.max(np.abs(draws.mean(0) - ref.mean(0)) / sd))
    ratio = draws.std(0) / sd
    return err, float(ratio.min()), float(ratio.max())


def main():
    p = argparse.ArgumentParser()
    p.add_argument(
        "--only", nargs="*", default=["vi8", "vi16", "vi32", "vi64", "lr5", "lr10", "lr20"]
    )
    p.add_argument("--fast", action="store_true", help="small budgets (a smoke run)")
    p.add_argument("--nuts-chains", type=int, default=4)
    p.add_argument("--nuts-samples", type=int, default=2_000)
    p.add_argument("--nuts-warmup", type=int, default=1_000)
    a = p.parse_args()
    print(
        "| problem | d | evaluations | seconds | G_high mean err (sd) | sd ratios | "
        "ODE mean err | ODE sd ratios | C2ST G_high | engine, ESS | NUTS s | NUTS grads |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in a.only:
        model, args, kwargs, y = problem(name)
        names = ["mu", "tau", "alpha"] if name.startswith("vi") else ["alpha", "beta"]
        budget = BUDGETS.get(name, BUDGETS[name[:2]]) // (5 if a.fast else 1)
        key = jax.random.PRNGKey(1)
        ref, n_secs, n_steps = run_nuts(
            key, model, args, kwargs, y, names, a.nuts_chains, a.nuts_samples, a.nuts_warmup
        )
        draws, ode, secs, evals, rec = run_mfdiff(
            jax.random.PRNGKey(2), model, args, kwargs, y, names, budget, a.fast
        )
        d = ref.shape[1]
        err, lo, hi = compare(draws, ref)
        o_err, o_lo, o_hi = compare(ode, ref)
        c = "-"
        if d <= 12:
            n = min(len(ref), len(draws))
            c = f"{float(c2st(draws[:n], ref[:n], jax.random.PRNGKey(3))):.3f}"
        print(
            f"| {name} | {d} | {evals} | {secs:.0f} | {err:.3f} | {lo:.2f}-{hi:.2f} | "
            f"{o_err:.3f} | {o_lo:.2f}-{o_hi:.2f} | {c} | {rec['engine']}, "
            f"{rec['ess_after']:.0f} | {n_secs:.0f} | {n_steps} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
