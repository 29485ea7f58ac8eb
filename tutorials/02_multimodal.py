# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Multi-modal posteriors in 2-D: G_low, the ODE sampler, NUTS and SMC
#
# Two parameters are observed through their squares,
#
# $$\theta \sim \mathcal U(-2, 2)^2, \qquad
#   y \mid \theta \sim \mathcal N\big((\theta_1^2, \theta_2^2),\ 0.1^2 I\big),$$
#
# so the posterior at `y = (1, 0.5)` has four modes of equal mass, at
# `(+-1, +-0.71)`. We compare four samplers on it, all through ArviZ:
#
# - `G_low`: the amortized generator of `MFDiff` (`get_samples`);
# - `ODE`: the probability-flow ODE with the Monte Carlo score (`sample_ode`), no network;
# - `NUTS`: BlackJAX NUTS, 4 chains (`numpyro_mfdiff.baselines.nuts`);
# - `SMC`: BlackJAX adaptive tempered SMC (`numpyro_mfdiff.baselines.smc`).
#
# `MFDIFF_TUTORIAL_FAST=1` shrinks every budget.

# %%
import os
import time

import arviz as az
import jax
import matplotlib.pyplot as plt
import numpy as np
import numpyro
import numpyro.distributions as dist

from numpyro_mfdiff import MFDiff, baselines
from numpyro_mfdiff.metrics import kl_divergence_hist

FAST = os.environ.get("MFDIFF_TUTORIAL_FAST", "0") not in ("", "0")
if FAST:
    BUDGET = dict(num_simulations=2_000, num_labels=1_000, train_steps=500, batch_size=256)
    NUTS = dict(num_chains=4, num_warmup=100, num_samples=100)
    SMC_PARTICLES = 400
else:
    BUDGET = dict(num_simulations=20_000, num_labels=20_000, train_steps=10_000)
    NUTS = dict(num_chains=4, num_warmup=1_000, num_samples=1_000)
    SMC_PARTICLES = 2_000
NUM_SAMPLES = 4 * NUTS["num_samples"]
print("fast mode" if FAST else "full mode", BUDGET)

# %% [markdown]
# ## Model and exact posterior
#
# The prior is uniform, so the exact posterior is the normalised likelihood on
# the square; it factorises over the two coordinates, which gives exact samples
# by inverting each coordinate's CDF on a fine grid.

# %%
NOISE = 0.1
Y_OBS = np.array([1.0, 0.5])


def model(y=None):
    theta = numpyro.sample("theta", dist.Uniform(-2.0, 2.0).expand([2]).to_event(1))
    numpyro.sample("y", dist.Normal(theta**2, NOISE).to_event(1), obs=y)


GRID = np.linspace(-2, 2, 4001)


def exact_marginal(y):
    p = np.exp(-0.5 * ((y - GRID**2) / NOISE) ** 2)
    return p / (p.sum() * (GRID[1] - GRID[0]))


def exact_samples(key, n, y=Y_OBS):
    u = np.asarray(jax.random.uniform(key, (n, 2)))
    cols = []
    for i in range(2):
        cdf = np.cumsum(exact_marginal(y[i]))
        cols.append(np.interp(u[:, i], cdf / cdf[-1], GRID))
    return np.stack(cols, axis=1)


exact = exact_samples(jax.random.PRNGKey(99), NUM_SAMPLES)
COARSE = GRID[::20]  # for contour plots
density = np.outer(exact_marginal(Y_OBS[1])[::20], exact_marginal(Y_OBS[0])[::20])  # rows: theta_2
LEVELS = density.max() * np.array([0.01, 0.1, 0.5])

# %% [markdown]
# ## Run the four samplers
#
# One `MFDiff` build serves both `G_low` and the ODE sampler (the ODE needs only
# the prior simulations). `to_inference_data` returns the same ArviZ structure as
# the baselines.

# %%
times = {}
t0 = time.perf_counter()
inf = MFDiff(model, progress_bar=False, **BUDGET).run(jax.random.PRNGKey(0))
obs = {"y": Y_OBS}
idata = {"G_low": inf.to_inference_data(jax.random.PRNGKey(1), obs, NUM_SAMPLES, num_chains=4)}
times["G_low"] = time.perf_counter() - t0

