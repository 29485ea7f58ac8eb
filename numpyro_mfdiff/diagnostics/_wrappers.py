"""The diagnostics on a fitted :class:`~numpyro_mfdiff.MFDiff`: fresh prior-predictive
datasets, ``G_low``'s draws for each, then the array core of ``_arrays``."""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import _compiled as C
from .._checks import positive_int
from .._refining import high_fidelity
from .._stages import run_simulations
from ..refine._weights import ess as likelihood_ess
from ._arrays import _check_levels, coverage_from_samples, sbc_from_samples, tarp_from_samples
from ._results import SBC, TARP, Coverage, Misspecification, PosteriorDraws

__all__ = ["posterior_draws", "sbc", "expected_coverage", "tarp", "misspecification"]


def _coordinate_names(spec) -> tuple:
    """Labels of the D unconstrained coordinates: ``site`` or ``site[i,j]``, ravel order."""
    shapes = jax.eval_shape(spec.unravel_latent, jax.ShapeDtypeStruct((spec.dim,), jnp.float32))
    out = []
    for name, s in shapes.items():
        if s.shape == ():
            out.append(name)
        else:
            out.extend(f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(*s.shape))
    return tuple(out)


@eqx.filter_jit
def _generate_batch(gen, y, z):
    """``G(y_b, z_bs)`` for ``y`` (B, M) and ``z`` (B, S, D): (B, S, D), about 4096 rows a step."""
    per = jax.vmap(gen, (None, 0))
    return jax.lax.map(lambda a: per(*a), (y, z), batch_size=max(1, 4096 // z.shape[1]))


def _prior_predictive(inf, rng_key, num, model, model_args, model_kwargs):
    """Valid simulations ``(theta (n, D), y (n, M))`` of ``model`` (default ``inf``'s) from
    the prior, through ``inf``'s executor; failed ones left out with a warning."""
    high = high_fidelity(inf.state, model, model_args, model_kwargs)
    state = inf.state.replace(
        model=high.model, args=high.args, kwargs=high.kwargs, spec=high.spec, reparam=()
    )
    sims = run_simulations(inf.config, state, rng_key, num)
    valid = np.asarray(sims.valid)
    if not valid.all():
        warnings.warn(
            f"{int((~valid).sum())} of {num} prior-predictive simulations failed and are left out",
            stacklevel=3,
        )
    if valid.sum() < 2:
        raise RuntimeError(
            f"only {int(valid.sum())} of {num} prior-predictive simulations are finite"
        )
    return np.asarray(sims.theta)[valid], np.asarray(sims.y)[valid]


def _draw_kwargs(kwargs):
    """Take the keyword arguments of :func:`posterior_draws` out of ``kwargs``."""
    return {k: kwargs.pop(k) for k in ("model", "model_args", "model_kwargs") if k in kwargs}


def posterior_draws(
    inf,
    rng_key,
    num_datasets: int = 1000,
    num_samples: int = 1000,
    *,
    model=None,
    model_args=None,
    model_kwargs=None,
) -> PosteriorDraws:
    """True parameters from the prior, datasets simulated at them, ``G_low`` draws for each.

    The datasets are fresh simulations (not the stored ones ``G_low`` was
    built from), run in JAX or, for simulators wrapped by
    :func:`~numpyro_mfdiff.external_simulator`, through ``inf.executor``; the
    posterior draws come from ``G_low`` for all datasets in one batched forward
    pass with independent noise per dataset. ``G_low`` serves every dataset,
    refined observations included: SBC checks the amortized sampler.

    Args:
        inf: a fitted :class:`~numpyro_mfdiff.MFDiff`.
        rng_key: ``jax.random`` key.
        num_datasets: ``B`` prior-predictive datasets (>= 2).
        num_samples: ``S`` posterior draws per dataset.
        model, model_args, model_kwargs: simulate the datasets with another model
            of the same latent and observed sites (a high-fidelity simulator, as
            in :meth:`MFDiff.refine`): does ``G_low`` stay calibrated for data
            from it? Default: ``inf``'s model and arguments.

    Returns:
        :class:`PosteriorDraws` (unconstrained coordinates); failed simulations
        are left out (with a warning), so ``B`` may be smaller.
    """
    num_datasets = positive_int("num_datasets", num_datasets, 2)
    num_samples = positive_int("num_samples", num_samples)
    C.require_generator(inf.state)
    k_sim, k_z = jax.random.split(rng_key)
    theta, y = _prior_predictive(inf, k_sim, num_datasets, model, model_args, model_kwargs)
    z = jax.random.normal(k_z, (theta.shape[0], num_samples, inf.spec.dim))
    samples = _generate_batch(inf.generator, jnp.asarray(y), z)
    return PosteriorDraws(
        theta=jnp.asarray(theta),
        y=jnp.asarray(y),
        samples=samples,
        names=_coordinate_names(inf.spec),
    )


def sbc(inf, rng_key, num_datasets: int = 1000, num_samples: int = 100, **kwargs) -> SBC:
    """Simulation-based calibration of ``G_low`` on ``num_datasets`` fresh prior draws.

    :func:`posterior_draws` then :func:`sbc_from_samples`. Keyword arguments
    go to either (``model``, ``model_args``, ``model_kwargs``; ``prob``,
    ``num_points``, ``num_trials``, ``bins``). Ranks (B, D) per unconstrained
    coordinate, labelled by site (``"theta"``, ``"x[0]"``...).
    """
    draw_kw = _draw_kwargs(kwargs)
    k_draw, k_test = jax.random.split(rng_key)
    d = posterior_draws(inf, k_draw, num_datasets, num_samples, **draw_kw)
    return sbc_from_samples(d.samples, d.theta, k_test, names=d.names, **kwargs)


def expected_coverage(
    inf, rng_key, num_datasets: int = 1000, num_samples: int = 500, levels=None, **kwargs
) -> Coverage:
    """Expected coverage of ``G_low``'s central and highest-density intervals.

    :func:`posterior_draws` then :func:`coverage_from_samples`; keyword
    arguments go to either (``model``, ``model_args``, ``model_kwargs``;
    ``density``, ``neighbours``).
    """
    levels = _check_levels(levels)
    draw_kw = _draw_kwargs(kwargs)
    d = posterior_draws(inf, rng_key, num_datasets, num_samples, **draw_kw)
    return coverage_from_samples(d.samples, d.theta, levels, names=d.names, **kwargs)


def tarp(inf, rng_key, num_datasets: int = 1000, num_samples: int = 500, **kwargs) -> TARP:
    """TARP of ``G_low`` on fresh prior draws; references from the prior by default.

    :func:`posterior_draws` then :func:`tarp_from_samples`; keyword arguments
    go to either. Coordinates are standardised by the truths' mean and sd.
    """
    draw_kw = _draw_kwargs(kwargs)
    k_draw, k_ref = jax.random.split(rng_key)
    d = posterior_draws(inf, k_draw, num_datasets, num_samples, **draw_kw)
    return tarp_from_samples(d.samples, d.theta, k_ref, **kwargs)


def misspecification(inf, rng_key, observations=None, num_datasets: int = 1000) -> Misspecification:
    """How typical observations are of the prior predictive the simulations represent.

    The likelihood-weight ESS over the prior simulations (what
    ``inf.ess(obs, fidelity="low")`` reports) and the Monte Carlo log evidence
    ``log mean_j p(y | theta_j)`` of each observation, each against its
    distribution over ``num_datasets`` fresh prior-predictive observations
    (simulated as :func:`posterior_draws` does): a p-value near ``1 / (R + 1)``
    says the observation lies outside what the model simulates, where no
    sampler built on these simulations, nor SBC, can be trusted.

    Args:
        inf: an :class:`~numpyro_mfdiff.MFDiff` with simulations.
        rng_key: ``jax.random`` key of the reference simulations.
        observations: one observation or a batch (dict site -> value); ``None``:
            the data passed to :meth:`MFDiff.run`.
        num_datasets: ``R`` reference observations (>= 2).

    Returns:
        :class:`Misspecification` (scalars for one observation, arrays (B,) for a batch).
    """
    num_datasets = positive_int("num_datasets", num_datasets, 2)
    st = inf.state
    C.require_sims(st)
    observations = C.observations_or_default(st, observations)
    y = C.check(inf.config, st, observations, warn=False)
    rows = np.atleast_2d(y)
    fid = ["low" if C.refinement_for(st, r, None) is None else "high" for r in rows]
    _, y_ref = _prior_predictive(inf, rng_key, num_datasets, None, None, None)
    bank = inf.bank
    stats = jax.jit(
        lambda ys: jax.lax.map(
            lambda yi: _ess_and_evidence(bank.log_weights(yi, fast=False)), ys, batch_size=16
        )
    )
    ess_obs, ev_obs = (np.asarray(x, np.float64) for x in stats(jnp.asarray(rows)))
    ess_ref, ev_ref = (np.asarray(x, np.float64) for x in stats(jnp.asarray(y_ref)))
    R = ess_ref.size

    def pvalue(ref, obs):
        return (1.0 + (ref[None, :] <= obs[:, None]).sum(axis=1)) / (1.0 + R)

    out = [ess_obs, ev_obs, pvalue(ess_ref, ess_obs), pvalue(ev_ref, ev_obs)]
    if y.ndim == 1:
        out = [float(x[0]) for x in out]
        fid = fid[0]
    return Misspecification(*out, ess_ref, ev_ref, fid if y.ndim == 1 else np.asarray(fid))


def _ess_and_evidence(ll):
    """ESS and ``log mean exp`` of log-likelihoods (N,) over the finite ones."""
    n = jnp.sum(jnp.isfinite(ll))
    return likelihood_ess(ll), jax.nn.logsumexp(ll) - jnp.log(n)
