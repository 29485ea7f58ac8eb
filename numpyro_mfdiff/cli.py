"""Command line: ``numpyro-mfdiff run quadratic`` runs the paper's first example end to end."""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

__all__ = ["main"]


def _quadratic(args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import MFDiff
    from .examples import quadratic, quadratic_bin_probs
    from .metrics import kl_divergence_hist

    ys = list(args.y)
    inf = MFDiff(
        quadratic,
        num_simulations=args.num_simulations,
        num_labels=args.num_labels,
        train_steps=args.train_steps,
        progress_bar=not args.quiet,
    )
    t0 = time.perf_counter()
    inf.run(jax.random.PRNGKey(args.seed))
    build = time.perf_counter() - t0
    key = jax.random.PRNGKey(args.seed + 1)
    draw = inf.get_samples(key, {"y": np.array(ys)}, args.num_samples)["theta"]
    jax.block_until_ready(draw)

    print(
        "quadratic example: y = theta^2 + N(0, 0.1^2), theta ~ U(-2, 2), "
        f"N = {args.num_simulations}"
    )
    timings = inf.diagnostics["timings"]
    print(
        "build time: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        + f" (total {build:.1f} s)"
    )
    n_time = args.timing_samples
    if n_time:  # drawn twice: the second call times the compiled sampler
        jax.block_until_ready(inf.get_samples(key, {"y": 1.0}, n_time)["theta"])
        t0 = time.perf_counter()
        jax.block_until_ready(inf.get_samples(key, {"y": 1.0}, n_time)["theta"])
        print(f"{n_time:,} samples from G_low: {time.perf_counter() - t0:.3f} s (compiled)")
    print(f"{'y':>6} {'ESS':>8} {'KL G_low':>10} {'KL ODE':>10}")
    edges = (-2.0, 2.0)
    fig, axes = plt.subplots(1, len(ys), figsize=(4 * len(ys), 3.2), squeeze=False)
    for i, y in enumerate(ys):
        probs = quadratic_bin_probs(y, 80)
        kl_g = float(kl_divergence_hist(probs, draw[i], bins=80, range=edges, p_is_probs=True))
        kl_o = "-"  # --ode-samples 0: no ODE draws
        if args.ode_samples:
            ode = inf.sample_ode(jax.random.fold_in(key, i), {"y": y}, args.ode_samples)["theta"]
            kl = kl_divergence_hist(probs, ode, bins=80, range=edges, p_is_probs=True)
            kl_o = f"{float(kl):.4f}"
        print(f"{y:6.2f} {inf.ess({'y': y}):8.0f} {kl_g:10.4f} {kl_o:>10}")
        ax = axes[0, i]
        centres = np.linspace(-2, 2, 81)[:-1] + 0.025
        ax.plot(centres, probs / 0.05, "k-", lw=1.5, label="exact")
        ax.hist(np.asarray(draw[i]), bins=80, range=edges, density=True, alpha=0.5, label="G_low")
        ax.set_title(f"y = {y:g}  (KL {kl_g:.3f})")
        ax.set_xlabel("theta")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"plot written to {args.plot}")


EXAMPLES = {"quadratic": _quadratic}


def _count(minimum):
    """An argparse type: an integer >= ``minimum``."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _finite(text):
    """An argparse type: a finite float."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def main(argv=None):
    """Entry point of the ``numpyro-mfdiff`` console script."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("numpyro_mfdiff")
    except PackageNotFoundError:  # a source tree that is not installed
        ver = "unknown"
    p = argparse.ArgumentParser(prog="numpyro-mfdiff", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {ver}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run an example end to end")
    r.add_argument("example", choices=sorted(EXAMPLES))
    r.add_argument("--num-simulations", type=_count(2), default=20_000)
    r.add_argument("--num-labels", type=_count(1), default=20_000)
    r.add_argument("--train-steps", type=_count(1), default=10_000)
    r.add_argument("--num-samples", type=_count(1), default=50_000)
    r.add_argument(
        "--ode-samples",
        type=_count(0),
        default=10_000,
        help="samples from the ODE sampler per y (0 to skip)",
    )
    r.add_argument(
        "--timing-samples",
        type=_count(0),
        default=1_000_000,
        help="samples from G_low drawn twice to time the compiled sampler (0 to skip)",
    )
    r.add_argument("--y", nargs="+", type=_finite, default=[0.25, 1.0, 2.0, 3.5])
    r.add_argument("--seed", type=_count(0), default=0)
    r.add_argument("--plot", default="quadratic.png")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    existed = os.path.exists(args.plot)
    try:  # an unwritable plot is refused before the build, not after
        with open(args.plot, "ab"):
            pass
    except OSError as e:
        p.error(f"--plot {args.plot}: cannot write there ({e.strerror})")
    if not existed:
        os.remove(args.plot)
    EXAMPLES[args.example](args)


if __name__ == "__main__":
    main()
