"""SBC on the quadratic example: ``G_low`` against what NUTS would need for the same check.

Run: ``python benchmarks/bench_sbc.py`` (``--fast`` for a smoke run). Builds
``G_low`` (default budget), then times ``diagnostics.sbc`` on 1,000 prior
datasets with 100 posterior draws each (first call, compilation included,
then a second call with another key), and one BlackJAX NUTS run
(``baselines.nuts``: one chain, 1,000 warm-up and 1,000 draws, as an SBC
with MCMC would thin to 100) on one of those datasets, whose time times 1,000
is what NUTS would need for the same check.
"""

import argparse
import time

import jax
import numpy as np

from numpyro_mfdiff import MFDiff, baselines
from numpyro_mfdiff import diagnostics as dg
from numpyro_mfdiff.examples import quadratic


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fast", action="store_true", help="small budgets (a smoke run)")
    p.add_argument("--num-datasets", type=int, default=1000)
    p.add_argument("--num-samples", type=int, default=100)
    p.add_argument("--nuts-warmup", type=int, default=1000)
    p.add_argument("--nuts-samples", type=int, default=1000)
    a = p.parse_args()
    budget = (
        dict(num_simulations=2000, num_labels=1000, train_steps=500, batch_size=256)
        if a.fast
        else dict(num_simulations=20_000, num_labels=20_000, train_steps=10_000)
    )
    inf = MFDiff(quadratic, progress_bar=False, **budget)
    t0 = time.perf_counter()
    inf.run(jax.random.PRNGKey(0))
    build = time.perf_counter() - t0

    times, results = [], []
    for seed in (1, 2):
        t0 = time.perf_counter()
        r = dg.sbc(inf, jax.random.PRNGKey(seed), a.num_datasets, a.num_samples)
        times.append(time.perf_counter() - t0)
        results.append(r)

    d = dg.posterior_draws(inf, jax.random.PRNGKey(3), 2, 1)
    obs = {"y": float(d.y[0, 0])}
    nuts_kw = dict(num_chains=1, num_warmup=a.nuts_warmup, num_samples=a.nuts_samples)
    nuts_times = []
    for seed in (4, 5):  # the first run compiles; the second is one SBC dataset's cost
        t0 = time.perf_counter()
        idata = baselines.nuts(quadratic, obs, jax.random.PRNGKey(seed), **nuts_kw)
        nuts_times.append(time.perf_counter() - t0)
    nuts_one = nuts_times[1]

    print(
        f"quadratic, N={budget['num_simulations']}, labels={budget['num_labels']}, "
        f"train steps={budget['train_steps']}, devices={jax.devices()}"
    )
    print(f"G_low build {build:.1f} s")
    for i, (t, r) in enumerate(zip(times, results, strict=True)):
        what = "first call, compilation included" if i == 0 else "second call"
        print(
            f"SBC {a.num_datasets} datasets x {a.num_samples} draws: {t:.2f} s ({what}); "
            f"ECDF p {float(r.ecdf_pvalue[0]):.3f}, chi-square p {float(r.chi2_pvalue[0]):.3f}"
        )
    draws = int(np.asarray(idata.posterior["theta"]).size)
    print(
        f"NUTS, one dataset (1 chain, {a.nuts_warmup} warm-up + {draws} draws): "
        f"{nuts_times[0]:.2f} s first run, {nuts_one:.2f} s second run"
    )
    total = nuts_one * a.num_datasets
    print(
        f"NUTS for the same check: {a.num_datasets} x {nuts_one:.2f} s = {total:.0f} s "
        f"({total / 3600:.2f} h); G_low SBC {times[1]:.2f} s: {total / times[1]:.0f}x faster "
        f"({total / times[0]:.0f}x with compilation)"
    )


if __name__ == "__main__":
    main()
