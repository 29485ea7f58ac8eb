"""sbibm tasks and two NumPyro models: C2ST of G_low, the refined sampler and NUTS, side by side.

Run: ``python benchmarks/bench_sbi.py`` (all seven tasks, observations 1-10, 10,000 samples;
long: run it on a GPU). ``--fast`` keeps the simulation budget but uses observation 1
only, 2,000 samples and a shorter NUTS reference; ``--tasks gaussian_linear,slcp`` picks
tasks, ``--markdown`` prints the table as markdown at the end.

Samplers, on the same NumPyro model and observation:

- ``G_low``: ``MFDiff(model, num_simulations=N).run(key)`` once per task (the build), then
  ``get_samples`` for each observation (``--num-simulations``, default 10,000).
- refined: ``refine(key, obs, max_simulations=B)`` on the same object, one call per
  observation, then ``get_samples`` (``G_high``); ``--refine-simulations`` (default 10,000)
  is the budget ``B``, the table reports what ``diagnostics["refinements"]`` says was spent.
- NUTS: ``baselines.nuts`` (BlackJAX, 4 chains, 1,000 warm-up steps, ``n / 4`` draws each).

Accuracy: C2ST (``metrics.c2st``, 0.5 = indistinguishable) of ``n`` draws against ``n``
reference draws (``--num-samples``, 10,000 as in sbibm), on the latent sites flattened in
sorted site order (``metrics.flatten_samples``), averaged over the observations (min-max).

Tasks (each a plain NumPyro model in this file):

- sbibm ``gaussian_linear``, ``gaussian_linear_uniform``, ``gaussian_mixture``, ``slcp``,
  ``bernoulli_glm`` (Lueckmann et al. 2021; the models follow ``sbibm/tasks/<task>/task.py``
  of sbibm 1.1.0; ``bernoulli_glm`` on its 100 raw binary outcomes).
  Observations and reference posterior samples are read straight out of the sbibm 1.1.0
  wheel (``pip download sbibm==1.1.0 --no-deps`` into ``--sbibm-dir``, default
  ``~/.cache/numpyro_mfdiff/sbibm``; sbibm itself and torch are not installed).
- ``eight_schools``: centred eight schools (10 latent dimensions); reference: a long NUTS
  run (4 x 10,000 draws) on the non-centred model, mapped to ``theta = mu + tau * eta``.
- ``regression``: 50 points, 5 coefficients, ``y ~ N(X beta, 0.5)``; reference: the exact
  conjugate posterior.

The NUTS references are cached in ``--sbibm-dir`` too. The last column gives published
C2STs on the same tasks (sbibm paper; Simformer, Gloeckler et al. 2024; GenSBI).
"""

import argparse
import bz2
import io
import subprocess
import sys
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from _common import cached_draws, subsample

from numpyro_mfdiff import MFDiff, baselines
from numpyro_mfdiff.metrics import c2st, flatten_samples

SBIBM = "sbibm==1.1.0"
WHEEL = "sbibm-1.1.0-py2.py3-none-any.whl"
SBIBM_TASKS = (
    "gaussian_linear",
    "gaussian_linear_uniform",
    "gaussian_mixture",
    "slcp",
    "bernoulli_glm",
)
ALL_TASKS = SBIBM_TASKS + ("eight_schools", "regression")
PUBLISHED = {
    "gaussian_linear": "NPE@1e4 0.55, best sequential@1e5 0.51, Simformer/GenSBI@3e4 0.50",
    "slcp": "NPE@1e4 0.90, SNLE@1e5 0.58, Simformer@3e4 0.57",
    "gaussian_mixture": "best sequential@1e5 0.54, Simformer@3e4 0.50",
    "bernoulli_glm": "best published@1e4 0.553 (issue 26)",
}

# ----------------------------------------------------------------------------- models


def gaussian_linear(x=None):
    """sbibm ``gaussian_linear``: prior and noise covariances 0.1 I (sd sqrt(0.1)), 10-D."""
    theta = numpyro.sample("theta", dist.Normal(jnp.zeros(10), np.sqrt(0.1)).to_event(1))
    numpyro.sample("x", dist.Normal(theta, np.sqrt(0.1)).to_event(1), obs=x)


def gaussian_linear_uniform(x=None):
    """sbibm ``gaussian_linear_uniform``: theta ~ U(-1, 1)^10, x ~ N(theta, 0.1 I)."""
    theta = numpyro.sample("theta", dist.Uniform(-jnp.ones(10), jnp.ones(10)).to_event(1))
    numpyro.sample("x", dist.Normal(theta, np.sqrt(0.1)).to_event(1), obs=x)


