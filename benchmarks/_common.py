"""Steps shared by the refinement benchmarks (bench_burgers, bench_lorenz, bench_ou, bench_runaway).

Each of them builds ``G_low`` on a low-fidelity model, refines one observation
with a high-fidelity model, runs BlackJAX NUTS on the high-fidelity model and
prints markdown tables; the helpers below are those steps, with the keys and
the printed layout the scripts had.
"""

import argparse
import time

import arviz as az
import jax
import numpy as np

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.baselines import nuts
from numpyro_mfdiff.metrics import c2st

BUILD = dict(num_labels=10_000, train_steps=4_000)  # G_low of the full runs
FAST_BUILD = dict(num_labels=500, train_steps=200, num_steps=30, width=32, depth=2)


def parser(num_simulations, refine_simulations, rounds, nuts=None):
    """Command line with ``--fast`` and the budgets of ``G_low`` and refinement; ``nuts``
    ``(prefix, chains, samples, warmup)`` adds ``--<prefix>-chains``, ``--<prefix>-samples``
    and ``--<prefix>-warmup`` with those defaults."""
    p = argparse.ArgumentParser()
    p.add_argument("--fast", action="store_true", help="tiny budgets (a smoke run)")
    p.add_argument("--num-simulations", type=int, default=num_simulations)
    p.add_argument("--refine-simulations", type=int, default=refine_simulations)
    p.add_argument("--rounds", type=int, default=rounds)
    if nuts is not None:
        prefix, chains, samples, warmup = nuts
        p.add_argument(f"--{prefix}-chains", type=int, default=chains)
        p.add_argument(f"--{prefix}-samples", type=int, default=samples)
        p.add_argument(f"--{prefix}-warmup", type=int, default=warmup)
    return p


def cached_draws(path, compute, y=None):
    """The draws ``compute()`` (n, d), saved to ``path`` (``.npz``) and read from it on
    later runs; recomputed when ``y``, the observation they condition on (if given),
    differs from the one saved with them."""
    if path.exists():
        with np.load(path) as f:
            same = "draws" in f.files and (
                y is None
                or (f["y"].shape == np.shape(y) and np.allclose(f["y"], y, rtol=1e-6, atol=0))
            )
            if same:
                return f["draws"]
    draws = np.asarray(compute())
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if y is None else {"y": np.asarray(y)}
    np.savez_compressed(path, draws=draws, **extra)
    return draws


def stack(samples, names):
    """Dict (or InferenceData posterior) of samples -> (n, len(names)) in the order of ``names``."""
    return np.stack([np.asarray(samples[k]).reshape(-1) for k in names], axis=1)


def subsample(x, n):
    """``n`` rows of ``x`` (n, d) in a fixed random order (``default_rng(0)``)."""
    return x[np.random.default_rng(0).permutation(len(x))[:n]]


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


def run_mfdiff(
    model_low, model_high, obs, n_sim, n_ref, rounds, build, n_cmp, to_array, keys=(0, 2, 3, 4, 5)
):
    """Build G_low, refine ``obs``; returns samples (G_low, G_high, ODE) as ``to_array`` of
    the sample dicts, timings (``G_low``, ``refine``, ``ode``) and the refinement diagnostics
    (with ``ess_low``). ``keys``: the ``PRNGKey`` seeds of the build, the G_low samples,
    the refinement, the G_high samples and the ODE samples."""
    k_run, k_low, k_refine, k_high, k_ode = (jax.random.PRNGKey(k) for k in keys)
    times = {}
    inf = MFDiff(model_low, num_simulations=n_sim, progress_bar=False, **build)
    t0 = time.perf_counter()
    inf.run(k_run)
    times["G_low"] = time.perf_counter() - t0
    ess_low = inf.ess(obs)
    low = to_array(inf.get_samples(k_low, obs, n_cmp))
    t0 = time.perf_counter()
    inf.refine(k_refine, obs, model=model_high, num_simulations=n_ref, rounds=rounds)
    times["refine"] = time.perf_counter() - t0
    d = next(iter(inf.diagnostics["refinements"].values()))
    d["ess_low"] = ess_low
    high = to_array(inf.get_samples(k_high, obs, n_cmp))
    t0 = time.perf_counter()
    ode = to_array(inf.sample_ode(k_ode, obs, n_cmp))
    times["ode"] = time.perf_counter() - t0
    return (low, high, ode), times, d


def run_nuts(model, obs, chains, warmup, n_nuts, to_array, times):
    """NUTS on ``model`` (key 6): returns the InferenceData and ``to_array`` of its
    posterior (n, d); the wall time in ``times["nuts"]``."""
    t0 = time.perf_counter()
    idata = nuts(
        model,
        obs,
        jax.random.PRNGKey(6),
        num_chains=chains,
        num_warmup=warmup,
        num_samples=n_nuts,
        log_likelihood=False,  # timed: the sampler alone, as recorded in docs/benchmarks.md
    )
    times["nuts"] = time.perf_counter() - t0
    return idata, to_array(idata.posterior)


def nuts_health(idata, names):
    """``"<n> divergences, r_hat <name> <r_hat>, ..."`` of a NUTS run."""
    div = int(idata.sample_stats["diverging"].sum())
    rhat = {k: float(v) for k, v in az.rhat(idata, var_names=list(names)).items()}
    return f"{div} divergences, r_hat " + ", ".join(f"{k} {v:.3f}" for k, v in rhat.items())


def ess_line(d):
    """The likelihood-weight ESS of G_low and the importance ESS after refinement."""
    return (
        f"likelihood-weight ESS: G_low {d['ess_low']:.1f}; refined importance ESS "
        f"{d['ess_after']:.1f}"
    )


def c2st_cell(x, ref, key):
    """C2ST of ``x`` against ``ref`` to 3 decimals, ``-`` for ``ref`` itself."""
    return "-" if x is ref else f"{float(c2st(x, ref, key)):.3f}"


def mean_sd(x):
    """Table cells ``mean (sd)`` of each column of ``x`` (n, d)."""
    return " | ".join(f"{m:.3f} ({s:.3f})" for m, s in zip(x.mean(0), x.std(0), strict=True))


def stage_table(times, n_sim, n_hf, n_cmp, idata):
    """Print the stages: seconds and solves (one column), G_low to NUTS."""
    print("\n| stage | seconds | solves |")
    print("|---|---|---|")
    print(f"| G_low build | {times['G_low']:.1f} | {n_sim} low-fidelity |")
    print(f"| refinement + G_high | {times['refine']:.1f} | {n_hf} high-fidelity |")
    print(f"| refined sample_ode ({n_cmp}) | {times['ode']:.1f} | 0 |")
    print(
        f"| NUTS | {times['nuts']:.1f} | {idata.attrs['num_gradient_evaluations']} high-fidelity "
        f"with gradient ({idata.attrs['num_gradient_evaluations_warmup']} in warmup) |"
    )


def cost_table(times, n_sim, n_hf, costs, idata, n_cmp):
    """Print the cost of one solve and the stages: seconds and solves at each fidelity."""
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
