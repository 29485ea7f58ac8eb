"""Multi-fidelity tempering against single-fidelity starts, on the paper's examples (issue 26).

``G_low`` is built on the low-fidelity model; one observation is refined with the
high-fidelity model by tempered SMC (``engine="smc"``) from three starts (the
refinement settings' ``"start"``, passed to ``_refining.refine_observation``):

- ``mf``: the tempered low-fidelity posterior ``p L_low^g`` (SMC on the low model, its
  evaluations reported apart; ``g = _smc_start.LOW_POWER``, 1/4), tempered
  ``p L_low^(g (1-l)) L_high^l`` to the high-fidelity one; ``mf/K``: the same with
  ``g = 1/K`` (``mf/1``: from the low-fidelity posterior itself);
- ``laplace``: a Laplace approximation of the high-fidelity posterior searched from
  ``G_low``'s mean, tempered ``q^(1-l) (p L_high)^l`` (or importance sampling from ``q``
  when ``q`` is already close; the default);
- ``prior``: the prior, tempered ``p L_high^l``.

For each budget of high-fidelity evaluations (every simulation and gradient
evaluation counts), the weighted particles against the exact grid posterior (OU,
Burgers) or NUTS on the high-fidelity model (runaway: 4 x 750 draws after 400 warm-up,
ESS 850-1,040, cached in ``~/.cache/numpyro_mfdiff``; 160 s once): largest mean error
in posterior sds, sd ratios, ESS, and the low-fidelity evaluations. The
last table gives, per start, the smallest budget whose particles are within 0.1 sd
and sd ratios 0.9-1.1 at every seed (``--tol``, ``--sd-tol``), and the prior's over it.

    python benchmarks/bench_fidelity.py                 # OU and Burgers
    python benchmarks/bench_fidelity.py --only ou --seeds 0 1
    python benchmarks/bench_fidelity.py --only runaway --budgets 500 1000 2000 4000

Smallest budget within 0.1 sd and sd ratios 0.9-1.1 at seeds 0-2 (2026-12-06, one
core; ``--budgets 1000 2000 4000 8000 16000 --starts mf/4 mf/9 mf/1 prior`` for OU and
Burgers, ``--only runaway --budgets 2000 4000 8000 16000 --starts mf/4 mf/9``, the
runaway prior and ``mf/1`` rows, up to 32,000, from the session before, when ``mf``
was ``g = 1``): g = 1/4 (``mf``) 16,000 / 8,000 / 16,000 on OU / Burgers / runaway,
the prior > 16,000 / > 16,000 / 32,000, g = 1 > 16,000 / > 16,000 / > 32,000; the
Laplace start 500-1,000. With ``--tol 0.25 --sd-tol 0.2``: g = 1/4 4,000 / 8,000 /
16,000, the prior 8,000 on all three. Figures in docs/method.md.
Lorenz (``--only lorenz --budgets 4000 8000 16000 32000``, 2026-12-07; NUTS reference
as for runaway, on the adaptive diffrax model): g = 1/4 32,000, the prior 64,000, the
Laplace start within 0.05 sd at 4,000 (docs/method.md).
"""

import argparse
import time
import warnings
from functools import partial
from pathlib import Path

import jax
import numpy as np
from _common import cached_draws, run_nuts, stack
from bench_lorenz import NAMES as LORENZ_NAMES
from bench_lorenz import observation as lorenz_observation
from bench_ou import grid_reference as ou_grid_reference
from bench_ou import observation as ou_observation
from bench_runaway import NAMES as RUNAWAY_NAMES
from bench_runaway import observation as runaway_observation

from numpyro_mfdiff import MFDiff, RefineSettings, _compiled, _refining, _samplers
from numpyro_mfdiff.examples import (
    burgers_grid_posterior,
    burgers_grid_sample,
    burgers_high,
    burgers_low,
    burgers_observation,
    lorenz63_high,
    lorenz63_low,
    ou_high,
    ou_low,
    runaway_high,
    runaway_low,
)

STARTS = {"mf": "low", "laplace": "proposal", "prior": "prior"}
BUILD = dict(num_simulations=2_000, num_labels=2_000, train_steps=1_000, progress_bar=False)
CACHE = Path.home() / ".cache" / "numpyro_mfdiff"


def nuts_reference(tag, model, y, names, chains=4, warmup=400, samples=750):
    """Draws (chains * samples, d) of NUTS on ``model | y``, cached in ``CACHE`` under
    ``tag`` with the observation (recomputed when the observation differs)."""

    def draws():
        to_array = partial(stack, names=names)
        return run_nuts(model, {"y": y}, chains, warmup, samples, to_array, {})[1]

    return cached_draws(CACHE / f"fidelity_{tag}_nuts.npz", draws, y)