def gaussian_mixture(x=None):
    """sbibm ``gaussian_mixture``: theta ~ U(-10, 10)^2, x ~ 0.5 N(theta, I) + 0.5 N(theta,
    0.01 I): one component for both coordinates."""
    theta = numpyro.sample("theta", dist.Uniform(-10 * jnp.ones(2), 10 * jnp.ones(2)).to_event(1))
    scales = jnp.array([1.0, 0.1])[:, None]
    components = dist.Normal(jnp.broadcast_to(theta, (2, 2)), scales).to_event(1)
    mixture = dist.MixtureSameFamily(dist.Categorical(probs=jnp.array([0.5, 0.5])), components)
    numpyro.sample("x", mixture, obs=x)


SLCP_EPS = 1e-6  # sbibm adds it to the diagonal of the covariance "to ensure PSD"


def slcp(x=None):
    """sbibm ``slcp``: theta ~ U(-3, 3)^5, 4 iid draws of N(m, S), ``m = theta[:2]``,
    ``s1 = theta[2]^2``, ``s2 = theta[3]^2``, ``rho = tanh(theta[4])``,
    ``S = [[s1^2, rho s1 s2], [rho s1 s2, s2^2]] + 1e-6 I``.

    ``x`` has shape (4, 2); row-major it is sbibm's 8 values (x1_1, x1_2, x2_1, ...). The
    covariance enters through its Cholesky factor, written out (same distribution, no
    float32 Cholesky failures when ``rho`` is near +-1)."""
    theta = numpyro.sample("theta", dist.Uniform(-3 * jnp.ones(5), 3 * jnp.ones(5)).to_event(1))
    s1, s2, rho = theta[2] ** 2, theta[3] ** 2, jnp.tanh(theta[4])
    a = s1**2 + SLCP_EPS  # S = [[a, b], [b, c]]
    b = rho * s1 * s2
    l11 = jnp.sqrt(a)
    l22 = jnp.sqrt(s2**2 * (1 - rho**2 * s1**2 / a) + SLCP_EPS)  # sqrt(c - b^2 / a)
    tril = jnp.array([[l11, 0.0], [b / l11, l22]])
    data = dist.MultivariateNormal(theta[:2], scale_tril=tril).expand([4]).to_event(1)
    numpyro.sample("x", data, obs=x)


# sbibm ``bernoulli_glm``: its design matrix (``files/design_matrix.pt``, a torch file) is
# an intercept column and 9 lags of a white-noise stimulus drawn by numpy's legacy
# generator with seed 42 (the task's ``stimulus["seed"]``); rebuilt here without torch
# (checked equal to the file's, 2026-12-06)
_GLM_I = np.random.RandomState(42).randn(100)
GLM_X = np.zeros((100, 10), np.float32)
GLM_X[:, 0] = 1.0
for _k in range(9):
    GLM_X[_k:, 1 + _k] = _GLM_I[: 100 - _k]
_D = np.eye(9) - np.eye(9, k=-1)
_F = _D @ _D + np.diag(np.sqrt(np.arange(9) / 9))
GLM_PRECISION = np.zeros((10, 10))
GLM_PRECISION[0, 0] = 0.5
GLM_PRECISION[1:, 1:] = _F.T @ _F


def bernoulli_glm(x=None):
    """sbibm ``bernoulli_glm`` written on its raw data (``observation_raw.csv``: 100 binary
    outcomes), not on sbibm's 10 summaries: the same posterior, since the summaries
    (spike count, spike-triggered average) are sufficient for the GLM. theta ~ N(0, B)
    with sbibm's precision (second differences of the filter), x_t ~ Bernoulli(logits =
    (X theta)_t)."""
    theta = numpyro.sample(
        "theta", dist.MultivariateNormal(jnp.zeros(10), precision_matrix=GLM_PRECISION)
    )
    numpyro.sample("x", dist.Bernoulli(logits=jnp.asarray(GLM_X) @ theta).to_event(1), obs=x)


SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(y=None):
    """Centred eight schools: mu ~ N(0, 5), tau ~ HalfCauchy(5), theta_j ~ N(mu, tau)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", 8):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, SCHOOLS_SIGMA), obs=y)


def eight_schools_noncentred(y=None):
    """The same posterior, non-centred (NUTS reference): theta = mu + tau * eta."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", 8):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu + tau * eta, SCHOOLS_SIGMA), obs=y)


