# %% [markdown]
# # Lorenz 63: refining a coarse-solver posterior with an adaptive solver
#
# The chaotic Lorenz 63 system, observed with noise at five times, has three
# unknown parameters `(sigma, rho, beta)`. A fixed-step RK4 solver with a large
# step (`dt = 0.075`) is cheap but biased; an adaptive `diffrax` Tsit5 solve
# (`rtol = atol = 1e-6`) is accurate. `MFDiff` builds the amortized sampler
# `G_low` on the cheap model, then `refine` spends a few high-fidelity solves
# on one observation and fits `G_high`. NUTS on the high-fidelity model is the
# reference.
#
# Set `MFDIFF_TUTORIAL_FAST=1` for tiny budgets (a smoke run, inaccurate).

# %%
import os
import time

import matplotlib

if not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")
import arviz as az
import jax
import matplotlib.pyplot as plt
import numpy as np

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.baselines import nuts
from numpyro_mfdiff.examples import (
    LORENZ_NOISE,
    LORENZ_TIMES,
    LORENZ_TRUE,
    lorenz63_diffrax,
    lorenz63_high,
    lorenz63_low,
    lorenz63_rk4,
)
from numpyro_mfdiff.metrics import c2st

FAST = os.environ.get("MFDIFF_TUTORIAL_FAST") == "1"
if FAST:
    BUILD = dict(num_simulations=1000, num_labels=300, train_steps=100, num_steps=20, width=32)
    REFINE = dict(num_simulations=200, rounds=1, num_labels=300, train_steps=100)
    NUTS = dict(num_chains=1, num_warmup=50, num_samples=50)
    # a smoke run's NUTS on the coarse model: compiling NUTS through the adaptive
    # solver takes about 40 s by itself, whatever the budget
    NUTS_MODEL = lorenz63_low
else:
    # measured (benchmarks/bench_lorenz.py): G_low misses the truth, three rounds of
    # 2,000 high-fidelity solves recover the NUTS posterior (C2ST ~0.55)
    BUILD = dict(num_simulations=10_000, num_labels=10_000, train_steps=4_000)
    REFINE = dict(num_simulations=2_000, rounds=3)
    NUTS = dict(num_chains=2, num_warmup=300, num_samples=500)
    NUTS_MODEL = lorenz63_high
NAMES = ["sigma", "rho", "beta"]
TRUE = tuple(LORENZ_TRUE[k] for k in NAMES)

# %% [markdown]
# ## Coarse and fine solvers
# The coarse RK4 trajectory drifts away from the adaptive one by more than
# one noise standard deviation by `t = 1.5`: a biased simulator.

# %%
fine_t = np.arange(1, 61) * 0.025
coarse = np.asarray(lorenz63_rk4(TRUE, times=np.arange(1, 21) * 0.075))
fine = np.asarray(lorenz63_diffrax(TRUE, times=tuple(fine_t)))
y_obs = np.asarray(
    lorenz63_diffrax(TRUE) + LORENZ_NOISE * jax.random.normal(jax.random.PRNGKey(1), (5, 3))
)
fig, axes = plt.subplots(1, 3, figsize=(12, 3))
for i, ax in enumerate(axes):
    ax.plot(fine_t, fine[:, i], label="adaptive (Tsit5)")
    ax.plot(np.arange(1, 21) * 0.075, coarse[:, i], "o--", ms=3, label="RK4, dt=0.075")
    ax.plot(LORENZ_TIMES, y_obs[:, i], "kx", label="observation")
    ax.set_title("xyz"[i])
axes[0].legend()
print(
    "max |coarse - fine| at the observation times:",
    np.abs(np.asarray(lorenz63_rk4(TRUE)) - np.asarray(lorenz63_diffrax(TRUE))).max(),
)

# %% [markdown]
# ## G_low from the coarse model, then refinement with the fine one

# %%
obs = {"y": y_obs}
inf = MFDiff(lorenz63_low, progress_bar=False, **BUILD)
t0 = time.perf_counter()
inf.run(jax.random.PRNGKey(0))
t_low = time.perf_counter() - t0
t0 = time.perf_counter()
inf.refine(jax.random.PRNGKey(3), obs, model=lorenz63_high, **REFINE)
t_refine = time.perf_counter() - t0
d = next(iter(inf.diagnostics["refinements"].values()))
print(f"G_low: {BUILD['num_simulations']} low-fidelity solves, {t_low:.0f} s")
print(
    f"refinement: {d['num_high_fidelity_simulations']} high-fidelity solves, {t_refine:.0f} s, "
    f"importance ESS {d['ess_before']:.1f} -> {d['ess_after']:.1f}"
)

