"""One task of ``bench_sbi.py`` through ``refine`` alone, with what each stage did.

Simulates the prior (no ``G_low``: a same-fidelity refinement starts from the
prior simulations), calls ``refine(key, obs, max_simulations=B)`` with nothing
else set, then prints the stages (temperature, pooled ESS), the chosen
smoothing, ``G_high`` against its own ODE labels, and C2ST against the
reference for the refined ODE and ``G_high``, then for the ODE at smaller
smoothings (the chosen one, a half, a quarter, none), side by side::

    python benchmarks/bench_refine.py gaussian_mixture --observation 1
    python benchmarks/bench_refine.py regression --seed 1
    python benchmarks/bench_refine.py eight_schools --reparam none   # as written (centred)

``--reparam`` is ``MFDiff``'s ``reparam`` (default ``auto``: eight schools runs
non-centred; the draws are scored on the user's sites, ``theta`` included).

Reference and observation as in ``bench_sbi.py`` (sbibm wheel in its cache).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from pathlib import Path

import jax
from bench_sbi import ALL_TASKS, MODELS, flat, observations

from numpyro_mfdiff import MFDiff, _compiled
from numpyro_mfdiff.metrics import c2st


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("task", choices=ALL_TASKS)
    p.add_argument("--observation", type=int, default=1)
    p.add_argument("--num-simulations", type=int, default=10_000)
    p.add_argument("--refine-simulations", type=int, default=10_000)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reparam", choices=["auto", "none"], default="auto")
    p.add_argument("--sbibm-dir", type=Path, default=Path.home() / ".cache/numpyro_mfdiff/sbibm")
    a = p.parse_args()
    a.observations, a.fast = [a.observation], True
    warnings.simplefilter("ignore")
    n = a.num_samples
    model, _, _ = MODELS[a.task]
    _, obs, ref = observations(a.task, a, n)[0]
    reparam = None if a.reparam == "none" else a.reparam
    inf = MFDiff(model, num_simulations=a.num_simulations, progress_bar=False, reparam=reparam)
    inf.simulate(jax.random.PRNGKey(a.seed))
    sites = _compiled.user_latents(
        inf.state
    )  # the model's latent sites (not the non-centred coordinates)
    if inf.state.reparam:
        print(f"non-centred: {', '.join(inf.state.reparam)}")
    t0 = time.perf_counter()
    extra = {} if a.train_steps is None else {"train_steps": a.train_steps}
    inf.refine(jax.random.PRNGKey(a.seed + 1), obs, max_simulations=a.refine_simulations, **extra)
    seconds = time.perf_counter() - t0
    (d,) = inf.diagnostics["refinements"].values()
    print(f"{a.task} obs {a.observation} seed {a.seed}: refine {seconds:.1f}s, ", end="")
    print(f"ESS {d['ess_before']:.1f} -> {d['ess_after']:.1f}, smoothing {d['smoothing']:.4f}")
    print("stage  lam      pooled ESS  simulations  seconds")
    for i, r in enumerate(d["rounds"], 1):
        print(
            f"{i:5d}  {r['lam']:.4f}  {r['ess']:10.1f}  {r['simulations']:11d}  {r['seconds']:7.1f}"
        )
    check = d["rounds"][-1]["generator_check"]
    ratio = check["sd_ratio"]
    print(
        f"G_high vs its ODE labels: mean error {check['mean_error']:.3f} sd, "
        f"sd ratios {min(ratio):.3f}-{max(ratio):.3f}"
    )
    reference = ref[:n]

    def score(samples):
        return float(c2st(reference, flat(samples, sites)[:n], jax.random.PRNGKey(0)))

    ode = score(inf.sample_ode(jax.random.PRNGKey(4), obs, n))
    high = score(inf.get_samples(jax.random.PRNGKey(5), obs, n))
    print(f"C2ST refined ODE {ode:.3f}, G_high {high:.3f}")
    ((key, r),) = inf.state.refinements.items()
    for factor in (0.5, 0.25, 0.0):
        h = r.smoothing * factor
        inf._state = inf.state.replace(refinements={key: dataclasses.replace(r, smoothing=h)})
        print(f"C2ST refined ODE at smoothing {h:.4f}: ", end="")
        print(f"{score(inf.sample_ode(jax.random.PRNGKey(4), obs, n)):.3f}")
    inf._state = inf.state.replace(refinements={key: r})  # the chosen smoothing back


if __name__ == "__main__":
    main()
