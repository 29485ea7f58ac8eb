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
# # Quick start: a two-mode posterior in one dimension
#
# The first example of the paper: a parameter `theta` with a uniform prior on
# `[-2, 2]` is observed through its square,
#
# $$\theta \sim \mathcal U(-2, 2), \qquad y \mid \theta \sim \mathcal N(\theta^2, 0.1^2).$$
#
# For `y = 1` the posterior has two equal modes, at `theta = -1` and `theta = +1`.
# We build the amortized sampler `G_low(y, z) -> theta` once, draw posteriors for
# several observations from it, compare them with the exact posterior, and run
# NUTS on the same model: each NUTS chain settles in one mode.
#
# Set the environment variable `MFDIFF_TUTORIAL_FAST=1` to run everything with
# small budgets (the tests do this); the plots are then rougher.

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
from numpyro_mfdiff.examples import quadratic_bin_probs
from numpyro_mfdiff.metrics import kl_divergence_hist

FAST = os.environ.get("MFDIFF_TUTORIAL_FAST", "0") not in ("", "0")
if FAST:
    BUDGET = dict(num_simulations=2_000, num_labels=1_000, train_steps=500, batch_size=256)
    NUTS = dict(num_chains=4, num_warmup=100, num_samples=100)
else:
    BUDGET = dict(num_simulations=20_000, num_labels=20_000, train_steps=10_000)
    NUTS = dict(num_chains=4, num_warmup=1_000, num_samples=1_000)
NUM_SAMPLES = 4 * NUTS["num_samples"]  # as many draws as NUTS returns
print("fast mode" if FAST else "full mode", BUDGET)

# %% [markdown]
# ## The model
#
# An ordinary NumPyro model. The latent site `theta` is the prior; the observed
# site `y` is the simulator output plus its noise. `MFDiff` needs nothing else:
# no likelihood gradient, no guide.

# %%
NOISE = 0.1


def model(y=None):
    theta = numpyro.sample("theta", dist.Uniform(-2.0, 2.0))
    numpyro.sample("y", dist.Normal(theta**2, NOISE), obs=y)


def exact_density(y, grid):
    """Exact posterior density of theta on ``grid`` (normalised numerically)."""
    logp = -0.5 * ((y - grid**2) / NOISE) ** 2
    p = np.exp(logp - logp.max())
    return p / (p.sum() * (grid[1] - grid[0]))


# %% [markdown]
# ## Build the amortized sampler
#
# `run` does three things, timed in `diagnostics["timings"]`:
#
# 1. simulates the model `num_simulations` times from its prior;
# 2. labels `num_labels` triples `(y, z, theta)` by integrating the probability-flow
#    ODE whose score is a Monte Carlo sum over those simulations (no training);
# 3. fits the network `G_low(y, z) -> theta` to the triples.

# %%
inf = MFDiff(model, progress_bar=False, **BUDGET)
t0 = time.perf_counter()
inf.run(jax.random.PRNGKey(0))
build_time = time.perf_counter() - t0
print({k: round(v, 1) for k, v in inf.diagnostics["timings"].items()}, f"total {build_time:.1f} s")

# %% [markdown]
# ## Posteriors for many observations in one call
#
# `get_samples` takes a dict of observations, like `numpyro.handlers.condition`;
# a leading axis on the observed values asks for a batch of posteriors. Each
# sample costs one forward pass of the network.

# %%
ys = np.array([0.25, 1.0, 2.0, 3.5])
t0 = time.perf_counter()
draws = inf.get_samples(jax.random.PRNGKey(1), {"y": ys}, num_samples=NUM_SAMPLES)["theta"]
draws = np.asarray(jax.block_until_ready(draws))
print(f"{draws.shape} samples in {time.perf_counter() - t0:.2f} s (including compilation)")

grid = np.linspace(-2, 2, 801)
fig, axes = plt.subplots(1, len(ys), figsize=(14, 3), sharey=False)
for ax, y, d in zip(axes, ys, draws, strict=True):
    kl = kl_divergence_hist(quadratic_bin_probs(y, 80), d, bins=80, range=(-2, 2), p_is_probs=True)
    ax.hist(d, bins=80, range=(-2, 2), density=True, color="C0", alpha=0.6, label="G_low")
    ax.plot(grid, exact_density(y, grid), "k", lw=1.2, label="exact")
    ax.set_title(f"y = {y:g}: KL {float(kl):.3f}, ESS {inf.ess({'y': y}):.0f}")
    ax.set_xlabel(r"$\theta$")
axes[0].legend(loc="upper left")
fig.tight_layout()

