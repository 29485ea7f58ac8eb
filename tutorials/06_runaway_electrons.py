# %% [markdown]
# # Runaway electrons (a reduced stand-in): refining a coarse-solver posterior
#
# **This is a stand-in.** The paper's plasma-physics example runs a specialised
# relativistic kinetic solver for runaway electrons, which is not available
# here. This tutorial keeps the structure of that problem (runaway-electron
# output as a function of electric field, density and temperature, solved at
# two fidelities) with a reduced 0-D model of the kind used in disruption
# studies (for example the GO code, Fehér et al., PPCF 53, 035014, 2011):
#
# `df/dt = (S_D + Gamma_av f)(1 - f)`, with `f` the runaway fraction,
# `S_D` the Dreicer generation rate of Connor & Hastie (Nucl. Fusion 15, 415,
# 1975), `Gamma_av` the avalanche growth rate of Rosenbluth & Putvinski
# (Nucl. Fusion 37, 1355, 1997) and the critical field
# `E_c = n_e e^3 lnL / (4 pi eps0^2 m_e c^2)`. A thermal quench cools the
# plasma from 200 eV to `T_f` (time scale 1 ms) while the Ohmic field rises to
# `E_f` (Spitzer: `E ~ T^(-3/2)`). The unknowns are `E_f` (V/m), the density
# `n_e` (`1e19 m^-3`) and `T_f` (eV); observed is `log10 f` at
# `t = 4, 6, ..., 14 ms` with noise 0.3 decades. All formulas and units are in
# the module docstring of `numpyro_mfdiff/examples/_runaway.py`.
#
# - **Low fidelity** (`runaway_low`): explicit Euler with a 1 ms step.
# - **High fidelity** (`runaway_high`): classical RK4 with a 0.1 ms step.
#
# There is no closed-form posterior: the reference is NUTS on the
# high-fidelity model. Set `MFDIFF_TUTORIAL_FAST=1` for tiny budgets (a smoke
# run, inaccurate).

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

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.baselines import nuts
from numpyro_mfdiff.examples import (
    RUNAWAY_NOISE,
    RUNAWAY_TIMES,
    RUNAWAY_TRUE,
    runaway_high,
    runaway_low,
    runaway_rates,
    runaway_solve,
)

FAST = os.environ.get("MFDIFF_TUTORIAL_FAST") == "1"
if FAST:
    BUILD = dict(num_simulations=1000, num_labels=300, train_steps=100, num_steps=20, width=32)
    REFINE = dict(num_simulations=300, rounds=1, num_labels=300, train_steps=100)
    NUTS = dict(num_chains=1, num_warmup=30, num_samples=30)
    # a smoke run's NUTS on the coarse model: its compile through the fine solver
    # takes most of the fast mode's time
    NUTS_MODEL = runaway_low
else:
    BUILD = dict(num_simulations=20_000, num_labels=10_000, train_steps=4_000)
    REFINE = dict(num_simulations=2_000, rounds=2)
    NUTS = dict(num_chains=4, num_warmup=1000, num_samples=1000)
    NUTS_MODEL = runaway_high
NAMES = ["E_f", "n_e", "T_f"]
TRUE = tuple(RUNAWAY_TRUE[k] for k in NAMES)

# %% [markdown]
# ## The rates
# Dreicer generation is exponentially sensitive to `E / E_D`; the avalanche
# rate grows linearly with `E / E_c`. At the true `n_e = 1e19 m^-3`:

# %%
e = np.geomspace(2.0, 30.0, 50)
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
for t_e in (5.0, 10.0, 20.0):
    s_d, gamma = (np.asarray(v) for v in runaway_rates(jnp.asarray(e), 1.0, t_e))
    axes[0].semilogy(e, s_d, label=f"T_e = {t_e:g} eV")
    axes[1].plot(e, gamma, label=f"T_e = {t_e:g} eV")
axes[0].set(xlabel="E (V/m)", ylabel="Dreicer rate per electron (1/s)")
axes[1].set(xlabel="E (V/m)", ylabel="avalanche growth rate (1/s)")
axes[0].legend()

