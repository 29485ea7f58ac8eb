"""Cost of the Monte Carlo score: time per ODE step per state, weights per second, peak memory.

Run: ``python benchmarks/bench_score.py`` (``--quick`` for a smaller sweep).

For prior sizes N and dimensions D, one labelling-like chunk of ``B`` states,
each with its own observation (per-row log-likelihoods, shape (B, N)), is
integrated over ``--steps`` ODE steps by each denoiser:

- ``plain``: the reference :func:`numpyro_mfdiff.denoise` (softmax of a
  batched-matmul logit matrix, then a weighted sum);
- ``fused``: :func:`numpyro_mfdiff.diffusion._score.denoise_fused` (kernel and
  likelihood terms in one matmul, numerator and normaliser in another), in
  blocks of points with a running log-sum-exp above
  ``numpyro_mfdiff.diffusion._ode.AUTO_BLOCK_WEIGHTS`` weights per call.

Each (N, D) runs in a fresh subprocess that compiles both denoisers, reports
XLA's temporary buffer size of each compiled solve (``memory_analysis``, the
memory the step needs beyond its inputs) and times them alternately (best of
``--reps``, wall and CPU seconds), so that load from other processes on a shared
machine affects both alike; ``peak RSS`` is the subprocess's peak resident
memory (``os.wait4``), both methods together. ``max|diff|`` is the largest
absolute difference of the fused output from the plain one (standardised
coordinates): the speed-up costs no accuracy.

A third row per (N, D), ``exp``, is a ceiling rather than a method: a compiled
``jnp.exp(log_lik).sum(-1)`` over the same (B, N) matrix, one exponential per
weight and nothing else, timed alongside.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def one(n, d, batch, steps, reps, precision):
    import jax
    import numpy as np

    from numpyro_mfdiff import LinearSchedule, geometric_grid, solve_ode
    from numpyro_mfdiff.diffusion import _score

    if precision == "default":  # the backend's own float32 matmuls (TF32 on recent GPUs)
        _score._HI = jax.lax.Precision.DEFAULT

    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    pts = jax.random.normal(k1, (n, d))
    obs = jax.random.normal(k2, (batch, d))
    # per-row Gaussian log-likelihoods with sd 0.5 around each row's observation
    sq = jax.numpy.sum(pts**2, -1)[None] - 2 * obs @ pts.T + jax.numpy.sum(obs**2, -1)[:, None]
    ll = -0.5 * sq / 0.25  # (B, N), built without a (B, N, D) temporary
    z = jax.random.normal(k3, (batch, d))
    grid = geometric_grid(steps)
    runs, res = {}, dict(n=n, d=d)
    for method in ("plain", "fused"):
        fn = jax.jit(
            lambda z, p, w, f=method == "fused": solve_ode(
                z, p, w, LinearSchedule(), grid, "dpm2m", fused=f
            )
        )
        mem = fn.lower(z, pts, ll).compile().memory_analysis()
        res[method] = dict(temp_mb=getattr(mem, "temp_size_in_bytes", float("nan")) / 2**20)
        runs[method] = fn
        res[method]["out"] = np.asarray(jax.block_until_ready(fn(z, pts, ll)))  # compile
    calls = steps + 1  # denoiser calls per solve
    exp_sum = jax.jit(lambda w: jax.numpy.exp(w).sum(-1))
    jax.block_until_ready(exp_sum(ll))

    def keep_best(r, t0, c0):  # best of the repetitions, wall and CPU seconds
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        r["wall"], r["cpu"] = min(r.get("wall", wall), wall), min(r.get("cpu", cpu), cpu)

    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            jax.block_until_ready(exp_sum(ll))
        keep_best(res.setdefault("exp", {}), t0, c0)
        for method, fn in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn(z, pts, ll))
            keep_best(res[method], t0, c0)
    for method in (*runs, "exp"):
        r = res[method]
        r["per_step_state"] = r["wall"] / calls / batch
        r["weights_per_s"] = calls * batch * n / r["wall"]
        r["weights_per_cpu_s"] = calls * batch * n / r["cpu"]
    if jax.default_backend() != "cpu":  # the plain solve on the host CPU as the reference
        cpu = jax.devices("cpu")[0]
        args = [jax.device_put(v, cpu) for v in (z, pts, ll)]
        ref = np.asarray(runs["plain"](*args))
        for method in runs:
            res[method]["cpu_diff"] = float(np.max(np.abs(res[method]["out"] - ref)))
    res["max_diff"] = float(np.max(np.abs(res["fused"].pop("out") - res["plain"].pop("out"))))
    print(json.dumps(res))


def measure(n, d, batch, steps, reps, precision):
    cmd = [sys.executable, __file__, "--one", str(n), str(d), "--precision", precision]
    cmd += ["--batch", str(batch), "--steps", str(steps), "--reps", str(reps)]
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
    p.add_argument("--one", nargs=2, metavar=("N", "D"))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="N up to 10^4 only")
    p.add_argument("--ns", type=int, nargs="+", help="prior sizes (default 10^3, 10^4, 10^5)")
    p.add_argument("--ds", type=int, nargs="+", default=(1, 5, 20), help="dimensions")
    p.add_argument(
        "--precision",
        choices=("highest", "default"),
        default="highest",
        help="float32 matmuls of the denoisers: full (the package's) or the backend's default",
    )
    a = p.parse_args()
    if a.one:
        return one(int(a.one[0]), int(a.one[1]), a.batch, a.steps, a.reps, a.precision)
    import jax

    ns = a.ns or ((1_000, 10_000) if a.quick else (1_000, 10_000, 100_000))
    gpu = jax.default_backend() != "cpu"
    print(
        f"B={a.batch} states, {a.steps} dpm2m steps, matmul precision {a.precision}, "
        f"devices={jax.devices()}"
    )
    head = f"{'N':>8}{'D':>4}{'method':>8}{'us/step/state':>15}{'weights/s':>11}{'per CPU s':>11}"
    head += f"{'XLA temp MB':>13}{'peak RSS MB':>13}{'speed-up':>10}{'max|diff|':>11}"
    print(head + (f"{'vs CPU':>9}" if gpu else ""))
    for n in ns:
        for d in a.ds:
            res = measure(n, d, a.batch, a.steps, a.reps, a.precision)
            for m in ("plain", "fused", "exp"):
                r = res[m]
                up = res["plain"]["wall"] / r["wall"]
                diff = f"{res['max_diff']:.1e}" if m == "fused" else "-"
                mem = f"{'-':>26}"
                if m != "exp":
                    mem = f"{r['temp_mb']:>13.1f}{res['peak_mb']:>13.0f}"
                vs_cpu = (f"{r['cpu_diff']:>9.1e}" if m != "exp" else f"{'-':>9}") if gpu else ""
                print(
                    f"{n:>8}{d:>4}{m:>8}{1e6 * r['per_step_state']:>15.3f}"
                    f"{r['weights_per_s']:>11.2e}{r['weights_per_cpu_s']:>11.2e}"
                    f"{mem}{up:>10.2f}{diff:>11}{vs_cpu}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