# %% [markdown]
# The titles give the KL divergence from the exact posterior (80 bins) and the
# *likelihood-weight ESS*: how many of the prior simulations really inform the
# posterior at this `y`. Hundreds or more is comfortable; tens means the
# estimator rests on a handful of simulations (the package warns below 50).

# %% [markdown]
# ## The same posterior from NUTS
#
# `baselines.nuts` runs BlackJAX NUTS with window adaptation on the same model
# and returns ArviZ `InferenceData`. Each chain starts from a prior draw and
# stays in the mode it falls into: the chains disagree, and the share of each
# mode is decided by where the chains started, not by the posterior.

# %%
t0 = time.perf_counter()
idata_nuts = baselines.nuts(model, {"y": 1.0}, jax.random.PRNGKey(2), **NUTS)
nuts_time = time.perf_counter() - t0
chains = np.asarray(idata_nuts.posterior["theta"])
print(f"NUTS: {nuts_time:.1f} s; share of theta > 0 per chain:", (chains > 0).mean(axis=1))

fig, ax = plt.subplots(figsize=(9, 3))
for c, chain in enumerate(chains):
    ax.hist(chain, bins=80, range=(-2, 2), density=True, alpha=0.5, label=f"chain {c}")
ax.plot(grid, exact_density(1.0, grid), "k", lw=1.2, label="exact")
ax.set(title="NUTS, one histogram per chain", xlabel=r"$\theta$")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## Both posteriors in ArviZ
#
# `to_inference_data` gives the `G_low` posterior as `InferenceData` (with the
# prior simulations in the `prior` group), so the usual ArviZ tools apply. Split
# into 4 "chains", the independent `G_low` draws each cover both modes; the NUTS
# chains each sit in one. The split R-hat flags exactly that.

# %%
idata_mf = inf.to_inference_data(jax.random.PRNGKey(3), {"y": 1.0}, NUM_SAMPLES, num_chains=4)
fig, axes = plt.subplots(2, 2, figsize=(12, 5))
az.plot_trace(idata_mf, var_names=["theta"], axes=axes[:1], compact=False)
az.plot_trace(idata_nuts, var_names=["theta"], axes=axes[1:], compact=False)
for row, name in zip(axes, ["G_low", "NUTS"], strict=True):
    row[0].set_title(f"{name}: density per chain")
    row[1].set_title(f"{name}: draws per chain")
fig.tight_layout()

for name, idata in [("G_low", idata_mf), ("NUTS", idata_nuts)]:
    diag = az.summary(idata, var_names=["theta"], kind="diagnostics")
    print(f"{name:6s} R-hat {diag['r_hat'].iloc[0]:.2f}, bulk ESS {diag['ess_bulk'].iloc[0]:.0f}")

# %% [markdown]
# ## Time to a posterior
#
# Building `G_low` costs more than one NUTS run, but a posterior for a new
# observation is then a single batched network call, while NUTS starts over
# (adaptation, sampling, and here also compilation: a second run costs about
# as much as the first, so the first run's time stands for it).

# %%
t0 = time.perf_counter()
jax.block_until_ready(inf.get_samples(jax.random.PRNGKey(4), {"y": 2.0}, NUM_SAMPLES))
next_mf = time.perf_counter() - t0

fig, axes = plt.subplots(1, 2, figsize=(11, 2.8))
axes[0].barh(["G_low (build)", "NUTS"], [build_time, nuts_time], color=["C0", "C1"])
axes[0].set(title="first posterior", xlabel="seconds")
axes[1].barh(["G_low", "NUTS"], [next_mf, nuts_time], color=["C0", "C1"])
axes[1].set(title="posterior for a new observation", xlabel="seconds (log scale)", xscale="log")
fig.tight_layout()
print(f"new observation: G_low {next_mf:.3f} s, NUTS about {nuts_time:.1f} s")
print(f"G_low has paid for its build after {int(np.ceil(build_time / nuts_time))} observations")

# %% [markdown]
# ## Without the network
#
# `sample_ode` integrates the probability-flow ODE directly (no `G_low`): slower
# per sample, usually a little more accurate, and needs only the prior
# simulations. It is the reference to check `G_low` against when no exact
# posterior exists.

# %%
ode = np.asarray(inf.sample_ode(jax.random.PRNGKey(6), {"y": 1.0}, NUM_SAMPLES)["theta"])
probs = quadratic_bin_probs(1.0, 80)
for name, d in [("G_low", draws[1]), ("ODE", ode)]:
    kl = kl_divergence_hist(probs, d, bins=80, range=(-2, 2), p_is_probs=True)
    print(f"{name:6s} KL {float(kl):.4f}")

# %% [markdown]
# Next, tutorial 2 (multi-modal posteriors in 2-D) compares `G_low`, the ODE
# sampler, NUTS and SMC side by side.
