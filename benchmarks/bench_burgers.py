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

import argparse
import time

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.baselines import nuts
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
    return np.log(np.stack([np.asarray(samples[k]).reshape(-1) for k in NAMES], axis=1))


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

    out = []
    for fn in (jax.jit(jax.vmap(solve)), jax.jit(jax.vmap(jax.grad(loglik)))):
        fn(params).block_until_ready()
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(params).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        out.append(best / batch)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fast", action="store_true", help="tiny budgets (a smoke run)")
    p.add_argument("--num-simulations", type=int, default=20_000)
    p.add_argument("--refine-simulations", type=int, default=1_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--nuts-chains", type=int, default=4)
    p.add_argument("--nuts-samples", type=int, default=2_000)
    p.add_argument("--nuts-warmup", type=int, default=1_000)
    a = p.parse_args()
    n_sim, n_ref, rounds = a.num_simulations, a.refine_simulations, a.rounds
    build = dict(num_labels=10_000, train_steps=4_000)
    n_cmp, warmup, chains, n_nuts, cells = 2_000, a.nuts_warmup, a.nuts_chains, a.nuts_samples, 100
    bins = 20
    if a.fast:
        n_sim, n_ref, rounds = 2_000, 300, 2
        build = dict(num_labels=512, train_steps=200, num_steps=20, width=32, depth=2)
        n_cmp, warmup, chains, n_nuts, cells, bins = 500, 100, 2, 200, 40, 10

    y = burgers_observation(jax.random.PRNGKey(2))
    obs = {"y": y}
    times = {}

    cost = {
        "low": seconds_per_solve(BURGERS_LOW_GRID, y),
        "high": seconds_per_solve(BURGERS_HIGH_GRID, y),
    }

    t0 = time.perf_counter()
    grid = burgers_grid_posterior(y, num=(cells, cells))
    times["grid"] = time.perf_counter() - t0
    ref = log_params(burgers_grid_sample(jax.random.PRNGKey(10), grid, n_cmp))
    ref2 = log_params(burgers_grid_sample(jax.random.PRNGKey(11), grid, n_cmp))

    inf = MFDiff(burgers_low, num_simulations=n_sim, progress_bar=False, **build)
    t0 = time.perf_counter()
    inf.run(jax.random.PRNGKey(0))
    times["build"] = time.perf_counter() - t0
    ess_low = inf.ess(obs)
    low = log_params(inf.get_samples(jax.random.PRNGKey(3), obs, n_cmp))

    t0 = time.perf_counter()
    inf.refine(jax.random.PRNGKey(1), obs, model=burgers_high, num_simulations=n_ref, rounds=rounds)
    times["refine"] = time.perf_counter() - t0
    (d,) = inf.diagnostics["refinements"].values()
    high = log_params(inf.get_samples(jax.random.PRNGKey(4), obs, n_cmp))
    t0 = time.perf_counter()
    ode = log_params(inf.sample_ode(jax.random.PRNGKey(5), obs, n_cmp))
    times["sample_ode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    idata = nuts(
        burgers_high,
        obs,
        jax.random.PRNGKey(6),
        num_chains=chains,
        num_warmup=warmup,
        num_samples=n_nuts,
    )
    times["nuts"] = time.perf_counter() - t0
    nuts_all = log_params({k: idata.posterior[k].values for k in NAMES})
    nuts_x = nuts_all[np.random.default_rng(0).permutation(len(nuts_all))[:n_cmp]]
    div = int(idata.sample_stats["diverging"].sum())
    rhat = {k: float(v) for k, v in az.rhat(idata, var_names=list(NAMES)).items()}
    n_hf, n_grad = d["num_high_fidelity_simulations"], idata.attrs["num_gradient_evaluations"]

    print(
        f"Burgers: N_low={n_sim}, refine {rounds} x {n_ref}, NUTS {chains} chains x "
        f"({warmup} warmup + {n_nuts}), grid {cells}x{cells} (x2 passes), "
        f"{n_cmp} samples per method, devices={jax.devices()}"
    )
    print(
        f"likelihood-weight ESS: G_low {ess_low:.1f}; refined importance ESS "
        f"{d['ess_after']:.1f}; NUTS {div} divergences, r_hat "
        + ", ".join(f"{k} {v:.3f}" for k, v in rhat.items())
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

    print("\n| stage | seconds | solves |")
    print("|---|---|---|")
    print(f"| G_low build | {times['build']:.1f} | {n_sim} low-fidelity |")
    print(f"| refinement + G_high | {times['refine']:.1f} | {n_hf} high-fidelity |")
    print(f"| refined sample_ode ({n_cmp}) | {times['sample_ode']:.1f} | 0 |")
    print(
        f"| NUTS | {times['nuts']:.1f} | {n_grad} high-fidelity with gradient "
        f"({idata.attrs['num_gradient_evaluations_warmup']} in warmup) |"
    )
    print(f"| grid reference | {times['grid']:.1f} | {2 * cells * cells} high-fidelity |")
    low_equiv = n_sim * cost["low"][0] / cost["high"][0]
    print(
        f"\nhigh-fidelity solves: refinement {n_hf} (+ {n_sim} low-fidelity, worth "
        f"{low_equiv:.0f} high-fidelity at the measured costs), NUTS {n_grad} with gradients "
        f"({n_grad / n_hf:.1f}x)"
    )


if __name__ == "__main__":
    main()