t0 = time.perf_counter()
idata["ODE"] = inf.to_inference_data(
    jax.random.PRNGKey(2), obs, NUM_SAMPLES, num_chains=4, method="ode"
)
times["ODE"] = inf.diagnostics["timings"]["simulation"] + time.perf_counter() - t0

t0 = time.perf_counter()
idata["NUTS"] = baselines.nuts(model, obs, jax.random.PRNGKey(5), **NUTS)
times["NUTS"] = time.perf_counter() - t0

t0 = time.perf_counter()
idata["SMC"] = baselines.smc(model, obs, jax.random.PRNGKey(4), num_particles=SMC_PARTICLES)
times["SMC"] = time.perf_counter() - t0

print({k: f"{v:.1f} s" for k, v in times.items()})
print(
    f"likelihood-weight ESS over the {BUDGET['num_simulations']} prior simulations:",
    f"{inf.ess(obs):.0f}",
)


def draws(d):
    """(n, 2) array of the posterior draws of an InferenceData, chains stacked."""
    return np.asarray(d.posterior["theta"]).reshape(-1, 2)


# %% [markdown]
# ## Where the samples land
#
# Samples of each method over the exact posterior's contours. NUTS chains do
# not cross between modes: 4 chains find at most 4 modes, and usually fewer
# (all four only when each chain starts near a different one), with masses set
# by where the chains started. SMC moves its particles from the prior through tempered
# posteriors and keeps all modes. `G_low` and the ODE sampler start from
# Gaussian noise that the flow splits between the modes; the few `G_low` draws
# strung out between two modes are the network smoothing over the jump from one
# mode to the next, which the ODE sampler (no network) does not do.

# %%
fig, axes = plt.subplots(1, 4, figsize=(16, 4), sharex=True, sharey=True)
for ax, (name, d) in zip(axes, idata.items(), strict=True):
    x = draws(d)
    ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.3, color="C0")
    ax.contour(COARSE, COARSE, density, levels=LEVELS, colors="k", linewidths=0.6)
    ax.set_title(f"{name} ({x.shape[0]} draws)")
    ax.set_xlabel(r"$\theta_1$")
axes[0].set_ylabel(r"$\theta_2$")
axes[0].set(xlim=(-2, 2), ylim=(-2, 2))
fig.tight_layout()

chain_means = np.asarray(idata["NUTS"].posterior["theta"]).mean(axis=1)
print("mean of each NUTS chain:", np.round(chain_means.astype(float), 2).tolist())

# %% [markdown]
# A pair plot of the `G_low` posterior with its marginals, straight from ArviZ:

# %%
axes = az.plot_pair(
    idata["G_low"],
    var_names=["theta"],
    kind="hexbin",
    marginals=True,
    gridsize=40,
    hexbin_kwargs={"cmap": "Blues", "mincnt": 1},
    figsize=(5, 5),
)

# %% [markdown]
# ## Mass per mode
#
# Each quadrant holds one mode and a quarter of the posterior mass. The bars
# show what each method puts there; the mode-mass error is the mass that would
# have to move between quadrants to match. The KL divergence from the exact posterior on
# a 20 x 20 grid of bins sums up the whole picture; `exact` scores exact samples
# the same way, which is the floor this sample size allows.


# %%
def quadrant_mass(x):
    q = 2 * (x[:, 0] > 0) + (x[:, 1] > 0)
    return np.bincount(q, minlength=4) / x.shape[0]


def exact_bin_probs(bins=20):
    """Exact posterior mass of the bins x bins grid over the square (first axis: theta_1)."""
    edges = np.searchsorted(GRID, np.linspace(-2, 2, bins + 1))
    m = [np.add.reduceat(exact_marginal(y), edges[:-1]) for y in Y_OBS]
    return np.outer(m[0], m[1])


