# %% [markdown]
# # Burgers' equation: refining a coarse-grid posterior with a fine grid
#
# Viscous Burgers' equation `u_t + u u_x = nu u_xx` on the periodic interval
# `[0, 2 pi)`, started from `u(x, 0) = amp * sin(x)`: the sine steepens into a
# front at `x = pi` around `t = 1 / amp`, which the viscosity `nu` smooths and
# damps. We observe `u` with noise (sd 0.05) at 8 points and 4 times and infer
# `(nu, amp)`.
#
# Both fidelities use the same Fourier pseudo-spectral solver (2/3-rule
# dealiasing, integrating-factor RK4 in time, plain JAX): the low-fidelity model
# `burgers_low` has 20 grid points and a step `dt = 0.1`, the high-fidelity model
# `burgers_high` 128 points and `dt = 0.01`. `MFDiff` builds the amortized
# sampler `G_low` on the cheap model, then `refine` spends a few hundred fine
# solves on one observation and fits `G_high`. With two parameters the fine
# model's posterior can be computed on a grid: that is the reference here
# (`benchmarks/bench_burgers.py` adds NUTS).
#
# Set `MFDIFF_TUTORIAL_FAST=1` for tiny budgets (a smoke run, rougher results).

# %%
import os
import time

import matplotlib

if not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from numpyro.infer import Predictive

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.examples import (
    BURGERS_HIGH_GRID,
    BURGERS_LOW_GRID,
    BURGERS_POINTS,
    BURGERS_TIMES,
    BURGERS_TRUE,
    burgers_exact,
    burgers_grid_posterior,
    burgers_grid_sample,
    burgers_high,
    burgers_interp,
    burgers_low,
    burgers_observation,
    burgers_solution,
    burgers_spectral,
)

FAST = os.environ.get("MFDIFF_TUTORIAL_FAST") == "1"
if FAST:
    BUILD = dict(
        num_simulations=2000, num_labels=512, train_steps=200, num_steps=20, width=32, depth=2
    )
    REFINE = dict(num_simulations=300, rounds=2)
    CELLS = 30
else:
    BUILD = dict(num_simulations=20_000, num_labels=10_000, train_steps=4_000)
    REFINE = dict(num_simulations=1_000, rounds=3)
    CELLS = 100
TRUE = (BURGERS_TRUE["nu"], BURGERS_TRUE["amp"])

# %% [markdown]
# ## The two solvers
# The exact solution (Cole-Hopf transform, `burgers_exact`) against both
# grids. The 20-point grid keeps wavenumbers up to 6 only: it cannot carry the
# front, so the coarse solution is wrong by several noise standard deviations
# near `x = pi`. The fine grid is exact to about 1e-3.

# %%
x = np.linspace(0, 2 * np.pi, 400)
y_obs = burgers_observation(jax.random.PRNGKey(2))
fig, axes = plt.subplots(1, len(BURGERS_TIMES), figsize=(14, 3), sharey=True)
for name, grid, style in (
    ("20 points", BURGERS_LOW_GRID, "--"),
    ("128 points", BURGERS_HIGH_GRID, "-"),
):
    n = grid["n"]
    u0 = TRUE[1] * jnp.sin(2 * jnp.pi * jnp.arange(n) / n)
    fields = burgers_interp(burgers_spectral(u0, TRUE[0], BURGERS_TIMES, grid["dt"]), x, n)
    for ax, field in zip(axes, np.asarray(fields), strict=True):
        ax.plot(x, field, style, label=name)
for i, (ax, t) in enumerate(zip(axes, BURGERS_TIMES, strict=True)):
    ax.plot(x, burgers_exact(TRUE, times=(t,), points=x)[0], ":k", label="exact")
    ax.plot(BURGERS_POINTS, y_obs[i], "kx", label="observation")
    ax.set_title(f"t = {t}")
    ax.set_xlabel("x")
axes[0].legend(fontsize=8)
for name, grid in (("low", BURGERS_LOW_GRID), ("high", BURGERS_HIGH_GRID)):
    err = np.abs(np.asarray(burgers_solution(TRUE, **grid)) - burgers_exact(TRUE)).max()
    print(f"{name} fidelity: max error at the observation points {err:.4f}")

# %% [markdown]
# ## Cost of one solve
# Batched over 1,000 prior draws of `(nu, amp)` and timed after compilation
# (the first call compiles).

# %%
prior = Predictive(burgers_low, num_samples=1000)(jax.random.PRNGKey(0))
params = jnp.stack([prior["nu"], prior["amp"]], axis=1)
cost = {}
for name, grid in (("low", BURGERS_LOW_GRID), ("high", BURGERS_HIGH_GRID)):
    solve = jax.jit(jax.vmap(lambda p, g=grid: burgers_solution((p[0], p[1]), **g)))
    solve(params).block_until_ready()
    t0 = time.perf_counter()
    solve(params).block_until_ready()
    cost[name] = (time.perf_counter() - t0) / len(params)
    print(f"{name} fidelity: {1e6 * cost[name]:.0f} microseconds per solve")
