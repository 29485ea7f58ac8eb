"""Peak memory and time of the labelling stage against the prior size N and the number of triples.

Each configuration runs in a fresh subprocess (the quadratic example: simulate ``N`` prior
draws, label ``T`` triples with the default settings) and reports its peak resident memory,
the labelling time, the prior points a chunk weighs on average and the largest likelihood
mass a row dropped (the ``label_points`` cap; MFDiff warns above 1%).

Run: ``python benchmarks/bench_label_memory.py`` (``--configs 100000:2000,1000000:2000``).
"""

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings


def one(n, t):
    import jax

    from numpyro_mfdiff import MFDiff
    from numpyro_mfdiff.examples import quadratic

    inf = MFDiff(quadratic, num_simulations=n, num_labels=t, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inf.simulate(jax.random.PRNGKey(0))
        t0 = time.perf_counter()
        inf.label(jax.random.PRNGKey(1))
        seconds = time.perf_counter() - t0
    d = inf.diagnostics
    return dict(
        N=n,
        T=t,
        seconds=seconds,
        points=d["label_points_mean"],
        dropped=d["label_dropped_mass_max"],
        rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--configs", default="100000:2000,100000:10000,1000000:2000")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        n, t = map(int, a.one.split(":"))
        print(json.dumps(one(n, t)))
        return
    print(
        f"{'N':>8} {'triples':>8} {'label s':>8} {'points/chunk':>13} {'max dropped':>12} "
        f"{'peak RSS MB':>12}"
    )
    for cfg in a.configs.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--one", cfg], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{r['N']:>8} {r['T']:>8} {r['seconds']:>8.1f} {r['points']:>13.0f} "
            f"{r['dropped']:>12.2e} {r['rss_mb']:>12.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
