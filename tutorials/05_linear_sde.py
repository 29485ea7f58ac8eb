# %% [markdown]
# # A linear SDE: refining an Euler-Maruyama posterior with the exact transition law
#
# An Ornstein-Uhlenbeck process `dX = -theta X dt + sigma dW`, started at the
# known `X(0) = 5`, is observed with a small noise (sd 0.05) at
# `t = 0.5, 1, ..., 5`. The drift `theta` and the diffusion `sigma` are unknown
# (LogNormal priors). The path at the observation times is Gaussian, so the
# likelihood is exact and the posterior can be computed on a 2-D grid.
#
# - **Low fidelity** (`ou_low`): the Gaussian law of a coarse Euler-Maruyama
#   chain, one step `h = 0.5` per observation interval,
#   `X_{n+1} = (1 - theta h) X_n + sigma sqrt(h) xi`. It decays too fast
#   (`1 - theta h < exp(-theta h)`), so its posterior of `theta` is too low.
# - **High fidelity** (`ou_high`): the exact law,
#   `E X_t = x0 exp(-theta t)`,
#   `Cov(X_s, X_t) = sigma^2 / (2 theta) (exp(-theta |t - s|) - exp(-theta (t + s)))`.
#
# Both are one multivariate normal observed site whose mean and covariance
# depend on the parameters only: `MFDiff` keeps each prior draw's distribution
# of the observed sites and evaluates it for any later observation.
#
# Set `MFDIFF_TUTORIAL_FAST=1` for tiny budgets (a smoke run, inaccurate).

# %%
import os
import time

import matplotlib

if not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")
import jax
import matplotlib.pyplot as plt
import numpy as np

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.baselines import nuts
from numpyro_mfdiff.examples import (
    OU_NOISE,
    OU_TIMES,
    OU_TRUE,
    ou_euler_moments,
    ou_exact_moments,
    ou_high,
    ou_log_posterior_grid,
    ou_low,
)

FAST = os.environ.get("MFDIFF_TUTORIAL_FAST") == "1"
if FAST:
    BUILD = dict(num_simulations=1000, num_labels=300, train_steps=100, num_steps=20, width=32)
    REFINE = dict(num_simulations=300, rounds=1, num_labels=300, train_steps=100)
    NUTS = dict(num_chains=1, num_warmup=100, num_samples=200)
else:
    BUILD = dict(num_simulations=20_000, num_labels=10_000, train_steps=4_000)
    REFINE = dict(num_simulations=2_000, rounds=2)
    NUTS = dict(num_chains=4, num_warmup=1000, num_samples=1000)
TRUE = (OU_TRUE["theta"], OU_TRUE["sigma"])
T = len(OU_TIMES)

# %% [markdown]
# ## The two laws, and one observation
# Mean and two-sd band of both laws at the true parameters; the coarse chain
# loses half of its value per interval (`1 - 0.5 = 0.5`) where the process keeps
# `exp(-0.5) = 0.61`.

# %%
mean_hi, cov_hi = (np.asarray(v) for v in ou_exact_moments(*TRUE))
mean_lo, cov_lo = (np.asarray(v) for v in ou_euler_moments(*TRUE))
chol = np.linalg.cholesky(cov_hi + OU_NOISE**2 * np.eye(T))
y_obs = mean_hi + chol @ np.asarray(jax.random.normal(jax.random.PRNGKey(1), (T,)))
fig, ax = plt.subplots(figsize=(6, 3))
for name, m, c in (("exact", mean_hi, cov_hi), ("Euler-Maruyama, h=0.5", mean_lo, cov_lo)):
    sd = np.sqrt(np.diag(c))
    ax.plot(OU_TIMES, m, "o-", ms=3, label=name)
    ax.fill_between(OU_TIMES, m - 2 * sd, m + 2 * sd, alpha=0.2)
ax.plot(OU_TIMES, y_obs, "kx", label="observation")
ax.set_xlabel("t")
ax.legend()
print("max |mean_low - mean_exact| =", np.abs(mean_lo - mean_hi).max())

