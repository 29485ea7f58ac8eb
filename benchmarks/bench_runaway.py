"""Runaway-electron stand-in: multi-fidelity refinement against a long NUTS run.

``G_low`` is built on the coarse explicit-Euler model (:func:`runaway_low`), then one
observation of the RK4 model (:func:`runaway_high`) at the true parameters is refined with
RK4 solves. ``G_low``, ``G_high``, the refined ODE and a short NUTS run are compared with a
long NUTS run on the high-fidelity model (the reference): C2ST, means and sds. Reported:
simulations spent at each fidelity, the cost of one solve of each fidelity, wall time per
stage, and the number of high-fidelity solves (gradient evaluations) of both NUTS runs.

The model is a reduced 0-D stand-in for the paper's kinetic solver; see
:mod:`numpyro_mfdiff._ex_runaway`.

Run: ``python benchmarks/bench_runaway.py`` (``--fast`` for a smoke run).
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from bench_ou import cost_per_solve, cost_table, run_mfdiff, run_nuts

from numpyro_mfdiff.examples import (
    RUNAWAY_COARSE_DT,
    RUNAWAY_NOISE,
    RUNAWAY_TIMES,
    RUNAWAY_TRUE,
    runaway_high,
    runaway_low,
    runaway_solve,
)
from numpyro_mfdiff.metrics import c2st

NAMES = ("E_f", "n_e", "T_f")
TRUE = tuple(RUNAWAY_TRUE[k] for k in NAMES)


def observation(rng_key):
    """One observation (T,): log10 runaway fraction of the RK4 model plus noise."""
    f = runaway_solve(TRUE)
    return np.asarray(jnp.log10(f) + RUNAWAY_NOISE * jax.random.normal(rng_key, f.shape))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fast", action="store_true", help="tiny budgets (a smoke run)")
    p.add_argument("--num-simulations", type=int, default=20_000)
    p.add_argument("--refine-simulations", type=int, default=2_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--ref-chains", type=int, default=4)
    p.add_argument("--ref-samples", type=int, default=2_000)
    p.add_argument("--ref-warmup", type=int, default=1_000)
    a = p.parse_args()
    n_sim, n_ref, rounds = a.num_simulations, a.refine_simulations, a.rounds
    build = dict(num_labels=10_000, train_steps=4_000)
    n_cmp = 2_000
    ref_run = (a.ref_chains, a.ref_warmup, a.ref_samples)  # chains, warmup, draws
    short_run = (2, 200, 500)
    if a.fast:
        n_sim, n_ref, rounds = 2_000, 500, 1
        build = dict(num_labels=500, train_steps=200, num_steps=30, width=32, depth=2)
        n_cmp, ref_run, short_run = 500, (2, 200, 500), (2, 50, 100)

    y = observation(jax.random.PRNGKey(1))
    obs = {"y": y}
    (low, high, ode), times, d = run_mfdiff(
        runaway_low, runaway_high, obs, n_sim, n_ref, rounds, build, n_cmp, NAMES
    )
    print(
        f"runaway stand-in: N_low={n_sim}, refine {rounds} x {n_ref}, reference NUTS "
        f"{ref_run[0]} chains x ({ref_run[1]} warmup + {ref_run[2]}), short NUTS "
        f"{short_run[0]} x ({short_run[1]} + {short_run[2]}), {len(RUNAWAY_TIMES)} times, "
        f"noise {RUNAWAY_NOISE}, devices={jax.devices()}"
    )
    t_short = {}
    idata_short, short = run_nuts(runaway_high, obs, *short_run, NAMES, t_short)
    idata, ref_all = run_nuts(runaway_high, obs, *ref_run, NAMES, times)
    ref = ref_all[np.random.default_rng(0).permutation(len(ref_all))[:n_cmp]]
    print(
        f"likelihood-weight ESS: G_low {d['ess_low']:.1f}; refined importance ESS "
        f"{d['ess_after']:.1f}"
    )
    rows = [("G_low", low), ("G_high", high), ("refined ODE", ode), ("short NUTS", short)]
    rows.append(("reference NUTS", ref))
    key = jax.random.PRNGKey(7)
    print("\n| sampler | C2ST vs reference NUTS | " + " | ".join(f"{k} mean (sd)" for k in NAMES))
    print("|---" * (2 + len(NAMES)) + "|")
    for name, x in rows:
        acc = "-" if x is ref else f"{float(c2st(x, ref, key)):.3f}"
        ms = " | ".join(f"{m:.3f} ({s:.3f})" for m, s in zip(x.mean(0), x.std(0), strict=True))
        print(f"| {name} | {acc} | {ms} |")
    print("| truth | - | " + " | ".join(f"{v:.3f}" for v in TRUE) + " |")

    rng = np.random.default_rng(1)
    params = jnp.asarray(np.array(TRUE) * np.exp(0.1 * rng.normal(size=(2_000, 3))))
    costs = [
        cost_per_solve(lambda q, kw=kw: runaway_solve(tuple(q), **kw), params)
        for kw in (dict(dt=RUNAWAY_COARSE_DT, method="euler"), dict())
    ]
    cost_table(times, n_sim, d["num_high_fidelity_simulations"], costs, idata, n_cmp)
    n_short = idata_short.attrs["num_gradient_evaluations"]
    print(f"short NUTS: {t_short['nuts']:.1f} s, {n_short} high-fidelity solves with gradient")


if __name__ == "__main__":
    main()
