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

from functools import partial

import jax
import numpy as np
from _common import (
    BUILD,
    FAST_BUILD,
    c2st_cell,
    ess_line,
    mean_sd,
    nuts_health,
    parser,
    run_mfdiff,
    run_nuts,
    stack,
    stage_table,
    subsample,
)
from scipy.stats import chi2

from numpyro_mfdiff.examples import (
    LORENZ_NOISE,
    LORENZ_TIMES,
    LORENZ_TRUE,
    lorenz63_diffrax,
    lorenz63_high,
    lorenz63_low,
)

NAMES = ("sigma", "rho", "beta")
STAGES = {  # names of the timed stages in the first printed line
    "G_low": "G_low build (low-fidelity)",
    "refine": "refinement (high-fidelity)",
    "ode": "refined sample_ode",
    "nuts": "NUTS (high-fidelity)",
}


def observation(rng_key):
    """One noisy observation (T, 3) of the high-fidelity model at the true parameters."""
    states = lorenz63_diffrax(tuple(LORENZ_TRUE[k] for k in NAMES))
    return np.asarray(states + LORENZ_NOISE * jax.random.normal(rng_key, states.shape))


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
    a = parser(
        num_simulations=10_000, refine_simulations=2_000, rounds=3, nuts=("nuts", 2, 1_000, 500)
    ).parse_args()
    n_sim, n_ref, rounds = a.num_simulations, a.refine_simulations, a.rounds
    build = BUILD
    n_cmp, warmup, chains, n_nuts = 2_000, a.nuts_warmup, a.nuts_chains, a.nuts_samples
    if a.fast:
        n_sim, n_ref, rounds = 2_000, 300, 1
        build = FAST_BUILD
        n_cmp, warmup, chains, n_nuts = 300, 100, 2, 150

    to_array = partial(stack, names=NAMES)
    y = observation(jax.random.PRNGKey(1))
    obs = {"y": y}
    (low, high, ode), times, d = run_mfdiff(
        lorenz63_low, lorenz63_high, obs, n_sim, n_ref, rounds, build, n_cmp, to_array
    )
    idata, ref_all = run_nuts(lorenz63_high, obs, chains, warmup, n_nuts, to_array, times)
    print({STAGES[k]: round(v, 1) for k, v in times.items()}, flush=True)
    ref = subsample(ref_all, n_cmp)

    print(
        f"Lorenz 63: N_low={n_sim}, refine {rounds} x {n_ref}, NUTS {chains} chains x "
        f"({warmup} warmup + {n_nuts}), {len(LORENZ_TIMES)} times x 3 states, noise "
        f"{LORENZ_NOISE}, devices={jax.devices()}"
    )
    print(ess_line(d))
    print(f"NUTS: {nuts_health(idata, NAMES)}")
    rows = [("G_low", low), ("G_high", high), ("refined ODE", ode), ("NUTS (ref)", ref)]
    key = jax.random.PRNGKey(7)
    print("\n| sampler | C2ST vs NUTS | " + " | ".join(f"{k} mean (sd)" for k in NAMES), end="")
    print(" | truth in 90% CI (per param) | truth in 90% region (Mahalanobis^2) |")
    print("|---" * 6 + "|")
    for name, x in rows:
        inside, ok, maha = coverage(x)
        flags = "/".join("yes" if v else "no" for v in inside)
        print(
            f"| {name} | {c2st_cell(x, ref, key)} | {mean_sd(x)} | {flags} | "
            f"{'yes' if ok else 'no'} ({maha:.2f}) |"
        )
    truth = " | ".join(f"{LORENZ_TRUE[k]:.3f}" for k in NAMES)
    print(f"| truth | - | {truth} | - | - |")

    n_hf = d["num_high_fidelity_simulations"]
    n_grad = idata.attrs["num_gradient_evaluations"]
    stage_table(times, n_sim, n_hf, n_cmp, idata)
    print(f"\nhigh-fidelity solves: refinement {n_hf}, NUTS {n_grad} ({n_grad / n_hf:.1f}x)")


if __name__ == "__main__":
    main()