# %% [markdown]
# ## The exact posterior on a grid
# The reference: prior times exact likelihood on a 300 x 300 grid, and the
# same for the coarse law (what `G_low` can at best learn).

# %%
tg, sg = np.linspace(0.3, 2.0, 300), np.linspace(0.15, 1.1, 300)
post = {}
for name, exact in (("exact", True), ("coarse law", False)):
    lp = ou_log_posterior_grid(y_obs, tg, sg, exact=exact)
    p = np.exp(lp - lp.max())
    post[name] = p / p.sum()
    print(
        f"{name}: posterior mean theta {(post[name].sum(1) * tg).sum():.3f}, "
        f"sigma {(post[name].sum(0) * sg).sum():.3f}"
    )

# %% [markdown]
# ## G_low on the coarse law, refinement with the exact one, and NUTS

# %%
obs = {"y": y_obs}
inf = MFDiff(ou_low, progress_bar=False, **BUILD)
t0 = time.perf_counter()
inf.run(jax.random.PRNGKey(0))
t_low = time.perf_counter() - t0
n = 2000 if not FAST else 500
low = inf.get_samples(jax.random.PRNGKey(2), obs, n)
t0 = time.perf_counter()
inf.refine(jax.random.PRNGKey(3), obs, model=ou_high, **REFINE)
t_refine = time.perf_counter() - t0
high = inf.get_samples(jax.random.PRNGKey(4), obs, n)
d = next(iter(inf.diagnostics["refinements"].values()))
t0 = time.perf_counter()
ref = nuts(ou_high, obs, jax.random.PRNGKey(6), **NUTS)
t_nuts = time.perf_counter() - t0
spent = {
    "G_low (low fidelity)": BUILD["num_simulations"],
    "refinement (high fidelity)": d["num_high_fidelity_simulations"],
    "NUTS (high fidelity, with gradient)": ref.attrs["num_gradient_evaluations"],
}
for k, v in spent.items():
    print(f"{k:38s} {v:7d} solves")
print(f"wall time: G_low {t_low:.0f} s, refinement {t_refine:.0f} s, NUTS {t_nuts:.0f} s")
print(f"importance ESS {d['ess_before']:.1f} -> {d['ess_after']:.1f}")

# %% [markdown]
# ## Before and after
# Contours: the exact posterior (black) and the coarse-law posterior (grey);
# points: samples. `G_low` sits on the coarse-law posterior, `G_high` on the
# exact one, like NUTS.

# %%
fig, axes = plt.subplots(1, 4, figsize=(16, 3.5))
nuts_draws = {k: np.ravel(ref.posterior[k].values) for k in ("theta", "sigma")}
for ax, (name, s) in zip(
    axes, (("G_low", low), ("G_high", high), ("NUTS", nuts_draws)), strict=False
):
    ax.contour(tg, sg, post["exact"].T, levels=5, colors="k", linewidths=0.8)
    ax.contour(tg, sg, post["coarse law"].T, levels=5, colors="0.6", linewidths=0.8)
    ax.plot(np.ravel(s["theta"]), np.ravel(s["sigma"]), ".", ms=1.5, alpha=0.4)
    ax.plot(*TRUE, "r*", ms=10)
    ax.set(title=name, xlabel="theta", ylabel="sigma", xlim=(0.3, 2.0), ylim=(0.15, 1.1))
axes[3].bar(range(len(spent)), list(spent.values()), color=["C0", "C1", "C2"])
axes[3].set_xticks(range(len(spent)), ["G_low\n(low)", "refine\n(high)", "NUTS\n(high)"])
axes[3].set_yscale("log")
axes[3].set_title("simulations spent")
fig.tight_layout()
exact_theta = (post["exact"].sum(1) * tg).sum()
for name, s in (("G_low", low), ("G_high", high), ("NUTS", nuts_draws)):
    m, ms = float(np.mean(s["theta"])), float(np.mean(s["sigma"]))
    print(f"{name:7s} theta mean {m:.3f} (exact {exact_theta:.3f}), sigma mean {ms:.3f}")
plt.show()
