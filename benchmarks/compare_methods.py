"""Time-to-posterior, amortisation and accuracy of MFDiff against NUTS and SMC.

Run: ``python benchmarks/compare_methods.py [--fast] [--markdown PATH]``.

For each model (the quadratic example, a 10-D conjugate Gaussian and a bimodal 2-D model) and
each method (``G_low`` = :meth:`MFDiff.get_samples`, ``ODE`` = :meth:`MFDiff.sample_ode`,
``NUTS`` = :func:`baselines.nuts` with 4 chains, ``SMC`` = :func:`baselines.smc`) the table
reports

* ``first [s]``: wall time to the first posterior. G_low: simulate + label + train + first draw;
  ODE: simulate (the same simulations, timed once) + first ``sample_ode``; NUTS/SMC: one full
  run including compilation.
* ``next obs [s]``: time for a posterior at a second, different observation. G_low: one
  ``get_samples`` call; ODE: one ``sample_ode`` call; NUTS/SMC: a second full run. The baseline
  functions jit a fresh closure per call, so their second run recompiles: that is the honest
  cost through the public API.
* ``samples/s``: samples returned for the second observation divided by ``next obs``.
* accuracy at the first observation, on ``n_acc`` samples of every method (the smallest
  sample count the baselines return): KL (nats) over 80 bins against the exact bin masses
  (quadratic); C2ST accuracy against exact samples (10-D Gaussian and bimodal 2-D, where the
  exact samples come from a brute-force 2000 x 2000 grid posterior; 0.5 is perfect). The
  ``exact`` row scores ``n_acc`` exact samples the same way: the floor set by the sample size.
* ``first / G_low`` and ``next / G_low``: the time columns relative to G_low's.

Every random choice uses a fixed ``jax.random`` key; timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from numpyro_mfdiff import MFDiff, baselines
from numpyro_mfdiff.examples import QUADRATIC_NOISE, quadratic, quadratic_bin_probs
from numpyro_mfdiff.metrics import c2st, flatten_samples, kl_divergence_hist

GAUSS_DIM = 10
GAUSS_SIGMA = 1.5
BIMODAL_NOISE = (0.1, 0.2)
BINS = 80
BOX = (-2.0, 2.0)


# ----------------------------------------------------------------------------- models


def gaussian10(x=None):
    """``theta ~ N(0, I_10)``, ``x ~ N(theta, sigma^2 I_10)`` (one observed site of shape (10,))."""
    theta = numpyro.sample("theta", dist.Normal(0.0, 1.0).expand([GAUSS_DIM]).to_event(1))
    numpyro.sample("x", dist.Normal(theta, GAUSS_SIGMA).to_event(1), obs=x)


def bimodal2d(y=None):
    """``theta ~ U(-2, 2)^2``, ``y ~ N((theta_1^2, theta_2), diag(0.1, 0.2)^2)``.

    The posterior has two modes, at ``theta_1 = +-sqrt(y_1)``.
    """
    theta = numpyro.sample("theta", dist.Uniform(-2.0, 2.0).expand([2]).to_event(1))
    loc = jnp.stack([theta[..., 0] ** 2, theta[..., 1]], axis=-1)
    numpyro.sample("y", dist.Normal(loc, jnp.asarray(BIMODAL_NOISE)).to_event(1), obs=y)


def _grid_posterior(logpdf: Callable, dim: int, sub: int):
    """Exact posterior on ``BOX^dim`` by brute force on a fine midpoint grid.

    Each of the ``BINS`` bins per axis holds ``sub`` grid cells per axis. Returns the bin masses
    (``(BINS,) * dim``) and a sampler ``(key, n) -> (n, dim)`` drawing exact samples (a grid
    cell by its mass, then uniformly within the cell).
    """
    m = BINS * sub
    h = (BOX[1] - BOX[0]) / m
    g = BOX[0] + h * (np.arange(m) + 0.5)
    mesh = np.meshgrid(*([g] * dim), indexing="ij")
    logp = logpdf(*mesh)
    p = np.exp(logp - logp.max())
    p /= p.sum()
    probs = p.reshape(*[d for _ in range(dim) for d in (BINS, sub)])
    probs = probs.sum(axis=tuple(range(1, 2 * dim, 2)))
    cdf = np.cumsum(p.ravel())

    def sample(key, n):
        k1, k2 = jax.random.split(key)
        u = np.asarray(jax.random.uniform(k1, (n,), dtype=jnp.float32), np.float64)
        cell = np.minimum(np.searchsorted(cdf, u * cdf[-1]), cdf.size - 1)
        idx = np.stack(np.unravel_index(cell, p.shape), axis=1)
        jitter = np.asarray(jax.random.uniform(k2, (n, dim), minval=-0.5, maxval=0.5))
        return g[idx] + h * jitter

    return probs, sample


@dataclass
class Problem:
    name: str
    model: Callable
    obs: dict  # first observation
    obs_next: dict  # the additional observation
    metric: str
    accuracy: Callable  # (n, d) samples -> float
    exact: Callable  # (key, n) -> (n, d) exact samples at ``obs``


def make_problems(n_acc: int) -> list[Problem]:
    problems = []

    # (1) quadratic at y = 1: exact bin masses from the package, exact samples from a fine grid
    y = 1.0
    probs = quadratic_bin_probs(y, bins=BINS)
    _, exact = _grid_posterior(lambda t: -0.5 * ((y - t**2) / QUADRATIC_NOISE) ** 2, 1, 500)

    def kl_1d(s, probs=probs):
        return kl_divergence_hist(probs, s, bins=BINS, range=BOX, p_is_probs=True)

    problems.append(
        Problem("quadratic (y=1)", quadratic, {"y": y}, {"y": 2.0}, "KL80", kl_1d, exact)
    )

    # (2) conjugate Gaussian in 10-D; x drawn from the model with a fixed key
    k_th, k_x, k_ref, k_c2st = jax.random.split(jax.random.PRNGKey(101), 4)
    th = jax.random.normal(k_th, (2, GAUSS_DIM))
    xs = np.asarray(th + GAUSS_SIGMA * jax.random.normal(k_x, (2, GAUSS_DIM)))
    s2 = GAUSS_SIGMA**2

    def exact_gauss(key, n, x=xs[0]):
        eps = jax.random.normal(key, (n, GAUSS_DIM))
        return np.asarray(x / (1 + s2) + np.sqrt(s2 / (1 + s2)) * eps)

    ref = exact_gauss(k_ref, n_acc)

    def c2st_gauss(s, ref=ref):
        return c2st(ref, s, k_c2st)

    problems.append(
        Problem(
            f"gaussian 10-D (sigma={GAUSS_SIGMA:g})",
            gaussian10,
            {"x": xs[0]},
            {"x": xs[1]},
            "C2ST",
            c2st_gauss,
            exact_gauss,
        )
    )

    # (3) bimodal 2-D: exact posterior on a 2000 x 2000 grid (uniform prior on the box). An
    # 80 x 80 histogram KL is dominated by its sample-size floor at n_acc <= 2000 (about 1 nat
    # for exact samples), so the score is C2ST against exact samples drawn from the grid.
    yb = np.array([1.0, 0.5])
    n1, n2 = BIMODAL_NOISE
    _, exact2 = _grid_posterior(
        lambda a, b: -0.5 * ((yb[0] - a**2) / n1) ** 2 - 0.5 * ((yb[1] - b) / n2) ** 2, 2, 25
    )
    k_ref2, k_c2st2 = jax.random.split(jax.random.PRNGKey(202))
    ref2 = exact2(k_ref2, n_acc)

    def c2st_2d(s, ref=ref2):
        return c2st(ref, s, k_c2st2)

    problems.append(
        Problem(
            "bimodal 2-D (y=(1, 0.5))",
            bimodal2d,
            {"y": yb},
            {"y": np.array([2.0, -0.5])},
            "C2ST",
            c2st_2d,
            exact2,
        )
    )
    return problems


# ----------------------------------------------------------------------------- methods


def _block(tree):
    return jax.block_until_ready(tree)


def _timed(fn):
    t0 = time.perf_counter()
    out = _block(fn())
    return out, time.perf_counter() - t0


def _subsample(x, n, key):
    x = np.asarray(flatten_samples(x))
    if x.shape[0] <= n:
        return x
    return x[np.sort(np.asarray(jax.random.choice(key, x.shape[0], (n,), replace=False)))]


def _baseline_row(method, run, prob, key, n_acc, k_sub, note):
    """Time ``run(model, observations, key)`` on the first and the next observation."""
    ka, kb = jax.random.split(key)
    first, t1 = _timed(lambda: run(prob.model, prob.obs, ka))
    second, t2 = _timed(lambda: run(prob.model, prob.obs_next, kb))
    return dict(
        method=method,
        first=t1,
        next=t2,
        n=int(flatten_samples(second).shape[0]),
        acc=prob.accuracy(_subsample(first, n_acc, k_sub)),
        note=note(first),
    )


def run_problem(prob: Problem, cfg: argparse.Namespace, n_acc: int, key) -> list[dict]:
    k_run, k1, k2, k3, k4, k_nuts, k_smc, k_sub, k_ex = jax.random.split(key, 9)
    rows = []
    n_post = cfg.num_post

    # -- MFDiff: one build serves G_low and the ODE sampler
    inf = MFDiff(
        prob.model,
        num_simulations=cfg.num_simulations,
        num_labels=cfg.num_labels,
        train_steps=cfg.train_steps,
        progress_bar=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the effective sample size")
        t0 = time.perf_counter()
        inf.run(k_run)
        s_first = _block(inf.get_samples(k1, prob.obs, n_post))
        t_first = time.perf_counter() - t0
        s_next, t_next = _timed(lambda: inf.get_samples(k2, prob.obs_next, n_post))
        timings = dict(inf.diagnostics["timings"])
        ess = (inf.ess(prob.obs), inf.ess(prob.obs_next))
        rows.append(
            dict(
                method="G_low",
                first=t_first,
                next=t_next,
                n=n_post,
                acc=prob.accuracy(_subsample(s_first, n_acc, k_sub)),
                note=", ".join(f"{k} {v:.1f}s" for k, v in timings.items()),
            )
        )
        o_first, t_o1 = _timed(lambda: inf.sample_ode(k3, prob.obs, n_post))
        o_next, t_o2 = _timed(lambda: inf.sample_ode(k4, prob.obs_next, n_post))
    rows.append(
        dict(
            method="ODE",
            first=timings["simulation"] + t_o1,
            next=t_o2,
            n=n_post,
            acc=prob.accuracy(_subsample(o_first, n_acc, k_sub)),
            note=f"first sample_ode {t_o1:.1f}s",
        )
    )

    # -- NUTS (4 chains) and adaptive tempered SMC; a second run recompiles (fresh closure per call)
    # log_likelihood=False: the timings are the samplers' alone, as before it existed
    nuts_kw = dict(
        num_chains=4,
        num_warmup=cfg.nuts_warmup,
        num_samples=cfg.nuts_samples,
        log_likelihood=False,
    )
    for method, run, key_m, note in (
        (
            "NUTS",
            partial(baselines.nuts, **nuts_kw),
            k_nuts,
            lambda d: f"{int(np.asarray(d.sample_stats['diverging']).sum())} divergences",
        ),
        (
            "SMC",
            partial(baselines.smc, num_particles=cfg.smc_particles, log_likelihood=False),
            k_smc,
            lambda d: f"{d.attrs['num_tempering_steps']} tempering steps",
        ),
    ):
        rows.append(_baseline_row(method, run, prob, key_m, n_acc, k_sub, note))

    rows.append(
        dict(
            method="exact",
            first=np.nan,
            next=np.nan,
            n=n_acc,
            acc=prob.accuracy(prob.exact(k_ex, n_acc)),
            note="floor of the metric at n_acc samples",
        )
    )
    base_first, base_next = rows[0]["first"], rows[0]["next"]
    for r in rows:
        r.update(
            model=prob.name,
            metric=prob.metric,
            acc=float(r["acc"]),
            rate=r["n"] / r["next"] if np.isfinite(r["next"]) else np.nan,
            r_first=r["first"] / base_first,
            r_next=r["next"] / base_next,
            ess=ess,
        )
    return rows


# ----------------------------------------------------------------------------- output

COLUMNS = [
    ("model", "model", "{}"),
    ("method", "method", "{}"),
    ("first [s]", "first", "{:.2f}"),
    ("next obs [s]", "next", "{:.3f}"),
    ("samples/s", "rate", "{:.3g}"),
    ("accuracy", "acc", "{:.4f}"),
    ("metric", "metric", "{}"),
    ("first / G_low", "r_first", "{:.3g}"),
    ("next / G_low", "r_next", "{:.3g}"),
    ("notes", "note", "{}"),
]


def _cells(r):
    out = []
    for _, k, fmt in COLUMNS:
        v = r[k]
        out.append("-" if isinstance(v, float) and not np.isfinite(v) else fmt.format(v))
    return out


def format_text(rows):
    table = [[c for c, _, _ in COLUMNS]] + [_cells(r) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = []
    for j, row in enumerate(table):
        lines.append(
            "  ".join(
                c.ljust(w) if i < 2 or i >= len(COLUMNS) - 1 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(rows):
    head = [c for c, _, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fast", action="store_true", help="small budgets for a quick check")
    p.add_argument("--markdown", metavar="PATH", help="also write the table as markdown")
    a = p.parse_args()
    if a.fast:
        cfg = dict(
            num_simulations=5_000,
            num_labels=5_000,
            train_steps=2_000,
            nuts_warmup=300,
            nuts_samples=300,
            smc_particles=500,
        )
    else:
        cfg = dict(
            num_simulations=20_000,
            num_labels=20_000,
            train_steps=10_000,
            nuts_warmup=1000,
            nuts_samples=1000,
            smc_particles=2000,
        )
    cfg["num_post"] = 4 * cfg["nuts_samples"]  # MFDiff draws as many samples as NUTS returns
    n_acc = min(cfg["num_post"], cfg["smc_particles"])
    cfg = argparse.Namespace(**cfg)

    header = [
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"processor: {platform.processor() or platform.machine()!r}, "
        f"os.cpu_count(): {os.cpu_count()}",
        f"jax {jax.__version__}, devices: {jax.devices()}",
        f"budgets ({'--fast' if a.fast else 'default'}): MFDiff N={cfg.num_simulations}, "
        f"labels={cfg.num_labels}, train steps={cfg.train_steps}, samples per observation="
        f"{cfg.num_post}; NUTS 4 chains x ({cfg.nuts_warmup} warmup + {cfg.nuts_samples} "
        f"draws); SMC {cfg.smc_particles} particles; accuracy on n_acc={n_acc} samples",
    ]
    print("\n".join(header), flush=True)

    rows, ess_lines = [], []
    for i, prob in enumerate(make_problems(n_acc)):
        t0 = time.perf_counter()
        r = run_problem(prob, cfg, n_acc, jax.random.PRNGKey(i))
        ess = r[0]["ess"]
        line = (
            f"{prob.name}: prior-simulation ESS {ess[0]:.0f} (first obs), "
            f"{ess[1]:.0f} (next obs) of N={cfg.num_simulations}"
        )
        print(f"{line}; model done in {time.perf_counter() - t0:.0f}s", flush=True)
        ess_lines.append(line)
        rows += r

    print()
    print(format_text(rows))
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(
                "\n\n".join(["  \n".join(header), "  \n".join(ess_lines), format_markdown(rows)])
                + "\n"
            )
        print(f"\nmarkdown table written to {a.markdown}")


if __name__ == "__main__":
    main()
