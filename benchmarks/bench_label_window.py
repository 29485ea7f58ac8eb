"""Upper bound on the gain of per-row kernel windows in labelling (quadratic example).

Run: ``python benchmarks/bench_label_window.py``

For a chunk of 256 identical observations ``y`` (the labelling's likelihood
pruning keeps ``support`` prior points), the 100-step ODE is integrated with the
plain denoiser and, at each step, the number of points per row that hold
``1 - 1e-6`` of that row's weight is counted (sorting every row: an oracle, not
a method). Their mean over the steps, against the support, bounds what any
per-row window or top-k truncation at small ``t`` could save.
"""

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_mfdiff import MFDiff
from numpyro_mfdiff._ode import ddim_step
from numpyro_mfdiff._score import _logits, support_order
from numpyro_mfdiff.examples import quadratic


def needed_points(x, alpha, beta, points, log_lik, tol=1e-6):
    """Mean over rows of the fewest points holding ``1 - tol`` of the row's weight."""
    w = jax.nn.softmax(_logits(x, alpha, beta, points, log_lik), -1)
    cs = jnp.cumsum(-jnp.sort(-w, axis=-1), -1)
    return float(jnp.mean(jnp.sum(cs < 1 - tol, -1) + 1)), w @ points


def main():
    inf = MFDiff(quadratic, num_simulations=20000, progress_bar=False)
    inf.simulate(jax.random.PRNGKey(0))
    pts = inf._points
    sched = inf.schedule
    grid = inf.grid
    alphas, betas = sched.alpha(grid), sched.beta(grid)
    lam = jnp.log(alphas) - jnp.log(betas)
    h = lam[1:] - lam[:-1]
    r = np.concatenate([[0.0], np.asarray(h[:-1] / h[1:])])
    tot_full = tot_win = 0
    for yv in (0.25, 1.0, 2.0, 3.5):
        y = jnp.full((256, 1), yv)
        ll = jax.vmap(inf._loglik)(y)
        order, count = support_order(ll, 1e-6)
        k = int(count)
        idx = order[:k]
        P = pts[idx]
        L = ll[:, idx]
        x = betas[0] * jax.random.normal(jax.random.PRNGKey(3), (256, 1))
        m_prev = jnp.zeros_like(x)
        need = []
        for i in range(len(grid) - 1):
            lg = _logits(x, alphas[i], betas[i], P, L)
            w = jax.nn.softmax(lg, -1)
            ws = -jnp.sort(-w, axis=-1)
            cs = jnp.cumsum(ws, -1)
            need.append(float(jnp.mean(jnp.sum(cs < 1 - 1e-6, -1) + 1)))
            m = w @ P
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
