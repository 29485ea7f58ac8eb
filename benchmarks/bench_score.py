"""Cost of the Monte Carlo score: time per ODE step per state, weights per second, peak memory.

Run: ``python benchmarks/bench_score.py`` (``--quick`` for a smaller sweep).

For prior sizes N and dimensions D, one labelling-like chunk of ``B`` states,
each with its own observation (per-row log-likelihoods, shape (B, N)), is
integrated over ``--steps`` ODE steps by each denoiser:

- ``plain``: the reference :func:`numpyro_mfdiff.denoise` (softmax of a
  batched-matmul logit matrix, then a weighted sum);
- ``fused``: :func:`numpyro_mfdiff._score.denoise_fused` (kernel and
  likelihood terms in one matmul, numerator and normaliser in another), in
  blocks of points with a running log-sum-exp above
  ``numpyro_mfdiff._ode.AUTO_BLOCK_WEIGHTS`` weights per call.

Each configuration runs in a fresh subprocess so that its peak resident memory
(``os.wait4``'s ``ru_maxrss``) is its own. ``max|diff|`` is the largest
absolute difference of the fused output from the plain one (standardised
coordinates): the speed-up costs no accuracy.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def one(n, d, method, batch, steps, block):
    import jax
    import numpy as np

    from numpyro_mfdiff import LinearSchedule, geometric_grid, solve_ode

    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
    pts = jax.random.normal(k1, (n, d))
    obs = jax.random.normal(k2, (batch, d))
    # per-row Gaussian log-likelihoods with sd 0.5 around each row's observation
    ll = -0.5 * jax.numpy.sum((pts[None] - obs[:, None]) ** 2, -1) / 0.25
    z = jax.random.normal(k3, (batch, d))
    grid = geometric_grid(steps)
    kw = dict(fused=method != "plain", block_size=block)

    @jax.jit
    def run(z, pts, ll):
        return solve_ode(z, pts, ll, LinearSchedule(), grid, "dpm2m", **kw)

    out = jax.block_until_ready(run(z, pts, ll))  # compile
    reps = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(run(z, pts, ll))
        reps.append(time.perf_counter() - t0)
    t = float(np.median(reps))
    calls = steps + 1  # denoiser calls per solve
    res = dict(n=n, d=d, method=method, seconds=t, per_step_state=t / calls / batch)
    res["weights_per_s"] = calls * batch * n / t
    if method != "plain":
        ref = jax.jit(
            lambda z, p, w: solve_ode(z, p, w, LinearSchedule(), grid, "dpm2m", fused=False)
        )(z, pts, ll)
        res["max_diff"] = float(np.max(np.abs(np.asarray(out) - np.asarray(ref))))
    print(json.dumps(res))


def measure(n, d, method, batch, steps, block):
    cmd = [sys.executable, __file__, "--one", str(n), str(d), method]
    cmd += ["--batch", str(batch), "--steps", str(steps)]
    if block:
        cmd += ["--block", str(block)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"{cmd} failed with status {status}")
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_mb"] = usage.ru_maxrss / 1024  # Linux: kilobytes
    return res


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--one", nargs=3, metavar=("N", "D", "METHOD"))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--block", type=int, default=None, help="block size (default: automatic)")
    p.add_argument("--quick", action="store_true", help="N up to 10^4 only")
    a = p.parse_args()
    if a.one:
        return one(int(a.one[0]), int(a.one[1]), a.one[2], a.batch, a.steps, a.block)
    import jax

    ns = (1_000, 10_000) if a.quick else (1_000, 10_000, 100_000)
    print(f"B={a.batch} states, {a.steps} dpm2m steps, devices={jax.devices()}")
    head = f"{'N':>7}{'D':>4}{'method':>8}{'us/step/state':>15}{'weights/s':>11}"
    print(head + f"{'peak MB':>9}{'speed-up':>10}{'max|diff|':>11}")
    for n in ns:
        for d in (1, 5, 20):
            rows = [measure(n, d, m, a.batch, a.steps, a.block) for m in ("plain", "fused")]
            for r in rows:
                up = rows[0]["seconds"] / r["seconds"]
                diff = f"{r['max_diff']:.1e}" if "max_diff" in r else "-"
                print(
                    f"{n:>7}{d:>4}{r['method']:>8}{1e6 * r['per_step_state']:>15.2f}"
                    f"{r['weights_per_s']:>11.2e}{r['peak_mb']:>9.0f}{up:>10.2f}{diff:>11}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
