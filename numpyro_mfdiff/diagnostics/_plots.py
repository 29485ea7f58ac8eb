"""Plots of the diagnostics' results, matplotlib in ArviZ's style; each returns its axes."""

from __future__ import annotations

import numpy as np

from ._results import SBC, TARP, Coverage

__all__ = ["plot_sbc_ecdf", "plot_coverage", "plot_tarp"]


def _axes(n, axes, width=3.6, height=2.8):
    import matplotlib.pyplot as plt

    if axes is None:
        cols = min(n, 4)
        rows = -(-n // cols)
        _, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    axes = np.atleast_1d(np.asarray(axes, dtype=object)).ravel()
    if axes.size < n:
        raise ValueError(f"need {n} axes (one per coordinate), got {axes.size}")
    return axes


def plot_sbc_ecdf(result: SBC, *, difference: bool = True, axes=None, color="C0"):
    """ECDF of the SBC ranks with the simultaneous band, one panel per coordinate.

    As ``az.plot_ecdf(..., pit=True, confidence_bands=True)``: the ECDF of the
    fractional ranks at ``result.points``, minus the uniform CDF when
    ``difference`` (default), inside the band of probability ``result.prob``
    for a calibrated sampler. A U shape means too narrow posteriors, an
    inverted U too wide ones, a one-sided bulge a bias.

    Returns:
        numpy array of matplotlib axes (one per coordinate, more are left empty).
    """
    names, z = result.names, np.asarray(result.points)
    axes = _axes(len(names), axes)
    ecdf = result.ecdf()
    base = z if difference else 0.0
    for i, (ax, name) in enumerate(zip(axes, names, strict=False)):
        ax.fill_between(z, result.lower - base, result.upper - base, color=color, alpha=0.2, lw=0)
        ax.plot(z, ecdf[:, i] - base, color=color, lw=1.5)
        if difference:
            ax.axhline(0.0, color="k", lw=0.6)
        else:
            ax.plot([0, 1], [0, 1], "k", lw=0.6)
        ax.set_title(f"{name}: p = {float(result.ecdf_pvalue[i]):.3g}", fontsize=10)
        ax.set_xlabel("fractional rank")
        ax.set_ylabel("ECDF difference" if difference else "ECDF")
    return axes


def plot_coverage(result: Coverage, *, ax=None, central: bool = True, hdr: bool = True):
    """Empirical against nominal coverage, with the ``2 stderr`` band of a calibrated sampler.

    One line per coordinate for the central intervals and one for the
    highest-density regions. Returns the matplotlib axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0))
    q = np.asarray(result.levels)
    ax.fill_between(q, q - 2 * result.stderr, q + 2 * result.stderr, color="0.8", lw=0)
    ax.plot([0, 1], [0, 1], "k", lw=0.8)
    if central:
        for i, name in enumerate(result.names):
            ax.plot(q, np.asarray(result.central)[:, i], "o-", ms=3, label=f"central {name}")
    if hdr and not np.all(np.isnan(result.hdr)):
        ax.plot(q, result.hdr, "s-", ms=3, color="k", label="highest density")
    ax.set(xlabel="nominal coverage", ylabel="empirical coverage", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    return ax


def plot_tarp(result: TARP, *, ax=None, label: str | None = None):
    """TARP's expected coverage probability against the credibility level; returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], "k", lw=0.8)
    text = f"ATC {result.atc:+.3f}, KS p {result.ks_pvalue:.2g}"
    ax.plot(result.alpha, result.ecp, lw=1.5, label=text if label is None else f"{label}: {text}")
    ax.set(xlabel="credibility level", ylabel="expected coverage", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    return ax
