"""Where ``G_low`` may answer: the domain check of amortized draws and the checks of
likelihood weights that are not finite.

``G_low`` was fitted at simulated observations, so it answers well only where the
prior predictive puts them. The statistic is the observation's Monte Carlo
prior-predictive log evidence over the bank,

    log Z(y) = log sum_j w_j p(y | theta_j) - log sum_j w_j,

(``w_j = exp(log_weight_j)``: 1 for prior simulations), computed in the same compiled
call as the likelihood-weight ESS that sampling reports anyway. Its reference is the
same statistic at ``K`` (at most :data:`REFERENCES`) of the prior simulations'
observations, each leaving its own simulation out, so that a fresh prior-predictive
observation and a reference are exchangeable. An observation is outside the domain when
its ``log Z`` is below the lowest reference by more than :data:`MARGIN_IQR` (10)
interquartile ranges of the references, or is not finite (no simulation gives it a
finite likelihood). Below the lowest reference alone would flag a prior-predictive
observation with probability ``1 / (K + 1)``; the margin, in units of the references'
spread (which grows with the data's dimension), leaves out mild atypicality such as a
coarse model's bias of a few noise sds at a fine observation (the Burgers example: log
Z -15 against a lowest reference of 19-27 and an IQR of 5.4), which the ESS warning and
:func:`~numpyro_mfdiff.diagnostics.misspecification` report.

Measured (2 CPU cores): on 5,000 fresh prior-predictive observations per bank (the
quadratic at N = 2,000 and 20,000, the linear Gaussian at 2,000 and 20,000, a
LogNormal of scale 1e19 at 2,000; keys 0-2) none is flagged but one in 5,000 for the
LogNormal (0.02%; without the margin 0-0.42%). The quadratic at y = -3, -1, -0.6, 4.6,
5, 6, 10 (it cannot produce them) and at 1e18, +-1e19, 1e30 (no finite likelihood) is
flagged at every key, at 0-3.9 never; y = -0.4 (log Z -9.3 against a lowest reference of
-3.8 and a threshold of -13.6) is not. Cost: 0.012 s for 100 observations (N = 20,000),
in the ESS's own compiled call (``get_samples`` of 100 x 1,000 draws: 0.278 s with the
check, 0.266 s without); the references, once per bank, 0.08 s after compilation.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .refine._weights import ess as _ess

__all__ = ["REFERENCES", "DOMAIN_CHECKS", "Domain", "compile_summary", "reference", "check"]

REFERENCES = 1000
DOMAIN_CHECKS = ("warn", "error", None)


# how far below the lowest reference an observation must fall, in interquartile ranges
# of the references (their spread grows with the data's dimension)
MARGIN_IQR = 10.0


class Domain(NamedTuple):
    """The reference log evidences (K,) of prior simulations' observations, sorted, and
    the threshold below which an observation is outside (:data:`MARGIN_IQR`)."""

    log_evidence: np.ndarray

    @property
    def threshold(self) -> float:
        q1, q3 = np.quantile(self.log_evidence, [0.25, 0.75])
        return float(self.log_evidence[0] - MARGIN_IQR * (q3 - q1))


def compile_summary(bank):
    """Compiled ``(ys (B, M), skip (B,)) -> (log Z (B,), ESS (B,))`` of the bank's exact
    log-weights at each ``ys[b]`` with point ``skip[b]`` left out (-1: none); the ESS is
    0 where no point has a finite weight."""
    n = bank.valid.shape[0]
    own = jnp.where(bank.valid, bank.log_weight, -jnp.inf)

    def one(args):
        y, skip = args
        keep = jnp.arange(n) != skip
        lw = jnp.where(keep, bank.log_weights(y, fast=False), -jnp.inf)
        log_z = jax.nn.logsumexp(lw) - jax.nn.logsumexp(jnp.where(keep, own, -jnp.inf))
        ok = jnp.isfinite(log_z)
        return jnp.where(ok, log_z, -jnp.inf), jnp.where(ok, _ess(lw), 0.0)

    return jax.jit(lambda ys, skip: jax.lax.map(one, (ys, skip), batch_size=16))


def reference(summary, ys, valid, num_prior) -> Domain:
    """The :class:`Domain` of ``K = min(REFERENCES, valid prior simulations)`` prior
    simulations, evenly spaced among the valid ones of the first ``num_prior``; ``ys``
    (N, M) their observations, ``summary`` from :func:`compile_summary`."""
    idx = np.flatnonzero(np.asarray(valid)[:num_prior])
    idx = np.unique(idx[np.linspace(0, idx.size - 1, min(REFERENCES, idx.size)).astype(int)])
    log_z, _ = summary(jnp.asarray(np.asarray(ys)[idx]), jnp.asarray(idx))
    log_z = np.asarray(log_z, np.float64)
    return Domain(np.sort(log_z[np.isfinite(log_z)]))


def outside(domain: Domain, log_z) -> np.ndarray:
    """Which observations (B,) lie outside: ``log Z`` below the lowest reference by more
    than :data:`MARGIN_IQR` interquartile ranges of the references, or not finite."""
    log_z = np.asarray(log_z, np.float64)
    return ~(log_z >= domain.threshold)


def check(policy, domain: Domain, log_z, ess, rows, index) -> np.ndarray:
    """Warn (``policy="warn"``) or raise ``ValueError`` (``"error"``) when an observation
    that ``G_low`` serves lies outside its domain; ``log_z``, ``ess`` (B,) from
    :func:`compile_summary` at ``rows`` (B, M) flat observations, ``index`` (B,) their
    positions in the batch; ``None``: no check. Returns which rows were warned about
    (B,) (their ESS is in the message)."""
    out = np.zeros(len(rows), bool) if policy is None else outside(domain, log_z)
    if not out.any():
        return out
    i = int(np.flatnonzero(out)[0])
    k = domain.log_evidence.size
    value = np.array2string(np.asarray(rows[i]), threshold=6, precision=4)
    what = (
        "no prior simulation gives it a finite likelihood"
        if not np.isfinite(log_z[i])
        else f"its prior-predictive log evidence {float(log_z[i]):.4g} is far below that "
        f"of all {k} reference simulations (lowest {domain.log_evidence[0]:.4g}, median "
        f"{np.median(domain.log_evidence):.4g}; threshold {domain.threshold:.4g}, p < "
        f"{1 / (k + 1):.2g})"
    )
    msg = (
        f"observation {int(index[i])} (flat y = {value}) lies outside the simulated "
        f"observations G_low was trained on: {what}, and the effective sample size of "
        f"its likelihood weights is {float(ess[i]):.1f}"
        + (f"; {int(out.sum())} of {out.size} observations in all" if out.size > 1 else "")
        + ". G_low's draws there are an extrapolation: use sample_ode (the Monte Carlo "
        "score over the simulations) or refine for it, simulate more, or check that the "
        "model can produce it. MFDiff(..., domain_check='error') raises instead, "
        "domain_check=None silences this check"
    )
    if policy == "error":
        raise ValueError(msg)
    warnings.warn(msg, stacklevel=4)
    return out


def require_weights(log_z, index, what):
    """A ``ValueError`` when an observation has no finite likelihood weight (``log Z``
    not finite), before ``what`` (``sample_ode``, ``refine``) would fail inside."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(log_z, np.float64)))
    if bad.size:
        raise ValueError(
            f"{what}: no prior simulation gives observation {int(index[bad[0]])} a finite "
            "likelihood (all log p(y | theta_j) are -inf or NaN): the model cannot produce "
            "it, or its values overflow float32 in the likelihood; check the observation "
            "and the model's units (rescale values of order 1e18 and beyond)"
        )


def not_finite(draws, ndim):
    """Warn, naming the sites and observations, when generator draws (dict of (S, ...)
    for one observation, ``ndim`` 1, or (B, S, ...) for a batch) are not finite."""
    bad = {}
    for name, v in draws.items():
        v = np.asarray(v)
        v = v.reshape(1, -1) if ndim == 1 else v.reshape(v.shape[0], -1)
        rows = np.flatnonzero(~np.isfinite(v).all(axis=1))
        if rows.size:
            bad[name] = rows
    if bad:
        name, rows = next(iter(bad.items()))
        warnings.warn(
            f"the generator returned non-finite draws (NaN or inf) for site(s) {sorted(bad)} "
            f"at observation(s) {rows[:5].tolist()}: the observation is beyond what it can "
            "represent; use sample_ode or refine, and check the observation's scale",
            stacklevel=3,
        )
