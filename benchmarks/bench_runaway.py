"""Runaway-electron stand-in: multi-fidelity refinement against a long NUTS run.

``G_low`` is built on the coarse explicit-Euler model (:func:`runaway_low`), then one
observation of the RK4 model (:func:`runaway_high`) at the true parameters is refined with
RK4 solves. ``G_low``, ``G_high``, the refined ODE and a short NUTS run are compared with a
long NUTS run on the high-fidelity model (the reference): C2ST, means and sds. Reported:
simulations spent at each fidelity, the cost of one solve of each fidelity, wall time per
stage, and the number of high-fidelity solves (gradient evaluations) of both NUTS runs.

The model is a reduced 0-D stand-in for the paper's kinetic solver; see
the module docstring of ``numpyro_mfdiff/examples/_runaway.py``.

Run: ``python benchmarks/bench_runaway.py`` (``--fast`` for a smoke run).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from _common import (
    BUILD,
    FAST_BUILD,
    c2st_cell,
    cost_per_solve,
    cost_table,
    ess_line,
    mean_sd,
    nuts_health,
    parser,
    run_mfdiff,
    run_nuts,
    stack,
    subsample,
)

from numpyro_mfdiff.examples import (
    RUNAWAY_COARSE_DT,
    RUNAWAY_NOISE,
    RUNAWAY_TIMES,
    RUNAWAY_TRUE,
    runaway_high,
    runaway_low,
    runaway_solve,
)

NAMES = ("E_f", "n_e", "T_f")
TRUE = tuple(RUNAWAY_TRUE[k] for k in NAMES)


def observation(rng_key):
    """One observation (T,): log10 runaway fraction of the RK4 model plus noise."""
    f = runaway_solve(TRUE)
    return np.asarray(jnp.log10(f) + RUNAWAY_NOISE * jax.random.normal(rng_key, f.shape))


def main():
    a = parser(
        num_simulations=20_000, refine_simulations=2_000, rounds=2, nuts=("ref", 4, 2_000, 1_000)
    ).parse_args()
    n_sim, n_ref, rounds = a.num_simulations, a.refine_simulations, a.rounds
    build = BUILD
    n_cmp = 2_000
    ref_run = (a.ref_chains, a.ref_warmup, a.ref_samples)  # chains, warmup, draws
    short_run = (2, 200, 500)
    if a.fast:
        n_sim, n_ref, rounds = 2_000, 500, 1
        build = FAST_BUILD
        n_cmp, ref_run, short_run = 500, (2, 200, 500), (2, 50, 100)

    to_array = partial(stack, names=NAMES)
    y = observation(jax.random.PRNGKey(1))
    obs = {"y": y}
    (low, high, ode), times, d = run_mfdiff(
        runaway_low, runaway_high, obs, n_sim, n_ref, rounds, build, n_cmp, to_array
    )
    print(
        f"runaway stand-in: N_low={n_sim}, refine {rounds} x {n_ref}, reference NUTS "
        f"{ref_run[0]} chains x ({ref_run[1]} warmup + {ref_run[2]}), short NUTS "
        f"{short_run[0]} x ({short_run[1]} + {short_run[2]}), {len(RUNAWAY_TIMES)} times, "
        f"noise {RUNAWAY_NOISE}, devices={jax.devices()}"
    )
    t_short = {}
    idata_short, short = run_nuts(runaway_high, obs, *short_run, to_array, t_short)
    print(f"NUTS: {nuts_health(idata_short, NAMES)}")
    idata, ref_all = run_nuts(runaway_high, obs, *ref_run, to_array, times)
    print(f"NUTS: {nuts_health(idata, NAMES)}")
    ref = subsample(ref_all, n_cmp)
    print(ess_line(d))
    rows = [("G_low", low), ("G_high", high), ("refined ODE", ode), ("short NUTS", short)]
    rows.append(("reference NUTS", ref))
    key = jax.random.PRNGKey(7)
    print("\n| sampler | C2ST vs reference NUTS | " + " | ".join(f"{k} mean (sd)" for k in NAMES))
    print("|---" * (2 + len(NAMES)) + "|")
    for name, x in rows:
        print(f"| {name} | {c2st_cell(x, ref, key)} | {mean_sd(x)} |")
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
