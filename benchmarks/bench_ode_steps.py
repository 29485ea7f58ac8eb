"""Accuracy of the Monte Carlo-score ODE against the number of steps (quadratic example).

Run: ``python benchmarks/bench_ode_steps.py`` (``--solvers dpm2m dpm3m``,
``--steps 40 50 64 80 100``, ``--prune-tols 1e-6``, ``--draws 50000``, ``--reps 2``).

One prior simulation (N = 20,000, key 0); for every solver and number of
steps on the geometric grid, the KL divergence (80 bins on [-2, 2]) of
``sample_ode`` draws from the exact posterior at y = 0.25, 1, 2 and 3.5, the
mean over ``--reps`` independent sets of draws (fixed keys, the same for every
row, so rows differ only by the solver and the grid). The sampling floor of
the KL at 50,000 draws is about 0.002.
"""

import argparse
import itertools

import jax
import numpy as np

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.examples import quadratic, quadratic_kl

YS = (0.25, 1.0, 2.0, 3.5)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--solvers", nargs="+", default=["dpm2m"])
    p.add_argument("--steps", type=int, nargs="+", default=[40, 50, 64, 80, 100])
    p.add_argument("--prune-tols", type=float, nargs="+", default=[1e-6])
    p.add_argument("--draws", type=int, default=50_000)
    p.add_argument("--reps", type=int, default=2)
    a = p.parse_args()
    inf = MFDiff(quadratic, num_simulations=20_000, progress_bar=False)
    inf.simulate(jax.random.PRNGKey(0))
    print(f"KL of {a.draws} sample_ode draws (mean of {a.reps}), N = 20000")
    print(f"{'solver':>8}{'steps':>7}{'prune_tol':>11}" + "".join(f"{f'y={y}':>10}" for y in YS))
    for solver, n, tol in itertools.product(a.solvers, a.steps, a.prune_tols):
        # the constructor's grid, solver and tolerance, set anew on the same simulations
        inf._config = inf.config.replace(num_steps=n, solver=solver, prune_tol=tol)
        row = f"{solver:>8}{n:>7}{tol:>11g}"
        for i, y in enumerate(YS):
            kls = []
            for r in range(a.reps):
                key = jax.random.fold_in(jax.random.PRNGKey(7), 10 * i + r)
                kls.append(quadratic_kl(inf.sample_ode(key, {"y": y}, a.draws)["theta"], y))
            row += f"{np.mean(kls):>10.4f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
