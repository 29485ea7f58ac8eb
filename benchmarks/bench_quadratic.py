"""Build time by stage and sampling throughput on the quadratic example.

Run: ``python benchmarks/bench_quadratic.py`` (prints one table; ratios are
against the total build time, since the machine is shared and noisy).
"""

import argparse
import time

import jax
import numpy as np

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.examples import quadratic, quadratic_kl


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--num-simulations", type=int, default=20_000)
    p.add_argument("--num-labels", type=int, default=20_000)
    p.add_argument("--train-steps", type=int, default=10_000)
    p.add_argument("--num-steps", type=int, default=None, help="ODE steps (default: MFDiff's)")
    p.add_argument("--chunk-size", type=int, default=None, help="labelling rows per chunk")
    p.add_argument("--prune-tol", type=float, default=None, help="MFDiff(prune_tol=...)")
    p.add_argument("--seed", type=int, default=0, help="key of the build")
    p.add_argument("--ode-kl", action="store_true", help="also the KL of 20,000 ODE draws")
    a = p.parse_args()
    inf = MFDiff(
        quadratic,
        num_simulations=a.num_simulations,
        num_labels=a.num_labels,
        train_steps=a.train_steps,
        progress_bar=False,
        **({} if a.num_steps is None else {"num_steps": a.num_steps}),
        **({} if a.chunk_size is None else {"chunk_size": a.chunk_size}),
        **({} if a.prune_tol is None else {"prune_tol": a.prune_tol}),
    )
    t0 = time.perf_counter()
    inf.run(jax.random.PRNGKey(a.seed))
    total = time.perf_counter() - t0
    key = jax.random.PRNGKey(1)
    jax.block_until_ready(inf.get_samples(key, {"y": 1.0}, 1_000_000))  # compile
    reps = []
    for i in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(inf.get_samples(jax.random.fold_in(key, i), {"y": 1.0}, 1_000_000))
        reps.append(time.perf_counter() - t0)
    t_draw = float(np.median(reps))
    t0 = time.perf_counter()
    ode = inf.sample_ode(key, {"y": 1.0}, 10_000)["theta"]
    jax.block_until_ready(ode)
    t_ode = time.perf_counter() - t0
    print(
        f"quadratic, N={a.num_simulations}, labels={a.num_labels}, "
        f"train steps={a.train_steps}, ODE steps={inf.num_steps}, chunk={inf.chunk_size}, "
        f"prune_tol={inf.prune_tol:g}, seed={a.seed}, "
        f"devices={jax.devices()}"
    )
    print(f"{'stage':<28}{'seconds':>10}{'share':>10}")
    for k, v in inf.diagnostics["timings"].items():
        print(f"{k:<28}{v:>10.2f}{v / total:>10.2%}")
    print(f"{'build total':<28}{total:>10.2f}{1:>10.2%}")
    d = inf.diagnostics
    print(
        f"labelling weighed {d['label_points_mean']:.0f} of {a.num_simulations} prior points "
        f"per chunk on average; dropped likelihood mass <= {d['label_dropped_mass_max']:.1e}"
    )
    print(f"{'1e6 samples from G_low':<28}{t_draw:>10.3f}   ({1e6 / t_draw:.2e} samples/s)")
    print(
        f"{'1e4 samples from ODE':<28}{t_ode:>10.2f}   (G_low is "
        f"{(t_ode / 1e4) / (t_draw / 1e6):.0f}x faster per sample)"
    )

    print(f"{'y':>6}{'KL G_low':>10}" + (f"{'KL ODE':>10}" if a.ode_kl else ""))
    for y in (0.25, 1.0, 2.0, 3.5):
        row = f"{y:>6}{quadratic_kl(inf.get_samples(key, {'y': y}, 50_000)['theta'], y):>10.4f}"
        if a.ode_kl:
            row += f"{quadratic_kl(inf.sample_ode(key, {'y': y}, 20_000)['theta'], y):>10.4f}"
        print(row)


if __name__ == "__main__":
    main()
