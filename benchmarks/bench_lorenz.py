"""Lorenz 63 multi-fidelity refinement against a long BlackJAX NUTS run.

``G_low`` is built on the coarse RK4 model (:func:`lorenz63_low`), then one
observation simulated from the adaptive diffrax model (:func:`lorenz63_high`)
at the true parameters is refined with high-fidelity simulations. Both
posteriors (and the refined ODE) are compared with NUTS on the high-fidelity
model: C2ST, means and sds, whether the truth lies in the central 90%
interval and in the 90% Gaussian (Mahalanobis) region, the number of
high-fidelity solves and the wall time of each stage.

Run: ``python benchmarks/bench_lorenz.py`` (``--fast`` for a smoke run).
"""

import argparse
import time

import jax
import numpy as np
from scipy.stats import chi2

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.baselines import nuts
from numpyro_mfdiff.examples import (
    LORENZ_NOISE,
    LORENZ_TIMES,
    LORENZ_TRUE,
    lorenz63_diffrax,
    lorenz63_high,
    lorenz63_low,
)
from numpyro_mfdiff.metrics import c2st

NAMES = ("sigma", "rho", "beta")


def observation(rng_key):
    """One noisy observation (T, 3) of the high-fidelity model at the true parameters."""
    states = lorenz63_diffrax(tuple(LORENZ_TRUE[k] for k in NAMES))
    return np.asarray(states + LORENZ_NOISE * jax.random.normal(rng_key, states.shape))


def stack(samples):
    """Dict of (n,) samples -> (n, 3) in the order of ``NAMES``."""
    return np.stack([np.asarray(samples[k]).reshape(-1) for k in NAMES], axis=1)


