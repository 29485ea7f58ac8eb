"""Time to posteriors for 100 observations: G_low against BlackJAX NUTS, side by side.

Run: ``python benchmarks/bench_nuts_100.py`` (``--fast`` for small budgets).

Model: the conjugate Gaussian of ``compare_methods.py`` in 10-D,
``theta ~ N(0, I)``, ``x ~ N(theta, 1.5^2 I)``, whose posterior is
``N(x / (1 + s^2), s^2 / (1 + s^2) I)``; 100 observations drawn from the model.

- ``G_low``: one ``MFDiff(...).run`` (build), then one batched ``get_samples``
  call for all 100 observations. Reported with and without the build.
- ``NUTS (vmap)``: BlackJAX window adaptation + NUTS, compiled once with the
  observation as an argument and vmapped over observations and chains: the
  fastest way to run NUTS 100 times. Several budgets (chains, warm-up, draws),
  from the usual 4 x (1000 + 1000) down to budgets whose accuracy matches G_low.
- ``NUTS (baselines.nuts)``: the package's baseline, called once per
  observation as a user would (recompiled for each); timed on ``--loop``
  observations and scaled to 100.

Accuracy, on the 100 observations: RMS error of the posterior mean in units of
the posterior sd, mean ratio of the sample sd to the exact sd, and the C2ST
accuracy (0.5 is perfect) against exact draws for the first 3 observations
(only with at least 200 draws per observation).
"""

import argparse
import time
import warnings

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from compare_methods import GAUSS_DIM, GAUSS_SIGMA, gaussian10

from numpyro_mfdiff import MFDiff, baselines
from numpyro_mfdiff.metrics import c2st

S2 = GAUSS_SIGMA**2
POST_SD = np.sqrt(S2 / (1 + S2))


def accuracy(samples, xs, key, n_c2st=3):
    """(RMS mean error in sd units, mean sd ratio, mean C2ST over the first observations).

    ``samples``: (B, S, D) for observations ``xs`` (B, D)."""
    samples = np.asarray(samples)
    mean = xs / (1 + S2)
    err = (samples.mean(1) - mean) / POST_SD
    sd_ratio = samples.std(1) / POST_SD
    accs = []
    for i in range(n_c2st if samples.shape[1] >= 200 else 0):  # too few draws: no C2ST
        k_ref, k_c = jax.random.split(jax.random.fold_in(key, i))
        ref = mean[i] + POST_SD * np.asarray(jax.random.normal(k_ref, samples[i].shape))
        accs.append(float(c2st(ref, samples[i], k_c)))
    c = float(np.mean(accs)) if accs else float("nan")
    return float(np.sqrt(np.mean(err**2))), float(sd_ratio.mean()), c


def nuts_vmapped(chains, warmup, draws):
    """A compiled function (keys (B, C, 2), xs (B, D)) -> draws (B, C * draws, D)."""

    def one(key, x):
        def logdensity(th):
            return -0.5 * th @ th - 0.5 * jnp.sum((x - th) ** 2) / S2

        k0, k1, k2 = jax.random.split(key, 3)
        warm = blackjax.window_adaptation(blackjax.nuts, logdensity)
        (state, params), _ = warm.run(k1, jax.random.normal(k0, (GAUSS_DIM,)), num_steps=warmup)
        step = blackjax.nuts(logdensity, **params).step

        def body(s, k):
            s, _ = step(k, s)
            return s, s.position

        return jax.lax.scan(body, state, jax.random.split(k2, draws))[1]

    run = jax.vmap(jax.vmap(one, (0, None)), (0, 0))
    return jax.jit(lambda keys, xs: run(keys, xs).reshape(xs.shape[0], -1, GAUSS_DIM))