samples = {name: draws(d) for name, d in idata.items()} | {"exact": exact}
fig, ax = plt.subplots(figsize=(9, 3))
width = 0.16
for i, (name, x) in enumerate(samples.items()):
    ax.bar(np.arange(4) + (i - 2) * width, quadrant_mass(x), width, label=name)
ax.axhline(0.25, color="k", lw=1, ls="--")
ax.set_xticks(np.arange(4), ["(-,-)", "(-,+)", "(+,-)", "(+,+)"])
ax.set(xlabel=r"quadrant (signs of $\theta_1$, $\theta_2$)", ylabel="posterior mass")
ax.legend(ncol=5, fontsize=8)
fig.tight_layout()

probs = exact_bin_probs()
for name, x in samples.items():
    kl = kl_divergence_hist(probs, x, bins=20, range=((-2, 2), (-2, 2)), p_is_probs=True)
    mode_error = 0.5 * np.abs(quadrant_mass(x) - 0.25).sum()
    print(f"{name:6s} KL {float(kl):.3f}   mode-mass error {mode_error:.3f}")

# %% [markdown]
# ## Diagnostics, ESS and time
#
# ArviZ's split R-hat compares chains: it flags NUTS, whose chains sit in
# different modes, but it cannot tell that a sampler missed a mode altogether.
# The effective sample size (bulk ESS, worst coordinate) and the wall time to a
# first posterior are on the left; on the right, the time for a posterior at a
# *new* observation. NUTS and SMC start over for it (about their first run's
# time); `G_low` makes one network call and the ODE sampler one integration.

# %%
summaries = {
    name: az.summary(d, var_names=["theta"], kind="diagnostics") for name, d in idata.items()
}
for name, s in summaries.items():
    print(f"{name:6s} max R-hat {s['r_hat'].max():5.2f}   min bulk ESS {s['ess_bulk'].min():7.0f}")
print("(SMC returns one set of particles, so it has no R-hat)")

obs_next = {"y": np.array([2.0, 0.3])}
t0 = time.perf_counter()
jax.block_until_ready(inf.get_samples(jax.random.PRNGKey(8), obs_next, NUM_SAMPLES))
t_next = {"G_low": time.perf_counter() - t0}
t0 = time.perf_counter()
jax.block_until_ready(inf.sample_ode(jax.random.PRNGKey(6), obs_next, NUM_SAMPLES))
t_next["ODE"] = time.perf_counter() - t0
t_next.update(NUTS=times["NUTS"], SMC=times["SMC"])

names = list(idata)
colors = [f"C{i}" for i in range(4)]
fig, axes = plt.subplots(1, 3, figsize=(15, 3))
panels = [
    ([summaries[n]["ess_bulk"].min() for n in names], "bulk ESS (worst coordinate)", "{:.0f}"),
    ([times[n] for n in names], "first posterior [s] (incl. build, compilation)", "{:.1f}"),
    ([t_next[n] for n in names], "posterior for a new observation [s]", "{:.2g}"),
]
for ax, (values, title, fmt) in zip(axes, panels, strict=True):
    bars = ax.barh(names, values, color=colors)
    ax.bar_label(bars, [fmt.format(v) for v in values], padding=2, fontsize=8)
    ax.set_title(title)
    ax.invert_yaxis()
    ax.margins(x=0.2)
axes[2].set_xscale("log")
fig.tight_layout()

# %% [markdown]
# ## When the method fails
#
# The Monte Carlo score is a softmax over the prior simulations, weighted by
# their likelihood at `y`. Its accuracy is set by how many simulations carry
# weight: `inf.ess(obs)`. The package warns when it drops below
# `ess_warning` (50 by default). In two dimensions with a broad prior it is in
# the hundreds; observations far in the tails of the prior predictive, or
# many parameters, bring it down, and then both `G_low` and the ODE sampler
# reproduce a handful of prior points. More simulations, or refinement around
# the observation, are the remedies.

# %%
for y in ([1.0, 0.5], [3.9, 3.9], [0.0, 0.0]):
    print(f"y = {y}: likelihood-weight ESS {inf.ess({'y': np.array(y)}):7.1f}")