def coverage(x):
    """Per parameter: truth in the central 90% interval; and truth in the 90% Gaussian region."""
    truth = np.array([LORENZ_TRUE[k] for k in NAMES])
    lo, hi = np.quantile(x, [0.05, 0.95], axis=0)
    inside = (lo <= truth) & (truth <= hi)
    d = truth - x.mean(0)
    cov = np.cov(x.T)
    if np.linalg.cond(cov) > 1e10:  # collapsed samples (importance ESS ~ 1): no region
        return inside, False, float("nan")
    maha = float(d @ np.linalg.solve(cov, d))
    return inside, maha <= chi2.ppf(0.9, df=3), maha


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fast", action="store_true", help="tiny budgets (a smoke run)")
    p.add_argument("--num-simulations", type=int, default=10_000)
    p.add_argument("--refine-simulations", type=int, default=2_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--nuts-chains", type=int, default=2)
    p.add_argument("--nuts-samples", type=int, default=1_000)
    p.add_argument("--nuts-warmup", type=int, default=500)
    a = p.parse_args()
    n_sim, n_ref, rounds = a.num_simulations, a.refine_simulations, a.rounds
    build = dict(num_labels=10_000, train_steps=4_000)
    n_cmp, warmup, chains, n_nuts = 2_000, a.nuts_warmup, a.nuts_chains, a.nuts_samples
    if a.fast:
        n_sim, n_ref, rounds = 2_000, 300, 1
        build = dict(num_labels=500, train_steps=200, num_steps=30, width=32, depth=2)
        n_cmp, warmup, chains, n_nuts = 300, 100, 2, 150

    y = observation(jax.random.PRNGKey(1))
    obs = {"y": y}
    times = {}

    inf = MFDiff(lorenz63_low, num_simulations=n_sim, progress_bar=False, **build)
    t0 = time.perf_counter()
    inf.run(jax.random.PRNGKey(0))
    times["G_low build (low-fidelity)"] = time.perf_counter() - t0
    ess_low = inf.ess(obs)
    low = stack(inf.get_samples(jax.random.PRNGKey(2), obs, n_cmp))

    t0 = time.perf_counter()
    inf.refine(
        jax.random.PRNGKey(3), obs, model=lorenz63_high, num_simulations=n_ref, rounds=rounds
    )
    times["refinement (high-fidelity)"] = time.perf_counter() - t0
    d = next(iter(inf.diagnostics["refinements"].values()))
    high = stack(inf.get_samples(jax.random.PRNGKey(4), obs, n_cmp))
    t0 = time.perf_counter()
    ode = stack(inf.sample_ode(jax.random.PRNGKey(5), obs, n_cmp))
    times["refined sample_ode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    idata = nuts(
        lorenz63_high,
        obs,
        jax.random.PRNGKey(6),
        num_chains=chains,
        num_warmup=warmup,
        num_samples=n_nuts,
    )
    times["NUTS (high-fidelity)"] = time.perf_counter() - t0
    print({k: round(v, 1) for k, v in times.items()}, flush=True)
    ref_all = stack({k: idata.posterior[k].values for k in NAMES})
    ref = ref_all[np.random.default_rng(0).permutation(len(ref_all))[:n_cmp]]
    div = int(idata.sample_stats["diverging"].sum())
    rhat = {k: float(v) for k, v in __import__("arviz").rhat(idata, var_names=list(NAMES)).items()}

    print(
        f"Lorenz 63: N_low={n_sim}, refine {rounds} x {n_ref}, NUTS {chains} chains x "
        f"({warmup} warmup + {n_nuts}), {len(LORENZ_TIMES)} times x 3 states, noise "
        f"{LORENZ_NOISE}, devices={jax.devices()}"
    )
    print(
        f"likelihood-weight ESS: G_low {ess_low:.1f}; refined importance ESS {d['ess_after']:.1f}"
    )
    print(f"NUTS: {div} divergences, r_hat " + ", ".join(f"{k} {v:.3f}" for k, v in rhat.items()))
    rows = [("G_low", low), ("G_high", high), ("refined ODE", ode), ("NUTS (ref)", ref)]
    key = jax.random.PRNGKey(7)
    print("\n| sampler | C2ST vs NUTS | " + " | ".join(f"{k} mean (sd)" for k in NAMES), end="")
    print(" | truth in 90% CI (per param) | truth in 90% region (Mahalanobis^2) |")
    print("|---" * 6 + "|")
    for name, x in rows:
        acc = "-" if x is ref else f"{float(c2st(x, ref, key)):.3f}"
        ms = " | ".join(f"{m:.3f} ({s:.3f})" for m, s in zip(x.mean(0), x.std(0), strict=True))
        inside, ok, maha = coverage(x)
        flags = "/".join("yes" if v else "no" for v in inside)
        print(f"| {name} | {acc} | {ms} | {flags} | {'yes' if ok else 'no'} ({maha:.2f}) |")
    truth = " | ".join(f"{LORENZ_TRUE[k]:.3f}" for k in NAMES)
    print(f"| truth | - | {truth} | - | - |")

    n_hf = d["num_high_fidelity_simulations"]
    n_grad = idata.attrs["num_gradient_evaluations"]
    print("\n| stage | seconds | solves |")
    print("|---|---|---|")
    print(f"| G_low build | {times['G_low build (low-fidelity)']:.1f} | {n_sim} low-fidelity |")
    t_ref = times["refinement (high-fidelity)"]
    print(f"| refinement + G_high | {t_ref:.1f} | {n_hf} high-fidelity |")
    print(f"| refined sample_ode ({n_cmp}) | {times['refined sample_ode']:.1f} | 0 |")
    print(
        f"| NUTS | {times['NUTS (high-fidelity)']:.1f} | {n_grad} high-fidelity with gradient "
        f"({idata.attrs['num_gradient_evaluations_warmup']} in warmup) |"
    )
    print(f"\nhigh-fidelity solves: refinement {n_hf}, NUTS {n_grad} ({n_grad / n_hf:.1f}x)")


if __name__ == "__main__":
    main()
