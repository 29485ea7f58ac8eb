"""Viscous Burgers: multi-fidelity refinement against the exact grid posterior and NUTS.

``G_low`` is built on the coarse pseudo-spectral model (:func:`burgers_low`: 20
points, ``dt = 0.1``), then one observation of the exact (Cole-Hopf) solution
at the true parameters is refined with the fine model (:func:`burgers_high`:
128 points, ``dt = 0.01``). The reference is the posterior of the fine model
on a grid (two parameters: exact up to the grid); BlackJAX NUTS on the fine
model runs side by side. Printed: the cost of one solve at each fidelity
(batched, after compilation), accuracy against the grid posterior (C2ST and a
2-D histogram KL, in ``(log nu, log amp)``; the ``grid (2nd draw)`` row is the
floor of both metrics at this sample size), means and sds, solves spent at
each fidelity and wall times.

Run: ``python benchmarks/bench_burgers.py`` (``--fast`` for a smoke run).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import (
    BUILD,
    cost_per_solve,
    nuts_health,
    parser,
    run_mfdiff,
    run_nuts,
    stack,
    stage_table,
    subsample,
)

from numpyro_mfdiff.examples import (
    BURGERS_HIGH_GRID,
    BURGERS_LOW_GRID,
    BURGERS_TRUE,
    burgers_grid_posterior,
    burgers_grid_sample,
    burgers_high,
    burgers_low,
    burgers_observation,
    burgers_solution,
)
from numpyro_mfdiff.metrics import c2st, kl_divergence_hist

NAMES = ("nu", "amp")


def log_params(samples):
    """Dict of samples (any shape) -> ``(n, 2)`` array of ``(log nu, log amp)``."""
    return np.log(stack(samples, NAMES))


def seconds_per_solve(grid, y, batch=1000, repeats=3):
    """Best-of-``repeats`` seconds per solve, and per solve with the gradient of the
    Gaussian log-likelihood, for a batch of ``batch`` parameters (compiled first)."""
    key = jax.random.PRNGKey(0)
    params = jnp.exp(
        jnp.log(jnp.array([0.07, 1.0])) + jnp.array([0.4, 0.2]) * jax.random.normal(key, (batch, 2))
    )

    def solve(p):
        return burgers_solution((p[0], p[1]), **grid)

    def loglik(p):
        return -0.5 * jnp.sum((solve(p) - y) ** 2)

    return [cost_per_solve(fn, params, repeats) for fn in (solve, jax.grad(loglik))]


def main():
    a = parser(
        num_simulations=20_000, refine_simulations=1_000, rounds=3, nuts=("nuts", 4, 2_000, 1_000)
    ).parse_args()
    n_sim, n_ref, rounds = a.num_simulations, a.refine_simulations, a.rounds
    build = BUILD
    n_cmp, warmup, chains, n_nuts, cells = 2_000, a.nuts_warmup, a.nuts_chains, a.nuts_samples, 100
    bins = 20
    if a.fast:
        n_sim, n_ref, rounds = 2_000, 300, 2
        build = dict(num_labels=512, train_steps=200, num_steps=20, width=32, depth=2)
        n_cmp, warmup, chains, n_nuts, cells, bins = 500, 100, 2, 200, 40, 10

    y = burgers_observation(jax.random.PRNGKey(2))
    obs = {"y": y}

    cost = {
        "low": seconds_per_solve(BURGERS_LOW_GRID, y),
        "high": seconds_per_solve(BURGERS_HIGH_GRID, y),
    }

    t0 = time.perf_counter()
    grid = burgers_grid_posterior(y, num=(cells, cells))
    t_grid = time.perf_counter() - t0
    ref = log_params(burgers_grid_sample(jax.random.PRNGKey(10), grid, n_cmp))
    ref2 = log_params(burgers_grid_sample(jax.random.PRNGKey(11), grid, n_cmp))

    # keys: build 0, G_low samples 3, refinement 1, G_high samples 4, ODE 5
    (low, high, ode), times, d = run_mfdiff(
        burgers_low,
        burgers_high,
        obs,
        n_sim,
        n_ref,
        rounds,
        build,
        n_cmp,
        log_params,
        keys=(0, 3, 1, 4, 5),
    )
    idata, nuts_all = run_nuts(burgers_high, obs, chains, warmup, n_nuts, log_params, times)
    nuts_x = subsample(nuts_all, n_cmp)
    n_hf, n_grad = d["num_high_fidelity_simulations"], idata.attrs["num_gradient_evaluations"]

    print(
        f"Burgers: N_low={n_sim}, refine {rounds} x {n_ref}, NUTS {chains} chains x "
        f"({warmup} warmup + {n_nuts}), grid {cells}x{cells} (x2 passes), "
        f"{n_cmp} samples per method, devices={jax.devices()}"
    )
    print(
        f"likelihood-weight ESS: G_low {d['ess_low']:.1f}; refined importance ESS "
        f"{d['ess_after']:.1f}; NUTS {nuts_health(idata, NAMES)}"
    )

    print("\n| fidelity | grid | s per solve (batch 1000) | s per solve + gradient |")
    print("|---|---|---|---|")
    for name, g in (("low", BURGERS_LOW_GRID), ("high", BURGERS_HIGH_GRID)):
        c, cg = cost[name]
        print(f"| {name} | {g['n']} points, dt={g['dt']} | {c:.2e} | {cg:.2e} |")
    print(f"high / low cost per solve: {cost['high'][0] / cost['low'][0]:.1f}x")

    lo = np.quantile(ref, 0.0005, axis=0) - 0.5 * ref.std(0)
    hi = np.quantile(ref, 0.9995, axis=0) + 0.5 * ref.std(0)
    box = tuple(zip(lo.tolist(), hi.tolist(), strict=True))
    rows = [
        ("G_low", low),
        ("refined ODE", ode),
        ("G_high", high),
        ("NUTS", nuts_x),
        ("grid (2nd draw)", ref2),
    ]
    mean, sd = ref.mean(0), ref.std(0)
    key = jax.random.PRNGKey(7)
    print(
        f"\n| sampler | C2ST vs grid | KL(grid || x), {bins}x{bins} bins "
        "| log nu: mean shift / sd, sd ratio | log amp: mean shift / sd, sd ratio "
        "| nu mean (sd) | amp mean (sd) |"
    )
    print("|---" * 7 + "|")
    for name, x in rows:
        acc = float(c2st(x, ref, key))
        kl = float(kl_divergence_hist(ref, x, bins=bins, range=box))
        shift = (x.mean(0) - mean) / sd
        ratio = x.std(0) / sd
        nat = np.exp(x)
        cells_txt = " | ".join(f"{shift[i]:+.2f}, {ratio[i]:.2f}" for i in range(2))
        ms = " | ".join(f"{nat[:, i].mean():.4f} ({nat[:, i].std():.4f})" for i in range(2))
        print(f"| {name} | {acc:.3f} | {kl:.3f} | {cells_txt} | {ms} |")
    print(f"| truth | - | - | - | - | {BURGERS_TRUE['nu']:.4f} | {BURGERS_TRUE['amp']:.4f} |")

    stage_table(times, n_sim, n_hf, n_cmp, idata)
    print(f"| grid reference | {t_grid:.1f} | {2 * cells * cells} high-fidelity |")
    low_equiv = n_sim * cost["low"][0] / cost["high"][0]
    print(
        f"\nhigh-fidelity solves: refinement {n_hf} (+ {n_sim} low-fidelity, worth "
        f"{low_equiv:.0f} high-fidelity at the measured costs), NUTS {n_grad} with gradients "
        f"({n_grad / n_hf:.1f}x)"
    )


if __name__ == "__main__":
    main()