def nuts_loop(loop, xs, k_nuts, k_acc, n_obs):
    """The row of ``baselines.nuts`` called once per observation, timed on ``loop`` of them."""
    t_loop, s_loop = [], []
    for i in range(loop):
        idata, t = timed(
            lambda k, x: baselines.nuts(gaussian10, {"x": x}, k, log_likelihood=False),
            jax.random.fold_in(k_nuts, 100 + i),
            xs[i],
        )
        t_loop.append(t)
        s_loop.append(np.asarray(idata.posterior["theta"]).reshape(-1, GAUSS_DIM))
    per_obs = float(np.mean(t_loop))
    acc_loop = accuracy(np.stack(s_loop), xs[:loop], k_acc, n_c2st=min(3, loop))
    note = f"{per_obs:.2f}s per observation x 100 (timed on {loop})"
    return "NUTS baselines.nuts 4x(1000+1000)", per_obs * n_obs, acc_loop, note


def timed(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fast", action="store_true", help="small budgets (a smoke run)")
    p.add_argument("--num-simulations", type=int, default=20_000)
    p.add_argument("--num-samples", type=int, default=1000, help="draws per observation")
    p.add_argument("--loop", type=int, default=5, help="observations for baselines.nuts (0: skip)")
    a = p.parse_args()
    n_obs = 100
    key = jax.random.PRNGKey(0)
    k_th, k_x, k_build, k_draw, k_nuts, k_acc = jax.random.split(key, 6)
    xs = np.asarray(
        jax.random.normal(k_th, (n_obs, GAUSS_DIM))
        + GAUSS_SIGMA * jax.random.normal(k_x, (n_obs, GAUSS_DIM))
    )
    S = a.num_samples
    fast = dict(num_labels=2000, train_steps=500) if a.fast else {}
    n_sim = 5000 if a.fast else a.num_simulations
    budgets = [(4, 1000, 1000), (1, 300, S), (1, 100, 100), (1, 100, 30), (1, 50, 10)]
    if a.fast:
        budgets = [(2, 100, 100), (1, 50, 10)]

    inf = MFDiff(
        gaussian10, num_simulations=n_sim, observed_sites=["x"], progress_bar=False, **fast
    )
    t0 = time.perf_counter()
    inf.run(k_build)
    build = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-ESS warnings: the accuracy columns show it
        ess = inf.ess({"x": xs})

        def draw(k):
            return inf.get_samples(k, {"x": xs}, S)["theta"]

        _, t_first = timed(draw, k_draw)
        s_glow, t_draw = timed(draw, jax.random.fold_in(k_draw, 1))
    acc = accuracy(s_glow, xs, k_acc)
    timings = inf.diagnostics["timings"]
    note = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
    print(
        f"10-D conjugate Gaussian (sigma={GAUSS_SIGMA}), {n_obs} observations, "
        f"{S} G_low draws each; N={n_sim}; devices={jax.devices()}"
    )
    print(
        f"likelihood-weight ESS over the observations: median {np.median(ess):.0f}, "
        f"min {np.min(ess):.0f}"
    )
    print(
        f"{'method':<36}{'seconds':>9}{'/G_low':>9}{'mean err':>10}{'sd ratio':>10}"
        f"{'C2ST':>7}  notes"
    )

    def row(name, t, acc, note):  # printed as it comes: a long run keeps what it measured
        e, r, c = acc
        print(
            f"{name:<36}{t:>9.2f}{t / t_draw:>9.1f}{e:>10.3f}{r:>10.3f}{c:>7.3f}  {note}",
            flush=True,
        )

    row("G_low (sampling only)", t_draw, acc, f"first call {t_first:.2f}s")
    row("G_low (build + sampling)", build + t_draw, acc, note)
    for chains, warmup, draws in budgets:
        fn = nuts_vmapped(chains, warmup, draws)
        keys = jax.random.split(k_nuts, (n_obs, chains))
        _, t_compile = timed(fn, keys, jnp.asarray(xs))
        s, t = timed(fn, jax.random.split(jax.random.fold_in(k_nuts, 1), (n_obs, chains)), xs)
        name = f"NUTS vmap {chains}x({warmup}+{draws})"
        row(name, t, accuracy(s, xs, k_acc), f"first call (compiling) {t_compile:.1f}s")
    if a.loop:  # needs arviz (baselines.nuts returns InferenceData)
        row(*nuts_loop(a.loop, xs, k_nuts, k_acc, n_obs))


if __name__ == "__main__":
    main()
