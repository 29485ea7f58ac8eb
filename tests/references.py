"""Reference posteriors too slow to recompute at every run, stored in ``tests/references/``.

Each entry is NUTS run on a model of the suite with the call it was made by (below), kept
with what it was computed from: the observation, and the model's log joint density at a
few of the draws. Loading checks both against the model as it is now, so a changed model,
example or observation fails with the command that regenerates the file instead of
passing against a stale posterior:

    python tests/references.py [name ...]      # all entries by default; minutes
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.util import log_density

DIR = Path(__file__).resolve().parent / "references"
_NUM_CHECKS = 8  # draws whose log density is stored and re-evaluated at load


def runaway():
    """The runaway-electron RK4 model at the observation of ``test_runaway.py``:
    (model, args, observed data, site names in column order)."""
    from numpyro_mfdiff.examples import (
        RUNAWAY_NOISE,
        RUNAWAY_TIMES,
        RUNAWAY_TRUE,
        runaway_high,
        runaway_solve,
    )

    names = ("E_f", "n_e", "T_f")
    f = runaway_solve(tuple(RUNAWAY_TRUE[k] for k in names))
    noise = jax.random.normal(jax.random.PRNGKey(1), (len(RUNAWAY_TIMES),))
    y = np.asarray(jnp.log10(f) + RUNAWAY_NOISE * noise)
    return runaway_high, (), {"y": y}, names


def _runaway_nuts(model, args, obs):
    from numpyro_mfdiff.baselines import nuts

    idata = nuts(model, obs, jax.random.PRNGKey(6), num_chains=2, num_warmup=200, num_samples=500)
    post = {k: np.asarray(v) for k, v in idata.posterior.data_vars.items()}
    return {k: v.reshape((-1, *v.shape[2:])) for k, v in post.items()}  # chains merged


def varying_intercepts():
    """``models.varying_intercepts``, 16 groups of 5 points (centred as written)."""
    from models import varying_intercepts, varying_intercepts_data

    group, y = varying_intercepts_data()
    return varying_intercepts, (group,), {"y": y}, ("mu", "tau", "alpha")


def _vi_nuts(model, args, obs):
    """NUTS on the model non-centred (``LocScaleReparam``), 2 x 2,000 after 1,000 warm-up."""
    from numpyro.handlers import reparam
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.reparam import LocScaleReparam

    nc = reparam(model, config={"alpha": LocScaleReparam(0)})
    mcmc = MCMC(
        NUTS(nc),
        num_warmup=1000,
        num_samples=2000,
        num_chains=2,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(0), *args, **obs)
    return {k: np.asarray(v) for k, v in mcmc.get_samples().items() if k != "alpha_decentered"}


# name -> (problem, sampler): a sampler returns the problem model's latent sites
# {site: (num_draws, ...)}: the log density is checked at those
ENTRIES = {
    "runaway_nuts": (runaway, _runaway_nuts),
    "varying_intercepts_nuts": (varying_intercepts, _vi_nuts),
}


def _log_joint(model, args, obs, draws):
    """The log joint density (_NUM_CHECKS,) at the first draws: one compiled, vmapped call."""
    params = {k: jnp.asarray(v[:_NUM_CHECKS]) for k, v in draws.items()}
    one = lambda p: log_density(model, args, obs, p)[0]  # noqa: E731
    return np.asarray(jax.jit(jax.vmap(one))(params), dtype=float)


def load(name):
    """The stored draws of entry ``name`` as an array (num_draws, D), columns in the
    problem's site order, after checking that the observation and the model's log
    density at stored draws are still those the draws were made from."""
    problem, _ = ENTRIES[name]
    model, args, obs, names = problem()
    path = DIR / f"{name}.npz"
    regenerate = f"regenerate it: python tests/references.py {name}"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {regenerate}")
    with np.load(path) as stored:
        f = {k: stored[k] for k in stored.files}
    for k, v in obs.items():
        if not np.allclose(f[f"obs_{k}"], v, rtol=1e-6, atol=0):
            raise AssertionError(f"{path.name}: the observation {k!r} changed; {regenerate}")
    draws = {k[5:]: v for k, v in f.items() if k.startswith("draw_")}
    now = _log_joint(model, args, obs, draws)
    if not np.allclose(now, f["log_joint"], rtol=1e-4, atol=1e-3):
        raise AssertionError(
            f"{path.name}: the model's log density at the stored draws changed "
            f"({np.round(now, 3)} against {np.round(f['log_joint'], 3)}); {regenerate}"
        )
    return np.concatenate([draws[k].reshape(len(draws[k]), -1) for k in names], axis=1)


def make(name):
    """Run entry ``name``'s sampler and store its draws with what they depend on."""
    problem, sampler = ENTRIES[name]
    model, args, obs, names = problem()
    draws = sampler(model, args, obs)
    log_joint = _log_joint(model, args, obs, draws)
    DIR.mkdir(exist_ok=True)
    np.savez_compressed(
        DIR / f"{name}.npz",
        **{f"obs_{k}": np.asarray(v) for k, v in obs.items()},
        **{f"draw_{k}": np.asarray(v) for k, v in draws.items()},
        log_joint=np.asarray(log_joint),
    )


if __name__ == "__main__":
    for entry in sys.argv[1:] or list(ENTRIES):
        make(entry)
        print(entry, "->", DIR / f"{entry}.npz")
