"""Log-likelihoods of exponential-family observed sites as one matmul.

For observed sites whose distributions are exponential families,

    log p(y | theta_j) = T(y) . eta_j - A_j + h(y),

with sufficient statistics ``T(y)`` (S,), natural parameters ``eta_j`` (S,) and
log-normaliser ``A_j`` of prior simulation ``j``, and a base measure ``h(y)``
that depends on the observation only. :func:`natural_form` computes ``eta``
(N, S) and ``A`` (N,) once from the stored distributions of the prior
simulations; the log-likelihoods of an observation are then one matrix-vector
product (a matmul for a batch of observations), where the generic path
(:func:`~numpyro_mfdiff._model.log_likelihood`) calls ``log_prob`` on every
(observation, simulation) pair, terms of the observation alone (the ``lgamma``
of counts) included.

Supported: ``Normal``, ``LogNormal``, ``MultivariateNormal`` (event size up to
:data:`MAX_MVN_EVENT`), ``Binomial``, ``Poisson``, ``Bernoulli``,
``Categorical`` and ``Gamma``, also inside ``Independent`` (``to_event``) and
``ExpandedDistribution`` (``expand``). A ``Binomial``'s ``total_count`` must be
the same in every simulation. Statistics whose natural parameter is the same in
every simulation (a fixed noise scale: the ``y^2`` column of a ``Normal``) are
moved into ``h(y)``. Any other site makes :func:`natural_form` return ``None``,
and callers keep the generic path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import gammaln
from numpyro.distributions.util import clamp_probs

__all__ = ["NaturalForm", "natural_form", "log_likelihood_natural", "MAX_STATS"]

# stands for log(0) in natural parameters: finite, so that a zero statistic times it
# is 0 (a count of 0 at rate 0), and any sum holding it is far below real values
_LOG_ZERO = -1e30
# most statistics (after moving the constant ones into h): eta is (N, S) float32
MAX_STATS = 2048
MAX_MVN_EVENT = 32
_LOG_2PI = float(np.log(2.0 * np.pi))


class NaturalForm(NamedTuple):
    """Observed-site log-likelihoods of the prior simulations in exponential-family form.

    ``eta``: (N, S) natural parameters of the statistics that vary over the
    simulations (0 for invalid simulations); ``neg_log_norm``: (N,) ``-A_j``,
    ``-inf`` for invalid simulations; ``stats``: flat observation (M,) ->
    ``(T (S,), h ())``, ``h`` holding the base measure and the terms of the
    statistics whose natural parameter is the same in every simulation.
    """

    eta: jax.Array
    neg_log_norm: jax.Array
    stats: Callable


class _Family(NamedTuple):
    """One supported distribution type, evaluated per simulation on a value of shape ``V``.

    ``centre(d, V)``: location (V,) averaged over the simulations and subtracted
    from the statistics (so that ``(y - c)^2`` keeps its digits), or None;
    ``params(d, V, c)``: ``(eta (S,), A (), aux)``, ``aux`` arrays the statistics
    need, which must be the same in every simulation (a ``total_count``);
    ``stats(v (V,), c, aux)``: ``(T (S,), h ())``.
    """

    centre: Callable | None
    params: Callable
    stats: Callable


def _b(x, shape):
    return jnp.broadcast_to(jnp.asarray(x, jnp.float32), shape)


def _floor_log(x):
    return jnp.maximum(x, _LOG_ZERO)


# ------------------------------------------------------------------ Gaussians
def _normal_centre(d, shape):
    return _b(d.loc, shape)


def _normal_params(d, shape, c):
    m, prec = _b(d.loc, shape) - c, 1.0 / _b(d.scale, shape) ** 2
    eta = jnp.concatenate([(m * prec).ravel(), (-0.5 * prec).ravel()])
    return eta, jnp.sum(0.5 * m * m * prec + jnp.log(_b(d.scale, shape))), ()


def _normal_stats(v, c, aux):
    u = (v - c).ravel()
    return jnp.concatenate([u, u * u]), -0.5 * _LOG_2PI * u.size


def _lognormal_stats(v, c, aux):
    t, h = _normal_stats(jnp.log(v), c, aux)
    return t, h - jnp.sum(jnp.log(v))


def _mvn_params(d, shape, c):
    E = shape[-1]
    loc = _b(d.loc, shape)
    L = _b(d.scale_tril, shape + (E,))
    eye = jnp.broadcast_to(jnp.eye(E, dtype=jnp.float32), L.shape)
    prec = jax.scipy.linalg.cho_solve((L, True), eye)
    m = loc - c
    pm = jnp.einsum("...ij,...j->...i", prec, m)
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)))
    eta = jnp.concatenate([pm.ravel(), (-0.5 * prec).ravel()])
    return eta, 0.5 * jnp.sum(m * pm) + half_log_det, ()


def _mvn_stats(v, c, aux):
    u = v - c
    t = jnp.concatenate([u.ravel(), (u[..., :, None] * u[..., None, :]).ravel()])
    return t, -0.5 * _LOG_2PI * u.size


# -------------------------------------------------------------------- counts
def _counts_stats(v, c, aux):
    return v.ravel(), 0.0


def _binomial_probs_params(d, shape, c):
    p = clamp_probs(_b(d.probs, shape))  # as BinomialProbs.log_prob
    n = _b(d.total_count, shape)
    return (jnp.log(p) - jnp.log1p(-p)).ravel(), -jnp.sum(n * jnp.log1p(-p)), n


def _binomial_logits_params(d, shape, c):
    n = _b(d.total_count, shape)
    logits = _b(d.logits, shape)
    return logits.ravel(), jnp.sum(n * jax.nn.softplus(logits)), n


def _binomial_stats(v, c, n):
    h = gammaln(n + 1.0) - gammaln(v + 1.0) - gammaln(n - v + 1.0)
    return v.ravel(), jnp.sum(h)


def _poisson_params(d, shape, c):
    rate = _b(d.rate, shape)
    return _floor_log(jnp.log(rate)).ravel(), jnp.sum(rate), ()


def _poisson_stats(v, c, aux):
    return v.ravel(), -jnp.sum(gammaln(v + 1.0))


def _bernoulli_probs_params(d, shape, c):
    p = clamp_probs(_b(d.probs, shape))
    return (jnp.log(p) - jnp.log1p(-p)).ravel(), -jnp.sum(jnp.log1p(-p)), ()


def _bernoulli_logits_params(d, shape, c):
    logits = _b(d.logits, shape)
    return logits.ravel(), jnp.sum(jax.nn.softplus(logits)), ()


def _categorical_params(d, shape, c):
    logits = jnp.asarray(d.logits, jnp.float32)
    if isinstance(d, dist.CategoricalLogits):
        logits = logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
    log_pmf = jnp.broadcast_to(logits, shape + logits.shape[-1:])
    return _floor_log(log_pmf).ravel(), jnp.zeros(()), jnp.zeros(logits.shape[-1:])


def _categorical_stats(v, c, aux):
    return jax.nn.one_hot(v.astype(jnp.int32), aux.shape[-1]).ravel(), 0.0


# ---------------------------------------------------------------- positives
def _gamma_params(d, shape, c):
    conc, rate = _b(d.concentration, shape), _b(d.rate, shape)
    eta = jnp.concatenate([(conc - 1.0).ravel(), (-rate).ravel()])
    return eta, jnp.sum(gammaln(conc) - conc * jnp.log(rate)), ()


def _gamma_stats(v, c, aux):
    return jnp.concatenate([jnp.log(v).ravel(), v.ravel()]), 0.0


_FAMILIES = {
    dist.Normal: _Family(_normal_centre, _normal_params, _normal_stats),
    dist.LogNormal: _Family(_normal_centre, _normal_params, _lognormal_stats),
    dist.MultivariateNormal: _Family(_normal_centre, _mvn_params, _mvn_stats),
    dist.BinomialProbs: _Family(None, _binomial_probs_params, _binomial_stats),
    dist.BinomialLogits: _Family(None, _binomial_logits_params, _binomial_stats),
    dist.Poisson: _Family(None, _poisson_params, _poisson_stats),
    dist.BernoulliProbs: _Family(None, _bernoulli_probs_params, _counts_stats),
    dist.BernoulliLogits: _Family(None, _bernoulli_logits_params, _counts_stats),
    dist.CategoricalProbs: _Family(None, _categorical_params, _categorical_stats),
    dist.CategoricalLogits: _Family(None, _categorical_params, _categorical_stats),
    dist.Gamma: _Family(None, _gamma_params, _gamma_stats),
}
_WRAPPERS = (dist.Independent, dist.ExpandedDistribution)


def _unwrap(d):
    """``(family, unwrap)`` for a site distribution (wrappers peeled off), or None."""
    depth = 0
    while type(d) in _WRAPPERS:
        d, depth = d.base_dist, depth + 1
    family = _FAMILIES.get(type(d))
    if family is None:
        return None
    if type(d) is dist.MultivariateNormal and d.event_shape[-1] > MAX_MVN_EVENT:
        return None

    def unwrap(x):
        for _ in range(depth):
            x = x.base_dist
        return x

    return family, unwrap


def _same_rows(x, valid):
    """Whether every valid row of ``x`` (N, ...) equals the first valid one (host check)."""
    x = np.asarray(x)[valid]
    return bool(np.all(x == x[:1]))


def _site_form(found, site_dists, shape, valid):
    """``(eta (N, S_site), A (N,), (stats, c, aux))`` of one site, or None when its
    ``aux`` differs between valid simulations."""
    family, unwrap = found
    c = jnp.zeros(shape, jnp.float32)
    if family.centre is not None:
        locs = jax.vmap(lambda d: family.centre(unwrap(d), shape))(site_dists)
        c = jnp.asarray(np.asarray(locs, np.float64)[valid].mean(0), jnp.float32)
    eta, a, aux = jax.vmap(lambda d: family.params(unwrap(d), shape, c))(site_dists)
    if not all(_same_rows(x, valid) for x in jax.tree.leaves(aux)):
        return None
    aux = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[valid][0]), aux)
    return eta, a, (family.stats, c, aux)


def natural_form(spec, dists, valid, gaussian: bool = True) -> NaturalForm | None:
    """The :class:`NaturalForm` of the observed sites of the prior simulations, or None.

    Args:
        spec: the model's :class:`~numpyro_mfdiff._model.ModelSpec`.
        dists: dict site name -> batched observed-site distribution (leading axis N),
            as in :class:`~numpyro_mfdiff._model.Simulations`.
        valid: (N,) bool, False for failed simulations.
        gaussian: ``False`` returns None when every site is a ``Normal``,
            ``LogNormal`` or ``MultivariateNormal``: ``log_prob`` is as fast there
            (``benchmarks/bench_likelihoods.py``: 6.9 s both ways on the quadratic)
            and keeps the exact ``(y - mu)^2`` form, where the matmul loses float32
            digits when the data are far more precise than their spread.

    Returns None when a site's distribution is not supported (see the module
    docstring), when the ``aux`` of a site (a ``Binomial``'s ``total_count``)
    differs between simulations, or when more than :data:`MAX_STATS`
    statistics remain; callers then use the generic ``log_prob`` path.
    """
    valid = np.asarray(valid, bool)
    if not valid.any():
        return None
    sites, etas, a = {}, [], 0.0
    found_all = [_unwrap(dists[name]) for name in spec.observed_shapes]
    if not gaussian and all(f is not None and f[0].centre is not None for f in found_all):
        return None
    for (name, shape), found in zip(spec.observed_shapes.items(), found_all, strict=True):
        site = None if found is None else _site_form(found, dists[name], tuple(shape), valid)
        if site is None:
            return None
        etas.append(site[0])
        a = a + site[1]
        sites[name] = site[2]
    eta = np.asarray(jnp.concatenate(etas, axis=1))
    neg_a = -np.asarray(a)
    ok = valid & np.all(np.isfinite(eta), axis=1) & np.isfinite(neg_a)
    neg_a = np.where(ok, neg_a, -np.inf).astype(np.float32)
    eta = np.where(ok[:, None], eta, 0.0).astype(np.float32)
    # statistics whose natural parameter is the same in every simulation go into h(y)
    first = eta[np.argmax(ok)]
    const = np.all(eta[ok] == first, axis=0)
    if np.sum(~const) > MAX_STATS:
        return None
    keep, drop = np.flatnonzero(~const), np.flatnonzero(const)
    eta_const = jnp.asarray(first[drop])
    dtypes = spec.observed_dtypes

    def stats(y):
        obs = spec.unravel_obs(y)
        ts, h = [], 0.0
        for name, (fn, c, aux) in sites.items():
            v = jnp.asarray(obs[name]).astype(dtypes[name]).astype(jnp.float32)
            t, hs = fn(v, c, aux)
            ts.append(t)
            h = h + hs
        t = jnp.concatenate(ts)
        return t[keep], h + jnp.dot(t[drop], eta_const, precision=jax.lax.Precision.HIGHEST)

    return NaturalForm(jnp.asarray(eta[:, keep]), jnp.asarray(neg_a), stats)


def log_likelihood_natural(form: NaturalForm, y, base: bool = True):
    """``log p(y | theta_j)`` for every simulation from ``form``; ``y`` flat (M,), returns (N,).

    With ``base=False`` the term ``h(y)`` of the observation alone is left out:
    the values are then exact up to a constant per observation, which a softmax
    over the simulations (the denoiser weights, the ESS, the support of a
    labelling chunk) does not see; an observation outside the support still
    gives ``-inf`` everywhere. Invalid simulations get ``-inf``. Jittable; vmap
    over ``y`` for a batch (one matmul).
    """
    t, h = form.stats(jnp.asarray(y, jnp.float32))
    ll = jnp.matmul(form.eta, t, precision=jax.lax.Precision.HIGHEST) + form.neg_log_norm
    ll = ll + (h if base else jnp.where(jnp.isfinite(h), 0.0, -jnp.inf))
    return jnp.where(jnp.isfinite(ll) & (ll > 0.5 * _LOG_ZERO), ll, -jnp.inf)