REG_X = np.random.default_rng(0).normal(size=(50, 5))
REG_SIGMA = 0.5
REG_BETA = np.random.default_rng(1).normal(size=5)
REG_Y = REG_X @ REG_BETA + REG_SIGMA * np.random.default_rng(2).normal(size=50)


def regression(y=None):
    """Linear regression, 50 points (fixed design), beta ~ N(0, I_5), y ~ N(X beta, 0.5^2)."""
    beta = numpyro.sample("beta", dist.Normal(jnp.zeros(5), 1.0).to_event(1))
    numpyro.sample("y", dist.Normal(jnp.asarray(REG_X) @ beta, REG_SIGMA).to_event(1), obs=y)


def regression_posterior(n, seed):
    """``n`` exact draws of the conjugate posterior of ``regression`` given ``REG_Y``."""
    prec = np.eye(5) + REG_X.T @ REG_X / REG_SIGMA**2
    cov = np.linalg.inv(prec)
    mean = cov @ REG_X.T @ REG_Y / REG_SIGMA**2
    return np.random.default_rng(seed).multivariate_normal(mean, cov, size=n)


MODELS = {
    "gaussian_linear": (gaussian_linear, "x", (10,)),
    "gaussian_linear_uniform": (gaussian_linear_uniform, "x", (10,)),
    "gaussian_mixture": (gaussian_mixture, "x", (2,)),
    "slcp": (slcp, "x", (4, 2)),
    "bernoulli_glm": (bernoulli_glm, "x", (100,)),
    "eight_schools": (eight_schools, "y", (8,)),
    "regression": (regression, "y", (50,)),
}

# ----------------------------------------------------------------------------- references


def sbibm_wheel(cache):
    """The sbibm wheel in ``cache``, downloaded (no dependencies) if it is not there."""
    path = cache / WHEEL
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    print(f"downloading {SBIBM} (wheel only, no dependencies) into {cache}", flush=True)
    cmd = [sys.executable, "-m", "pip", "download", SBIBM, "--no-deps", "-d", str(cache)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or not path.exists():
        sys.exit(
            f"could not download {SBIBM}: the sbibm tasks need its observations and reference "
            f"posterior samples.\n  command: {' '.join(cmd)}\n  {res.stderr.strip()[-500:]}\n"
            f"Put {WHEEL} into {cache} (or pass --sbibm-dir), or leave the sbibm tasks out "
            "with --tasks eight_schools,regression."
        )
    return path


def sbibm_files(wheel, task, num):
    """(observation (D_x,), reference posterior samples (10000, D)) of ``task``, observation
    ``num``, read from the wheel."""
    base = f"sbibm/tasks/{task}/files/num_observation_{num}/"
    with zipfile.ZipFile(wheel) as z:
        raw = "_raw" if task == "bernoulli_glm" else ""  # the model is on the raw data
        obs = z.read(base + f"observation{raw}.csv").decode()
        ref = bz2.decompress(z.read(base + "reference_posterior_samples.csv.bz2")).decode()

    def csv(text):
        return np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, ndmin=2)

    return csv(obs)[0], csv(ref)


def nuts_reference(cache, model, obs, sites, chains, draws, seed, transform=None):
    """Flat (chains * draws, D) NUTS reference of ``model | obs``, cached in ``cache``.

    Key ``fold_in(PRNGKey(seed), 1)``, unlike the NUTS row's; ``transform`` maps the
    posterior dict (site -> (n, ...)) to the compared sites."""
    path = cache / f"nuts_reference_{model.__name__}_{chains}x{draws}_seed{seed}.npz"

    def compute():
        t0 = time.perf_counter()
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
        idata = baselines.nuts(
            model,
            obs,
            key,
            num_chains=chains,
            num_warmup=1000,
            num_samples=draws,
            log_likelihood=False,
        )
        post = {k: np.asarray(idata.posterior[k]) for k in idata.posterior.data_vars}
        post = {k: v.reshape(chains * draws, *v.shape[2:]) for k, v in post.items()}
        if transform is not None:
            post = transform(post)
        div = int(idata.sample_stats["diverging"].sum())
        print(
            f"  NUTS reference {model.__name__} {chains}x{draws}: "
            f"{time.perf_counter() - t0:.0f}s, {div} divergences; cached in {path}",
            flush=True,
        )
        return flatten_samples({k: post[k] for k in sites})

    return cached_draws(path, compute)