def problem(name):
    """``(low, high, observation, reference draws (n, d), site names)``."""
    if name == "runaway":
        y = runaway_observation(jax.random.PRNGKey(1))  # that of bench_runaway / the test
        ref = nuts_reference("runaway", runaway_high, y, RUNAWAY_NAMES)
        return runaway_low, runaway_high, y, ref, RUNAWAY_NAMES
    if name == "lorenz":
        y = lorenz_observation(jax.random.PRNGKey(1))  # that of bench_lorenz
        ref = nuts_reference("lorenz", lorenz63_high, y, LORENZ_NAMES)
        return lorenz63_low, lorenz63_high, y, ref, LORENZ_NAMES
    if name == "ou":
        y = ou_observation(jax.random.PRNGKey(1))
        return (
            ou_low,
            ou_high,
            y,
            ou_grid_reference(y, 20_000, jax.random.PRNGKey(2))[1],
            (
                "theta",
                "sigma",
            ),
        )
    y = burgers_observation(jax.random.PRNGKey(2))
    ref = burgers_grid_sample(
        jax.random.PRNGKey(10), burgers_grid_posterior(y, num=(200, 200)), 20_000
    )
    return burgers_low, burgers_high, y, np.stack([ref["nu"], ref["amp"]], 1), ("nu", "amp")


def start_settings(name):
    """The refinement settings of a start named on the command line: ``STARTS``'s, or
    ``mf/K``, the start ``"low"`` tempered from ``p L_low^(1/K)`` (``"low_power"``)."""
    if name.startswith("mf/"):
        return {"start": "low", "low_power": 1.0 / float(name[3:])}
    return {"start": STARTS[name]}


def refine(inf, key, y, high, budget, start):
    """``inf.refine(key, {"y": y}, model=high, engine="smc", max_simulations=budget, ...)``
    from ``start`` (a dict of :func:`start_settings`), through the functional core (the
    start is not a user setting)."""
    cfg, st = inf.config, inf.state
    flat = _compiled.check(cfg, st, {"y": y}, warn=False, sampler="refine")
    rs = RefineSettings(max_simulations=budget, num_labels=1_000, train_steps=200, engine="smc")
    s = {**rs.plan(cfg), **start}
    hf = _refining.high_fidelity(st, high)
    return _refining.refine_observation(cfg, st, key, flat, s, hf, _samplers.low_draw)[1]


def particles(rec, spec, names, n=20_000):
    """``n`` draws (n, d) of the refinement's weighted particles (multinomial), constrained."""
    w = np.exp(rec.log_w - rec.log_w.max())
    idx = np.random.default_rng(0).choice(len(w), n, p=w / w.sum())
    vals = jax.vmap(spec.constrain)(rec.theta[idx])
    return np.stack([np.asarray(vals[k]) for k in names], 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="*", default=["ou", "burgers"])
    p.add_argument("--budgets", nargs="*", type=int, default=[1_000, 2_000, 4_000, 8_000])
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--starts", nargs="*", default=list(STARTS), help="also mf/K: g = 1/K")
    p.add_argument("--tol", type=float, default=0.1, help="mean error bound (posterior sds)")
    p.add_argument("--sd-tol", type=float, default=0.1, help="sd ratios within 1 +- this")
    a = p.parse_args()
    warnings.simplefilter("ignore")
    for name in a.only:
        low, high, y, ref, names = problem(name)
        inf = MFDiff(low, **BUILD).run(jax.random.PRNGKey(0), y=None)
        m, sd = ref.mean(0), ref.std(0)
        print(f"\n## {name}\n")
        print(
            "| start | budget | seed | high evals | low evals | max mean err (sd) | sd ratios "
            "| ESS | s |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        ok = {s: {} for s in a.starts}
        for start in a.starts:
            for budget in a.budgets:
                good = True
                for seed in a.seeds:
                    t0 = time.perf_counter()
                    key = jax.random.PRNGKey(seed)
                    rec = refine(inf, key, y, high, budget, start_settings(start))
                    secs = time.perf_counter() - t0
                    x = particles(rec, inf.state.spec, names)
                    err = float(np.max(np.abs(x.mean(0) - m) / sd))
                    r = x.std(0) / sd
                    low_ev = sum(
                        s.stage.evaluations for s in rec.rounds if s.stage.move.endswith("-low")
                    )
                    good &= err <= a.tol and abs(r - 1).max() <= a.sd_tol
                    print(
                        f"| {start} | {budget} | {seed} | {rec.num_high_fidelity} | {low_ev} | "
                        f"{err:.3f} | {r.min():.2f}-{r.max():.2f} | {rec.ess:.0f} | {secs:.0f} |",
                        flush=True,
                    )
                ok[start][budget] = good
        print(
            f"\n| start | smallest budget within {a.tol} sd and sd ratios 1 +- {a.sd_tol} "
            "at every seed | prior / it |"
        )
        print("|---|---|---|")
        first = {s: next((b for b in a.budgets if ok[s][b]), None) for s in a.starts}
        for s in a.starts:
            ratio = (
                "-"
                if first[s] is None or first.get("prior") is None
                else f"{first['prior'] / first[s]:.2f}"
            )
            print(f"| {s} | {first[s] or '> ' + str(a.budgets[-1])} | {ratio} |")


if __name__ == "__main__":
    main()
