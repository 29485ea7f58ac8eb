"""Upper bound on the gain of per-row kernel windows in labelling (quadratic example).

Run: ``python benchmarks/bench_label_window.py`` (``--supports``: the likelihood
supports of the real labelling chunks instead)

For a chunk of 256 identical observations ``y`` (the labelling's likelihood
pruning keeps ``support`` prior points), the 100-step ODE is integrated with the
plain denoiser and, at each step, the number of points per row that hold
``1 - 1e-6`` of that row's weight is counted (sorting every row: an oracle, not
a method). Their mean over the steps, against the support, bounds what any
per-row window or top-k truncation at small ``t`` could save.

``--supports`` bounds likelihood pruning instead: for every 8th chunk of 256
triples of the labelling workload (20,000 prior predictive observations, sorted
as labelling sorts them), the points the chunk weighs (:func:`support_order`'s
count at ``tol``) against the fewest points per row holding ``1 - tol`` of that
row's likelihood mass (every row sorted) and their union over the chunk.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff.diffusion._ode import ddim_step
from numpyro_mfdiff.diffusion._score import _logits, support_order
from numpyro_mfdiff.examples import quadratic


def needed_points(x, alpha, beta, points, log_lik, tol=1e-6):
    """Mean over rows of the fewest points holding ``1 - tol`` of the row's weight."""
    w = jax.nn.softmax(_logits(x, alpha, beta, points, log_lik), -1)
    cs = jnp.cumsum(-jnp.sort(-w, axis=-1), -1)
    return float(jnp.mean(jnp.sum(cs < 1 - tol, -1) + 1)), w @ points


def supports(inf, tols=(1e-6, 1e-4, 1e-3)):
    """Print chunk supports against per-row likelihood supports (``--supports``)."""
    valid = np.flatnonzero(inf.simulations.valid)
    idx = np.asarray(jax.random.choice(jax.random.PRNGKey(1), valid, (20_000,)))
    y = inf.simulations.y[idx]
    y = y[np.argsort(y[:, 0], kind="stable")]
    loglik = jax.jit(jax.vmap(inf.bank.log_likelihood))
    n = inf.bank.points.shape[0]
    print(f"N = {n}; points weighed: support_order count / mean per row / union over the chunk")
    print(f"{'y range of the chunk':<22}" + "".join(f"{'tol ' + f'{t:g}':>22}" for t in tols))
    for s in range(0, y.shape[0], 256 * 8):
        ll = loglik(jnp.asarray(y[s : s + 256]))
        w = np.asarray(jax.nn.softmax(ll, axis=-1), np.float64)
        order = np.argsort(-w, axis=-1)
        cs = np.cumsum(np.take_along_axis(w, order, -1), -1)
        row = f"{y[s, 0]:>9.3f} .. {y[min(s + 255, y.shape[0] - 1), 0]:<9.3f}"
        for tol in tols:
            count = int(support_order(ll, tol)[1])
            k = np.sum(cs < 1 - tol, -1) + 1
            union = np.zeros(n, bool)
            for r in range(w.shape[0]):
                union[order[r, : k[r]]] = True
            row += f"{f'{count}/{k.mean():.0f}/{union.sum()}':>22}"
        print(row, flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--supports", action="store_true", help="likelihood supports of the chunks")
    a = p.parse_args()
    inf = MFDiff(quadratic, num_simulations=20000, progress_bar=False)
    inf.simulate(jax.random.PRNGKey(0))
    if a.supports:
        return supports(inf)
    pts = inf.bank.points
    sched = inf.schedule
    grid = inf.grid
    alphas, betas = sched.alpha(grid), sched.beta(grid)
    lam = jnp.log(alphas) - jnp.log(betas)
    h = lam[1:] - lam[:-1]
    r = np.concatenate([[0.0], np.asarray(h[:-1] / h[1:])])
    tot_full = tot_win = 0
    for yv in (0.25, 1.0, 2.0, 3.5):
        y = jnp.full((256, 1), yv)
        ll = jax.vmap(inf.bank.log_likelihood)(y)
        order, count = support_order(ll, 1e-6)
        k = int(count)
        idx = order[:k]
        P = pts[idx]
        L = ll[:, idx]
        x = betas[0] * jax.random.normal(jax.random.PRNGKey(3), (256, 1))
        m_prev = jnp.zeros_like(x)
        need = []
        for i in range(len(grid) - 1):
            n_row, m = needed_points(x, alphas[i], betas[i], P, L)
            need.append(n_row)
            c = 0.5 / r[i] if r[i] > 0 else 0.0
            d = (1 + c) * m - c * m_prev
            x, m_prev = ddim_step(x, d, alphas[i], betas[i], alphas[i + 1], betas[i + 1]), m
        need = np.array(need)
        tot_full += k * len(need)
        tot_win += need.sum()
        print(
            f"y={yv}: support {k}; points per row holding 1-1e-6 at steps 0/25/50/75/90/99: "
            + "/".join(f"{need[j]:.0f}" for j in (0, 25, 50, 75, 90, 99))
            + f"; mean over steps {need.mean():.0f} ({need.mean() / k:.0%})",
            flush=True,
        )
    print(f"ideal per-row windows weigh {tot_win / tot_full:.0%} of the chunk supports' weights")


if __name__ == "__main__":
    main()