# %% [markdown]
# ## Coarse and fine solvers, and one observation
# The coarse Euler step misses the shape of the Dreicer burst at the end of
# the quench: at 4 ms it is more than a decade low.

# %%
fine_t = np.arange(1, 141) * 0.1
fine = np.log10(np.asarray(runaway_solve(TRUE, times=fine_t)))
coarse_t = np.arange(1, 15) * 1.0
coarse = np.log10(np.asarray(runaway_solve(TRUE, times=coarse_t, dt=1.0, method="euler")))
y_obs = np.log10(np.asarray(runaway_solve(TRUE)))
y_obs = y_obs + RUNAWAY_NOISE * np.asarray(jax.random.normal(jax.random.PRNGKey(1), y_obs.shape))
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(fine_t, fine, label="RK4, dt = 0.1 ms")
ax.plot(coarse_t, coarse, "o--", ms=3, label="Euler, dt = 1 ms")
ax.plot(RUNAWAY_TIMES, y_obs, "kx", label="observation")
ax.set(xlabel="t (ms)", ylabel="log10 runaway fraction", ylim=(-13, 0))
ax.legend()

# %% [markdown]
# ## G_low on the coarse model, refinement with the fine one, and NUTS
# (NUTS on the fine model; in fast mode, a smoke run, on the coarse one.)

# %%
obs = {"y": y_obs}
inf = MFDiff(runaway_low, progress_bar=False, **BUILD)
t0 = time.perf_counter()
inf.run(jax.random.PRNGKey(0))
t_low = time.perf_counter() - t0
n = 2000 if not FAST else 300
low = inf.get_samples(jax.random.PRNGKey(2), obs, n)
t0 = time.perf_counter()
inf.refine(jax.random.PRNGKey(3), obs, model=runaway_high, **REFINE)
t_refine = time.perf_counter() - t0
high = inf.get_samples(jax.random.PRNGKey(4), obs, n)
d = next(iter(inf.diagnostics["refinements"].values()))
t0 = time.perf_counter()
ref = nuts(NUTS_MODEL, obs, jax.random.PRNGKey(6), **NUTS)
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
# Histograms with shared bins (a tiny fast-mode refinement can collapse to a
# point, which a KDE cannot draw): `G_low` is shifted towards higher `T_f`,
# `G_high` should sit on the NUTS posterior.

# %%
fig, axes = plt.subplots(1, len(NAMES) + 1, figsize=(16, 3))
nuts_draws = {k: np.ravel(ref.posterior[k].values) for k in NAMES}
for ax, k in zip(axes, NAMES, strict=False):
    draws = {"G_low": np.ravel(low[k]), "G_high": np.ravel(high[k]), "NUTS": nuts_draws[k]}
    lo = min(v.min() for v in draws.values())
    hi = max(v.max() for v in draws.values())
    bins = np.linspace(lo - 0.05 * (hi - lo) - 1e-3, hi + 0.05 * (hi - lo) + 1e-3, 40)
    for name, v in draws.items():
        ax.hist(v, bins=bins, density=True, histtype="step", label=name)
    ax.axvline(RUNAWAY_TRUE[k], color="k", ls="--", label="truth")
    ax.set_title(k)
axes[0].legend()
axes[-1].bar(range(len(spent)), list(spent.values()), color=["C0", "C1", "C2"])
axes[-1].set_xticks(range(len(spent)), ["G_low\n(low)", "refine\n(high)", "NUTS\n(high)"])
axes[-1].set_yscale("log")
axes[-1].set_title("simulations spent")
fig.tight_layout()
for k in NAMES:
    print(
        f"{k:4s} true {RUNAWAY_TRUE[k]:6.2f}  G_low {np.mean(low[k]):6.2f}"
        f"  G_high {np.mean(high[k]):6.2f}  NUTS {np.mean(nuts_draws[k]):6.2f}"
    )
plt.show()
