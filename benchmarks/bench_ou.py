"""Linear SDE (Ornstein-Uhlenbeck) multi-fidelity refinement against the exact grid posterior.

``G_low`` is built on the coarse Euler-Maruyama law (:func:`ou_low`), then one observation
of the exact process at the true parameters is refined with exact-law simulations
(:func:`ou_high`). ``G_low``, ``G_high``, the refined ODE and NUTS on the exact model are
compared with the exact posterior on a 2-D grid: histogram KL (exact || sampler) on a 25 x 25
grid, C2ST against exact grid samples, means and sds. Reported: simulations spent at each
fidelity, the cost of one solve of each fidelity, wall time per stage, and NUTS's number of
high-fidelity solves (gradient evaluations).

Run: ``python benchmarks/bench_ou.py`` (``--fast`` for a smoke run).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.baselines import nuts
from numpyro_mfdiff.examples import (
    OU_NOISE,
    OU_TIMES,
    OU_TRUE,
    ou_euler_moments,
    ou_exact_moments,
    ou_high,
    ou_log_posterior_grid,
    ou_low,
)
from numpyro_mfdiff.metrics import c2st, kl_divergence_hist

NAMES = ("theta", "sigma")
RANGE = ((0.3, 2.0), (0.15, 1.1))  # holds all but ~1e-5 of the exact posterior mass
BINS = 25


def stack(samples, names):
    """Dict (or InferenceData posterior) of samples -> (n, len(names)) in the order of ``names``."""
    return np.stack([np.asarray(samples[k]).reshape(-1) for k in names], axis=1)


def cost_per_solve(solve, params, repeats=3):
    """Seconds per solve of ``solve(p) -> array`` over the rows of ``params`` (n, d):
    ``jit(vmap(solve))`` compiled first, then the best of ``repeats`` timed calls / n."""
    f = jax.jit(jax.vmap(solve))
    jax.block_until_ready(f(params))
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(params))
        best = min(best, time.perf_counter() - t0)
    return best / params.shape[0]


def observation(rng_key):
    """One observation (T,) of the exact OU law at the true parameters, with its noise."""
    mean, cov = (np.asarray(v) for v in ou_exact_moments(OU_TRUE["theta"], OU_TRUE["sigma"]))
    chol = np.linalg.cholesky(cov + OU_NOISE**2 * np.eye(len(OU_TIMES)))
    return mean + chol @ np.asarray(jax.random.normal(rng_key, (len(OU_TIMES),)))


def grid_reference(y, n, rng_key, fine=400):
    """Exact bin masses (BINS, BINS) over RANGE and ``n`` exact samples (n, 2) drawn from a
    ``fine x fine`` grid of the posterior density, uniformly jittered within each cell."""
    edges = [np.linspace(lo, hi, fine + 1) for lo, hi in RANGE]
    centres = [0.5 * (e[1:] + e[:-1]) for e in edges]
    p = np.exp(ou_log_posterior_grid(y, *centres).astype(np.float64))
    p /= p.sum()
    k = fine // BINS
    probs = p.reshape(BINS, k, BINS, k).sum((1, 3))
    k1, k2 = jax.random.split(rng_key)
    idx = np.asarray(jax.random.choice(k1, fine * fine, (n,), p=jnp.asarray(p.ravel())))
    u = np.asarray(jax.random.uniform(k2, (n, 2)))
    width = [e[1] - e[0] for e in edges]
    x = np.stack(
        [edges[0][idx // fine] + u[:, 0] * width[0], edges[1][idx % fine] + u[:, 1] * width[1]], 1
    )
    return probs, x


def accuracy_table(rows, probs, exact, truth, rng_key):
    """Print one markdown row per sampler: KL on the grid, C2ST against exact samples,
    means (sds)."""
    print(
        "\n| sampler | KL(exact \\|\\| sampler), 25x25 grid | C2ST vs exact | "
        + " | ".join(f"{k} mean (sd)" for k in NAMES)
        + " |"
    )
    print("|---" * (3 + len(NAMES)) + "|")
    for name, x in rows + [("exact (grid samples)", None)]:
        x = exact[: len(exact) // 2] if x is None else x
        ref = exact[len(exact) // 2 :]
        kl = float(kl_divergence_hist(probs, x, bins=BINS, range=RANGE, p_is_probs=True))
        acc = float(c2st(x, ref, rng_key))
        ms = " | ".join(f"{m:.3f} ({s:.3f})" for m, s in zip(x.mean(0), x.std(0), strict=True))
        print(f"| {name} | {kl:.3f} | {acc:.3f} | {ms} |")
    print("| truth | - | - | " + " | ".join(f"{v:.3f}" for v in truth) + " |")


def cost_table(times, n_sim, n_hf, costs, idata, n_cmp):
    """Print the stages: seconds and solves at each fidelity, and the NUTS row."""
    n_grad = idata.attrs["num_gradient_evaluations"]
    print(
        f"\ncost of one solve: low fidelity {costs[0] * 1e6:.2f} us, high fidelity "
        f"{costs[1] * 1e6:.2f} us (batched, jit(vmap), no gradient)"
    )
    print("\n| stage | seconds | low-fidelity solves | high-fidelity solves |")
    print("|---|---|---|---|")
    print(f"| G_low build | {times['G_low']:.1f} | {n_sim} | 0 |")
    print(f"| refinement + G_high | {times['refine']:.1f} | 0 | {n_hf} |")
    print(f"| refined sample_ode ({n_cmp}) | {times['ode']:.1f} | 0 | 0 |")
    print(
        f"| NUTS | {times['nuts']:.1f} | 0 | {n_grad} with gradient "
        f"({idata.attrs['num_gradient_evaluations_warmup']} in warmup) |"
    )
    print(f"\nhigh-fidelity solves: refinement {n_hf}, NUTS {n_grad} ({n_grad / n_hf:.1f}x)")


def run_mfdiff(model_low, model_high, obs, n_sim, n_ref, rounds, build, n_cmp, names):
    """Build G_low, refine ``obs``; returns samples (G_low, G_high, ODE), timings, diagnostics."""
    times = {}
    inf = MFDiff(model_low, num_simulations=n_sim, progress_bar=False, **build)
    t0 = time.perf_counter()
    inf.run(jax.random.PRNGKey(0))
    times["G_low"] = time.perf_counter() - t0
    ess_low = inf.ess(obs)
    low = stack(inf.get_samples(jax.random.PRNGKey(2), obs, n_cmp), names)
    t0 = time.perf_counter()
    inf.refine(jax.random.PRNGKey(3), obs, model=model_high, num_simulations=n_ref, rounds=rounds)
    times["refine"] = time.perf_counter() - t0
    d = next(iter(inf.diagnostics["refinements"].values()))
    d["ess_low"] = ess_low
    high = stack(inf.get_samples(jax.random.PRNGKey(4), obs, n_cmp), names)
    t0 = time.perf_counter()
    ode = stack(inf.sample_ode(jax.random.PRNGKey(5), obs, n_cmp), names)
    times["ode"] = time.perf_counter() - t0
    return (low, high, ode), times, d


def run_nuts(model, obs, chains, warmup, n_nuts, names, times):
    """NUTS on ``model``: returns the InferenceData and the draws (n, d); times['nuts']."""
    t0 = time.perf_counter()
    idata = nuts(
        model, obs, jax.random.PRNGKey(6), num_chains=chains, num_warmup=warmup, num_samples=n_nuts
    )
    times["nuts"] = time.perf_counter() - t0
    div = int(idata.sample_stats["diverging"].sum())
    rhat = {k: float(v) for k, v in __import__("arviz").rhat(idata, var_names=list(names)).items()}
    print(f"NUTS: {div} divergences, r_hat " + ", ".join(f"{k} {v:.3f}" for k, v in rhat.items()))
    return idata, stack(idata.posterior, names)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fast", action="store_true", help="tiny budgets (a smoke run)")
    p.add_argument("--num-simulations", type=int, default=20_000)
    p.add_argument("--refine-simulations", type=int, default=2_000)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    n_sim, n_ref, rounds = a.num_simulations, a.refine_simulations, a.rounds
    build = dict(num_labels=10_000, train_steps=4_000)
    n_cmp, chains, warmup, n_nuts = 2_000, 4, 1_000, 1_000
    if a.fast:
        n_sim, n_ref, rounds = 2_000, 500, 1
        build = dict(num_labels=500, train_steps=200, num_steps=30, width=32, depth=2)
        n_cmp, chains, warmup, n_nuts = 1_000, 2, 200, 500

    y = observation(jax.random.PRNGKey(1))
    obs = {"y": y}
    probs, exact = grid_reference(y, 2 * n_cmp, jax.random.PRNGKey(8))
    (low, high, ode), times, d = run_mfdiff(
        ou_low, ou_high, obs, n_sim, n_ref, rounds, build, n_cmp, NAMES
    )
    print(
        f"OU: N_low={n_sim}, refine {rounds} x {n_ref}, NUTS {chains} chains x ({warmup} warmup"
        f" + {n_nuts}), {len(OU_TIMES)} times, noise {OU_NOISE}, devices={jax.devices()}"
    )
    idata, ref = run_nuts(ou_high, obs, chains, warmup, n_nuts, NAMES, times)
    print(
        f"likelihood-weight ESS: G_low {d['ess_low']:.1f}; refined importance ESS "
        f"{d['ess_after']:.1f}"
    )
    nuts_draws = ref[np.random.default_rng(0).permutation(len(ref))[:n_cmp]]
    rows = [("G_low", low), ("G_high", high), ("refined ODE", ode), ("NUTS", nuts_draws)]
    accuracy_table(rows, probs, exact, [OU_TRUE[k] for k in NAMES], jax.random.PRNGKey(7))
    params = stack({k: np.full(10_000, OU_TRUE[k]) for k in NAMES}, NAMES)
    params = jnp.asarray(params * np.exp(0.1 * np.random.default_rng(1).normal(size=params.shape)))
    costs = [
        cost_per_solve(lambda q, f=f: f(q[0], q[1]), params)
        for f in (ou_euler_moments, ou_exact_moments)
    ]
    cost_table(times, n_sim, d["num_high_fidelity_simulations"], costs, idata, n_cmp)


if __name__ == "__main__":
    main()