# %% [markdown]
# ## NUTS on the high-fidelity model (reference)
# Every leapfrog step is one adaptive solve with its gradient (in fast mode NUTS
# runs on the coarse model instead: a smoke run).

# %%
t0 = time.perf_counter()
ref = nuts(NUTS_MODEL, obs, jax.random.PRNGKey(6), **NUTS)
print(
    f"NUTS: {ref.attrs['num_gradient_evaluations']} high-fidelity solves with gradients, "
    f"{time.perf_counter() - t0:.0f} s"
)

# %% [markdown]
# ## Before and after
# `G_low` (coarse model) is shifted; `G_high` should sit on the NUTS posterior
# and contain the true parameters.

# %%
n = 2000 if not FAST else 200
idata_low = inf.to_inference_data(jax.random.PRNGKey(4), obs, n, fidelity="low")
idata_high = inf.to_inference_data(jax.random.PRNGKey(5), obs, n)
# histograms with shared bins (a KDE cannot draw a posterior that collapsed to a
# point, which is what a tiny fast-mode refinement can give)
fig, axes = plt.subplots(1, len(NAMES), figsize=(4 * len(NAMES), 3))
for ax, k in zip(axes, NAMES, strict=True):
    draws = {
        "G_low": np.ravel(idata_low.posterior[k].values),
        "G_high": np.ravel(idata_high.posterior[k].values),
        "NUTS": np.ravel(ref.posterior[k].values),
    }
    lo = min(v.min() for v in draws.values())
    hi = max(v.max() for v in draws.values())
    pad = 0.05 * (hi - lo) + 1e-3
    bins = np.linspace(lo - pad, hi + pad, 40)
    for name, v in draws.items():
        ax.hist(v, bins=bins, density=True, histtype="step", label=name)
    ax.axvline(LORENZ_TRUE[k], color="k", ls="--", label="truth")
    ax.set_title(k)
axes[0].legend()
for name, idata in (("G_low", idata_low), ("G_high", idata_high), ("NUTS", ref)):
    print(name)
    print(az.summary(idata, var_names=list(NAMES), kind="stats", hdi_prob=0.9))
nuts_draws = np.stack([np.ravel(ref.posterior[k].values) for k in NAMES], axis=1)
for name, idata in (("G_low", idata_low), ("G_high", idata_high)):
    draws = np.stack([np.ravel(idata.posterior[k].values) for k in NAMES], axis=1)
    m = min(len(draws), len(nuts_draws))  # equal classes: else chance is not 0.5
    acc = float(c2st(draws[:m], nuts_draws[:m], jax.random.PRNGKey(7)))
    print(f"C2ST({name}, NUTS) = {acc:.3f}  (0.5: indistinguishable)")
for k in NAMES:
    print(
        f"{k:6s} true {LORENZ_TRUE[k]:7.3f}  G_low {float(idata_low.posterior[k].mean()):7.3f}"
        f"  G_high {float(idata_high.posterior[k].mean()):7.3f}"
        f"  NUTS {float(ref.posterior[k].mean()):7.3f}"
    )
plt.show()

# %% [markdown]
# ## Simulations spent
# The amortized `G_low` costs cheap solves only; refinement spends its
# high-fidelity solves where `G_low` puts the posterior; NUTS needs one
# high-fidelity solve *with its gradient* per leapfrog step.

# %%
spent = {
    "low-fidelity\n(G_low)": BUILD["num_simulations"],
    "high-fidelity\n(refinement)": d["num_high_fidelity_simulations"],
    "high-fidelity + grad\n(NUTS)": ref.attrs["num_gradient_evaluations"],
}
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(list(spent), list(spent.values()), color=["C7", "C0", "C3"])
ax.set_ylabel("solves")
for i, v in enumerate(spent.values()):
    ax.text(i, v, f"{v:,}", ha="center", va="bottom")
plt.show()
