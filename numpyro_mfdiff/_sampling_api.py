"""The sampling methods of :class:`~numpyro_mfdiff.MFDiff`: draws, ODE draws, ESS,
summaries and InferenceData (a mixin over :class:`~numpyro_mfdiff._core.Core`)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import _model
from ._checks import (
    chain_count,
    positive_int,
    real,
)
from ._core import Core
from ._domain import not_finite
from ._sampling import finish, ode_low
from ._state import OdeStats, obs_key

__all__ = ["SamplingMethods"]


class SamplingMethods(Core):
    """Posterior draws, ESS, summaries and InferenceData of a built inference."""

    # ------------------------------------------------------------- sampling
    def get_samples(
        self,
        rng_key,
        observations=None,
        num_samples: int = 1000,
        fidelity=None,
        *,
        group_by_chain: bool = False,
        num_chains: int = 1,
    ):
        """Posterior samples for one observation or a batch, one network pass each.

        Args:
            rng_key: a ``jax.random`` key.
            observations: dict from observed site name to value, at the
                site's shape or with a leading batch axis ``B`` on every site.
                ``None`` (default): the data passed to :meth:`run` as model
                arguments (``default_observations``); a ``ValueError`` if
                there is none.
            num_samples: samples per observation.
            fidelity: ``None`` (default) draws from ``G_high`` for an
                observation refined with :meth:`refine` and from ``G_low``
                otherwise; ``"low"`` always uses ``G_low``; ``"high"`` requires
                a refined observation.
            group_by_chain: split the draws into ``num_chains`` chains, as
                ``MCMC.get_samples(group_by_chain=True)``: shapes
                ``(num_chains, num_samples // num_chains, *site_shape)``
                (after the batch axis ``B`` for a batch). The draws are
                independent; chain ``c`` is the ``c``-th block of consecutive
                draws, so the same key gives the same draws either way.
            num_chains: a divisor of ``num_samples`` (as in
                :meth:`to_inference_data`).

        Returns:
            Dict from site name to constrained samples, shape
            ``(num_samples, *site_shape)``, or ``(B, num_samples, *site_shape)``
            for a batch: the latent sites, and the model's
            ``numpyro.deterministic`` sites computed from them (with the
            observed sites set to the observation, as ``MCMC`` does; under
            ``jit``, so a deterministic site that does not need the simulator
            does not run it).
        """
        num_samples = positive_int("num_samples", num_samples)
        num_chains = chain_count(num_samples, num_chains)
        y = self._check(observations, fidelity=fidelity, sampler="generator")
        z = jax.random.normal(rng_key, (num_samples, self.spec.dim))
        rows = [y] if y.ndim == 1 else list(y)
        refs = [self._refinement(yi, fidelity) for yi in rows]
        if any(r is None for r in refs):
            self._require_generator()
        if y.ndim == 1:
            out = self._draw_refined(refs[0], y, z)
        elif all(r is None for r in refs):
            out = self._draws()[1](self.generator, jnp.asarray(y), z)
        else:
            outs = [self._draw_refined(r, yi, z) for r, yi in zip(refs, rows, strict=True)]
            out = jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
        not_finite(out, y.ndim)
        return finish(self._deterministic(), out, y, group_by_chain, num_chains)

    def _draw_refined(self, ref, y, z):
        draw = self._draws()[0]
        if ref is None:
            return draw(self.generator, jnp.asarray(y), z)
        return draw(ref.generator, jnp.zeros((0,), jnp.float32), z)

    def sample_ode(
        self,
        rng_key,
        observations=None,
        num_samples: int = 1000,
        batch_size: int = 4096,
        fidelity=None,
        *,
        group_by_chain: bool = False,
        num_chains: int = 1,
    ):
        """Posterior samples from the Monte Carlo-score ODE, without the network.

        Slower than :meth:`get_samples` and more accurate. Points whose weight
        is negligible (at most ``prune_tol`` of the mass in total) are dropped
        first. For a refined observation (``fidelity`` as in
        :meth:`get_samples`) the ODE runs over the high-fidelity simulations
        with their importance weights. Same arguments (``observations=None``:
        the data passed to :meth:`run`; ``group_by_chain``, ``num_chains``) and
        return value (deterministic sites included) as :meth:`get_samples`.
        """
        self._require_sims()
        num_samples = positive_int("num_samples", num_samples)
        batch_size = positive_int("batch_size", batch_size)
        num_chains = chain_count(num_samples, num_chains)
        y = self._check(observations, fidelity=fidelity, sampler="sample_ode")
        if y.ndim == 2:
            keys = jax.random.split(rng_key, y.shape[0])
            outs = [
                self._ode_constrained(k, yi, num_samples, batch_size, fidelity)
                for k, yi in zip(keys, y, strict=True)
            ]
            out = jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
        else:
            out = self._ode_constrained(rng_key, y, num_samples, batch_size, fidelity)
        return finish(self._deterministic(), out, y, group_by_chain, num_chains)

    def _ode_constrained(self, rng_key, y, num_samples, batch_size, fidelity):
        """Constrained latent ODE draws (S, ...) for one flat observation ``y`` (M,)."""
        z = jax.random.normal(rng_key, (num_samples, self.spec.dim))
        theta, n_points, dropped = self._ode_unconstrained(y, z, fidelity, batch_size)
        self.diagnostics.record(OdeStats(n_points, dropped))
        return jax.vmap(self.spec.constrain)(jnp.asarray(theta))

    def _ode_unconstrained(self, y, z, fidelity=None, batch_size=4096):
        """Unconstrained ODE draws (S, D) for flat ``y`` and noise ``z`` (S, D), with the
        points used and the weight dropped: the refined weights when ``y`` is refined
        (and ``fidelity`` allows), else the likelihood weights of the prior simulations."""
        ref = self._refinement(y, fidelity)
        if ref is not None:
            from ._refine import ode_draw

            return ode_draw(self._config.ode, ref, z, batch_size)
        return ode_low(self.bank, self._config, y, z, batch_size)

    def ess(self, observations=None, fidelity=None):
        """Effective sample size of the weights the samplers use, per observation.

        For ``G_low``: the likelihood weights over the prior simulations; for a
        refined observation: the importance weights over the high-fidelity
        simulations (``fidelity`` as in :meth:`get_samples`). Returns a float,
        or an array (B,) for a batch. Small values (tens) mean the estimator
        rests on few simulations. ``observations=None``: the data passed to :meth:`run`.
        """
        self._require_sims()
        observations = self._observations(observations)
        y = self._check(observations, warn=False, fidelity=fidelity)
        rows = np.atleast_2d(y)
        refs = [self._refinement(yi, fidelity) for yi in rows]
        out = list(self._low_summary(rows))[1]  # one compiled call; 0 without finite weight
        out = np.asarray([out[i] if r is None else r.ess for i, r in enumerate(refs)])
        return float(out[0]) if y.ndim == 1 else out

    def fidelity(self, observations=None) -> str:
        """Which generator serves a single observation: ``"high"`` once refined, else ``"low"``."""
        y = _model.check_observations(self.spec, self._observations(observations))
        return "high" if self._refinement(y, None) is not None else "low"

    def print_summary(
        self,
        rng_key,
        observations=None,
        num_samples: int = 1000,
        prob: float = 0.9,
        *,
        num_chains: int = 1,
        fidelity=None,
        exclude_deterministic: bool = True,
    ):
        """Print the posterior of one observation as ``MCMC.print_summary`` does.

        Draws ``num_samples`` with :meth:`get_samples` (the key is required:
        nothing is stored between calls, so the table is reproducible),
        prints ``numpyro.diagnostics.print_summary`` of them (mean, std,
        median, the ``prob`` HPDI, n_eff, r_hat; the draws are independent,
        split into ``num_chains`` chains as in :meth:`get_samples`), then a
        line naming the sampler that served (``G_low``, or ``G_high`` for an
        observation refined with :meth:`refine`) with the ESS of its weights
        (:meth:`ess`). ``observations=None``: the data passed to :meth:`run`;
        ``fidelity`` as in :meth:`get_samples`; deterministic sites are left
        out unless ``exclude_deterministic=False``.
        """
        from numpyro.diagnostics import print_summary

        real("prob", prob, 0.0, 1.0, low_open=True, high_open=True)
        y = self._check(observations, warn=False)
        if y.ndim != 1:
            raise ValueError("print_summary takes a single observation, not a batch")
        samples = self.get_samples(
            rng_key, observations, num_samples, fidelity, group_by_chain=True, num_chains=num_chains
        )
        if exclude_deterministic:
            samples = {k: v for k, v in samples.items() if k in self._user_latents}
        print_summary({k: np.asarray(v) for k, v in samples.items()}, prob=prob)
        ref = self._refinement(y, fidelity)
        ess = self.ess(observations, fidelity=fidelity)
        if ref is None:
            n = int(np.sum(self.simulations.valid))
            print(
                f"sampler: G_low (amortized generator); likelihood-weight ESS {ess:.1f} "
                f"of {n} prior simulations"
            )
        else:
            print(
                f"sampler: G_high (refined with {ref.num_high_fidelity} high-fidelity "
                f"simulations); importance-weight ESS {ess:.1f} (G_low's likelihood-weight "
                f"ESS {self.ess(observations, fidelity='low'):.1f})"
            )

    def _refinement(self, y, fidelity):
        """The refinement record serving flat observation ``y`` (M,) at ``fidelity``, or None."""
        if fidelity not in (None, "low", "high"):
            raise ValueError(f"fidelity must be None, 'low' or 'high', got {fidelity!r}")
        if fidelity == "low":
            return None
        ref = self._state.refinements.get(obs_key(y))
        if ref is None and fidelity == "high":
            raise ValueError(
                "no high-fidelity generator for this observation: call .refine(key, "
                "observations, model=...) first"
            )
        return ref

    def to_inference_data(self, rng_key, observations=None, num_samples=1000, **kwargs):
        """Posterior for one observation as ``az.InferenceData``.

        ``observations=None``: the data passed to :meth:`run` (``default_observations``).

        ``posterior`` (latent and deterministic sites, as :meth:`get_samples`
        with ``group_by_chain=True``) has dims ``chain``/``draw``; also ``observed_data``,
        ``prior``/``prior_predictive`` (``prior=True``), ``posterior_predictive``
        (``posterior_predictive=True``), ``log_likelihood`` (default on, for
        ``az.loo``/``az.compare``) and the method's diagnostics in ``attrs``.
        Keyword arguments: ``num_chains``, ``prior``, ``posterior_predictive``,
        ``log_likelihood``, ``method`` (``"generator"`` or ``"ode"``).
        """
        from ._arviz import to_inference_data

        if kwargs.get("method", "generator") == "generator":
            self._require_generator()
        self._require_sims()
        observations = self._observations(observations)
        return to_inference_data(
            rng_key,
            observations,
            num_samples,
            model=self.model,
            state=self._state,
            check=partial(self._check, warn=False),
            samplers={"generator": self.get_samples, "ode": self.sample_ode},
            refinement=self._refinement,
            low_ess=partial(self.ess, fidelity="low"),
            deterministic=self._deterministic(),
            diagnostics=self.diagnostics,
            **kwargs,
        )