def noncentred_to_centred(post):
    return dict(post, theta=post["mu"][:, None] + post["tau"][:, None] * post["eta"])


def observations(task, a, n):
    """[(label, observation dict, reference (>= n, D))] of ``task``."""
    model, site, shape = MODELS[task]
    if task in SBIBM_TASKS:
        wheel = sbibm_wheel(a.sbibm_dir)
        out = []
        for num in a.observations:
            x, ref = sbibm_files(wheel, task, num)
            out.append((str(num), {site: x.reshape(shape).astype(np.float32)}, ref))
        return out
    if task == "regression":
        return [("1", {"y": REG_Y.astype(np.float32)}, regression_posterior(n, a.seed))]
    obs = {"y": SCHOOLS_Y.astype(np.float32)}
    draws = 2500 if a.fast else 10_000
    ref = nuts_reference(
        a.sbibm_dir,
        eight_schools_noncentred,
        obs,
        ["mu", "tau", "theta"],
        4,
        draws,
        a.seed,
        noncentred_to_centred,
    )
    return [("1", obs, ref)]


# ----------------------------------------------------------------------------- one task


def flat(samples, sites):
    """Dict of samples (sample axis first) -> (n, D), the latent sites in sorted order."""
    return np.asarray(flatten_samples({k: samples[k] for k in sites}))


def nuts_flat(idata, sites):
    post = idata.posterior
    return flat({k: np.asarray(post[k]).reshape(-1, *post[k].shape[2:]) for k in sites}, sites)


def run_task(task, a):
    """C2ST per observation and timings of one task; prints a line per observation."""
    model, site, _ = MODELS[task]
    key = jax.random.fold_in(jax.random.PRNGKey(a.seed), zlib.crc32(task.encode()))
    k_build, k_obs = jax.random.split(key)
    n = a.num_samples
    obs_list = observations(task, a, n)
    n_ref = min(len(ref) for *_, ref in obs_list)
    if n > n_ref:
        n = n_ref
        print(f"  {task}: {n} reference samples per observation, using n = {n}", flush=True)
    res = dict(task=task, n_obs=len(obs_list), low=[], high=[], nuts=[], sims=[])
    res.update(t_refine=[], t_nuts=[])
    build = dict(num_labels=a.num_labels, train_steps=a.train_steps)
    build = {k: v for k, v in build.items() if v is not None}  # None: MFDiff's default
    inf = MFDiff(
        model, num_simulations=a.num_simulations, observed_sites=[site], progress_bar=False, **build
    )
    t0 = time.perf_counter()
    inf.run(k_build)
    res["t_build"] = time.perf_counter() - t0
    for label, obs, ref in obs_list:
        k = jax.random.fold_in(k_obs, int(label))
        k_low, k_refine, k_high, k_nuts, k_c2st = jax.random.split(k, 5)
        ref = subsample(ref, n)
        line = []
        low = inf.get_samples(k_low, obs, num_samples=n)
        sites = sorted(low)
        low = flat(low, sites)
        res["low"].append(float(c2st(low, ref, k_c2st)))
        line.append(f"G_low {res['low'][-1]:.3f}")
        if not a.no_refine:
            before = set(inf.diagnostics.get("refinements", {}))
            t0 = time.perf_counter()
            inf.refine(k_refine, obs, max_simulations=a.refine_simulations)
            res["t_refine"].append(time.perf_counter() - t0)
            (new,) = set(inf.diagnostics["refinements"]) - before
            res["sims"].append(inf.diagnostics["refinements"][new]["num_high_fidelity_simulations"])
            high = flat(inf.get_samples(k_high, obs, num_samples=n), sites)
            res["high"].append(float(c2st(high, ref, k_c2st)))
            line.append(
                f"refined {res['high'][-1]:.3f} ({res['sims'][-1]} simulations, "
                f"{res['t_refine'][-1]:.1f}s)"
            )
        if not a.no_nuts:
            t0 = time.perf_counter()
            idata = baselines.nuts(
                model,
                obs,
                k_nuts,
                num_chains=4,
                num_warmup=a.nuts_warmup,
                num_samples=n // 4,
                log_likelihood=False,  # timed: the sampler alone
            )
            res["t_nuts"].append(time.perf_counter() - t0)
            draws = nuts_flat(idata, sites)
            res["nuts"].append(float(c2st(draws, ref[: len(draws)], k_c2st)))
            div = int(idata.sample_stats["diverging"].sum())
            line.append(f"NUTS {res['nuts'][-1]:.3f} ({div} divergences, {res['t_nuts'][-1]:.1f}s)")
        print(f"  {task} obs {label}: " + ", ".join(line), flush=True)
    return res