print(f"a fine solve costs {cost['high'] / cost['low']:.0f} coarse ones")

# %% [markdown]
# ## G_low from the coarse model, then refinement with the fine one
# Each round proposes parameters around the current posterior (a widened KDE of
# its samples, plus some prior draws), solves the fine model there and reweights
# all fine solves so far. `G_low` sits about three posterior standard deviations
# away from the fine posterior, so the first round's importance ESS is small;
# later rounds propose from the corrected posterior and the ESS grows
# (full budgets: about 6, 44, then 290 after three rounds of 1,000).

# %%
obs = {"y": y_obs}
inf = MFDiff(burgers_low, progress_bar=False, **BUILD)
t0 = time.perf_counter()
inf.run(jax.random.PRNGKey(0))
t_low = time.perf_counter() - t0
ess_low = inf.ess(obs)
idata_low = inf.to_inference_data(jax.random.PRNGKey(4), obs, 2000, fidelity="low")
t0 = time.perf_counter()
inf.refine(jax.random.PRNGKey(1), obs, model=burgers_high, **REFINE)
t_refine = time.perf_counter() - t0
idata_high = inf.to_inference_data(jax.random.PRNGKey(5), obs, 2000)
d = next(iter(inf.diagnostics["refinements"].values()))
print(f"G_low: {BUILD['num_simulations']} low-fidelity solves, {t_low:.0f} s, ESS {ess_low:.0f}")
print(
    f"refinement: {d['num_high_fidelity_simulations']} high-fidelity solves, {t_refine:.0f} s, "
    f"importance ESS after each round {[round(r['ess']) for r in d['rounds']]}"
)

# %% [markdown]
# ## The reference: the fine model's posterior on a grid

# %%
t0 = time.perf_counter()
grid = burgers_grid_posterior(y_obs, num=(CELLS, CELLS))
t_grid = time.perf_counter() - t0
ref = burgers_grid_sample(jax.random.PRNGKey(6), grid, 2000)
print(f"grid posterior: {2 * CELLS**2} high-fidelity solves, {t_grid:.0f} s")

# %% [markdown]
# ## Before and after
# `G_low` inherits the coarse solver's bias: its viscosity is too large (the
# under-resolved front looks smoother). `G_high` should sit on the grid posterior.

# %%
draws = {
    "G_low": {k: np.ravel(idata_low.posterior[k].values) for k in ("nu", "amp")},
    "G_high": {k: np.ravel(idata_high.posterior[k].values) for k in ("nu", "amp")},
    "grid (reference)": ref,
}
fig, axes = plt.subplots(1, 3, figsize=(14, 4))
prob = grid["prob"]
axes[0].contour(
    np.exp(grid["log_nu"]),
    np.exp(grid["log_amp"]),
    prob.T,
    levels=prob.max() * np.array([0.01, 0.1, 0.5]),
)
for name in ("G_low", "G_high"):
    axes[0].plot(draws[name]["nu"][:500], draws[name]["amp"][:500], ".", ms=2, label=name)
axes[0].plot(*TRUE, "k*", ms=12, label="truth")
axes[0].set_xlabel("nu")
axes[0].set_ylabel("amp")
axes[0].set_title("samples over the grid posterior's contours")
axes[0].legend(fontsize=8)
for ax, k in zip(axes[1:], ("nu", "amp"), strict=True):
    lo = min(v[k].min() for v in draws.values())
    hi = max(v[k].max() for v in draws.values())
    bins = np.linspace(lo, hi, 40)
    for name, v in draws.items():
        ax.hist(v[k], bins=bins, density=True, histtype="step", label=name)
    ax.axvline(BURGERS_TRUE[k], color="k", ls="--")
    ax.set_title(k)
axes[1].legend(fontsize=8)
for k in ("nu", "amp"):
    print(
        f"{k:4s} true {BURGERS_TRUE[k]:.4f}  "
        + "  ".join(f"{name} {v[k].mean():.4f} ({v[k].std():.4f})" for name, v in draws.items())
    )

# %% [markdown]
# ## Simulations spent
# In units of one high-fidelity solve, the coarse simulations of `G_low` cost
# little; the refinement adds a few hundred fine solves for this observation.
# The grid reference needs tens of thousands (NUTS, in the benchmark, several
# thousand with gradients): affordable here only because there are two parameters.

# %%
spent = {
    "G_low (coarse)": BUILD["num_simulations"] * cost["low"] / cost["high"],
    "refinement (fine)": d["num_high_fidelity_simulations"],
    "grid reference (fine)": 2 * CELLS**2,
}
fig, ax = plt.subplots(figsize=(7, 2.5))
ax.barh(list(spent), list(spent.values()))
ax.set_xscale("log")
ax.set_xlabel("cost in high-fidelity solves")
for k, v in spent.items():
    print(f"{k:22s} {v:10.0f}")
plt.show()
