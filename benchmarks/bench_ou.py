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

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from _common import (
    BUILD,
    FAST_BUILD,
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
        print(f"| {name} | {kl:.3f} | {acc:.3f} | {mean_sd(x)} |")
    print("| truth | - | - | " + " | ".join(f"{v:.3f}" for v in truth) + " |")


def main():
    a = parser(num_simulations=20_000, refine_simulations=2_000, rounds=2).parse_args()
    n_sim, n_ref, rounds = a.num_simulations, a.refine_simulations, a.rounds
    build = BUILD
    n_cmp, chains, warmup, n_nuts = 2_000, 4, 1_000, 1_000
    if a.fast:
        n_sim, n_ref, rounds = 2_000, 500, 1
        build = FAST_BUILD
        n_cmp, chains, warmup, n_nuts = 1_000, 2, 200, 500

    to_array = partial(stack, names=NAMES)
    y = observation(jax.random.PRNGKey(1))
    obs = {"y": y}
    probs, exact = grid_reference(y, 2 * n_cmp, jax.random.PRNGKey(8))
    (low, high, ode), times, d = run_mfdiff(
        ou_low, ou_high, obs, n_sim, n_ref, rounds, build, n_cmp, to_array
    )
    print(
        f"OU: N_low={n_sim}, refine {rounds} x {n_ref}, NUTS {chains} chains x ({warmup} warmup"
        f" + {n_nuts}), {len(OU_TIMES)} times, noise {OU_NOISE}, devices={jax.devices()}"
    )
    idata, ref = run_nuts(ou_high, obs, chains, warmup, n_nuts, to_array, times)
    print(f"NUTS: {nuts_health(idata, NAMES)}")
    print(ess_line(d))
    rows = [("G_low", low), ("G_high", high), ("refined ODE", ode), ("NUTS", subsample(ref, n_cmp))]
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