# ----------------------------------------------------------------------------- table

COLUMNS = (
    "task",
    "#obs",
    "G_low C2ST",
    "refined C2ST",
    "NUTS C2ST",
    "simulations (prior + refine)",
    "G_low build s",
    "refine s/obs",
    "NUTS s/obs",
    "published",
)
WIDTHS = (25, 6, 21, 21, 21, 30, 15, 14, 12, 0)


def c2st_cell(v):
    if not v:
        return "-"
    if len(v) == 1:
        return f"{v[0]:.3f}"
    return f"{np.mean(v):.3f} ({min(v):.2f}-{max(v):.2f})"


def cells(r, n_sim):
    sims = r["sims"]
    refine = (
        "0" if not sims else str(sims[0]) if min(sims) == max(sims) else f"{min(sims)}-{max(sims)}"
    )
    return (
        r["task"],
        str(r["n_obs"]),
        c2st_cell(r["low"]),
        c2st_cell(r["high"]),
        c2st_cell(r["nuts"]),
        f"{n_sim} + {refine}",
        f"{r['t_build']:.1f}",
        f"{np.mean(r['t_refine']):.1f}" if r["t_refine"] else "-",
        f"{np.mean(r['t_nuts']):.1f}" if r["t_nuts"] else "-",
        PUBLISHED.get(r["task"], "-"),
    )


def text_row(values):
    return "".join(f"{v:<{w}}" if w else v for v, w in zip(values, WIDTHS, strict=True))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default=",".join(ALL_TASKS), help="comma list")
    p.add_argument("--observations", default="1-10", help="sbibm observations: 1-10 or 1,3,5")
    p.add_argument("--fast", action="store_true", help="observation 1, 2,000 samples")
    p.add_argument("--num-simulations", type=int, default=10_000, help="prior simulations")
    p.add_argument("--refine-simulations", type=int, default=10_000, help="refine budget")
    p.add_argument("--num-samples", type=int, default=None, help="draws per C2ST side")
    p.add_argument("--nuts-warmup", type=int, default=1000)
    p.add_argument("--num-labels", type=int, default=None, help="G_low (MFDiff's default)")
    p.add_argument("--train-steps", type=int, default=None, help="G_low (MFDiff's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-nuts", action="store_true")
    p.add_argument("--no-refine", action="store_true")
    p.add_argument("--markdown", action="store_true", help="also print a markdown table")
    p.add_argument(
        "--sbibm-dir",
        type=Path,
        default=Path.home() / ".cache" / "numpyro_mfdiff" / "sbibm",
        help="cache of the sbibm wheel and of the NUTS references",
    )
    a = p.parse_args()
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in ALL_TASKS]
    if unknown:
        p.error(f"unknown tasks {unknown}; choose from {', '.join(ALL_TASKS)}")
    if "-" in a.observations:
        lo, hi = a.observations.split("-")
        a.observations = list(range(int(lo), int(hi) + 1))
    else:
        a.observations = [int(s) for s in a.observations.split(",")]
    if a.fast:
        a.observations = a.observations[:1]
    if a.num_samples is None:
        a.num_samples = 2000 if a.fast else 10_000
    a.sbibm_dir = a.sbibm_dir.expanduser()

    print(
        f"C2ST (0.5 = indistinguishable) of {a.num_samples} draws against {a.num_samples} "
        f"reference draws; G_low {a.num_simulations} prior simulations, refine budget "
        f"{a.refine_simulations} per observation; NUTS 4 chains x ({a.nuts_warmup} + "
        f"{a.num_samples // 4}); devices={jax.devices()}",
        flush=True,
    )
    rows = []
    header = text_row(COLUMNS)
    for task in tasks:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small-ESS warnings: the C2ST columns show it
            r = run_task(task, a)
        rows.append(cells(r, a.num_simulations))
        print(header, text_row(rows[-1]), sep="\n", flush=True)
    print("\n" + header)
    for row in rows:
        print(text_row(row))
    if a.markdown:
        print("\n| " + " | ".join(COLUMNS) + " |")
        print("|" + "---|" * len(COLUMNS))
        for row in rows:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
