"""The model plumbing shared by the baselines: a NumPyro model conditioned on observations,
its unconstrained log densities on one flat vector, prior draws and the ``InferenceData``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer import init_to_sample
from numpyro.infer.util import constrain_fn, initialize_model, potential_energy

from .. import _model
from .._arviz import Groups, az, from_draws, sample_prior

__all__: list[str] = []


def _raw_key(rng_key) -> jax.Array:
    """Return a raw ``uint32[2]`` key for either a typed or a raw ``jax.random`` key."""
    rng_key = jnp.asarray(rng_key)
    if jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(rng_key)
    return rng_key


class _Problem:
    """A model conditioned on observations, with its unconstrained log densities on a flat vector.

    Attributes:
        model: the conditioned model (``raw_model``: as given).
        latent_names: sorted names of the latent (unobserved) sample sites.
        deterministic_names: names of the ``numpyro.deterministic`` sites.
        observed_values: observed site name -> value, from ``observations`` or the model
            arguments (``numpyro.factor`` sites left out).
        free_args: with ``predictive=True``, the ``(args, kwargs)`` of prior and posterior
            predictive draws (:meth:`data_free_arguments`), else None.
        unravel: flat vector (d,) -> dict of unconstrained latent values.
        log_joint: flat (d,) -> scalar, log prior + log likelihood + log|Jacobian|.
        postprocess: flat (d,) -> dict of constrained latent and deterministic sites.
    """

    def __init__(self, model, observations, model_args, model_kwargs, rng_key, predictive=False):
        if not isinstance(observations, dict):
            raise ValueError(
                "`observations` must be a dict mapping observed site names to values, "
                f"got {type(observations).__name__}"
            )
        self.args = tuple(model_args)
        self.kwargs = {} if model_kwargs is None else dict(model_kwargs)
        self.observations = {k: jnp.asarray(v) for k, v in observations.items()}
        self.raw_model = model
        self.model = handlers.condition(model, data=self.observations)

        tr = handlers.trace(handlers.seed(self.model, rng_seed=0)).get_trace(
            *self.args, **self.kwargs
        )
        sample_sites = {k for k, s in tr.items() if s["type"] == "sample"}
        unknown = sorted(set(self.observations) - sample_sites)
        if unknown:
            raise ValueError(
                f"`observations` names {unknown} that are not sample sites of the model "
                f"(sample sites: {sorted(sample_sites)})"
            )
        self.latent_names = sorted(
            k for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]
        )
        # Observed sites of the conditioned model (incl. ``numpyro.factor`` sites): the
        # likelihood. Recorded by name so that the Jacobian factors that numpyro's potential
        # adds for constrained latents (also observed sites) stay in the prior.
        self.observed_names = frozenset(
            k for k, s in tr.items() if s["type"] == "sample" and s["is_observed"]
        )
        self.observed_values = {
            k: np.asarray(tr[k]["value"])
            for k in sorted(self.observed_names)
            if not _model.is_factor(tr[k]["fn"])
        }
        self.deterministic_names = [k for k, s in tr.items() if s["type"] == "deterministic"]
        # arguments of prior/posterior predictive draws, checked before any sampling
        self.free_args = self.data_free_arguments() if predictive else None
        if not self.latent_names:
            raise ValueError("the model has no latent sample sites left after conditioning")

        info = initialize_model(
            _raw_key(rng_key),
            self.model,
            init_strategy=init_to_sample,
            model_args=self.args,
            model_kwargs=self.kwargs,
        )
        flat, self.unravel = ravel_pytree(info.param_info.z)
        self.dim = flat.shape[0]
        self._potential = info.potential_fn
        self._postprocess = info.postprocess_fn

    # -- densities on the flat unconstrained vector
    def log_joint(self, x: jax.Array) -> jax.Array:
        return -self._potential(self.unravel(x))

    def log_prior(self, x: jax.Array) -> jax.Array:
        """Log prior density in unconstrained space (Jacobian included), observed sites off."""
        model = _DropSites(self.model, self.observed_names)
        return -potential_energy(model, self.args, self.kwargs, self.unravel(x))

    def log_likelihood(self, x: jax.Array) -> jax.Array:
        """Sum of the observed sites' log probabilities (scaled as in the model)."""
        params = constrain_fn(self.model, self.args, self.kwargs, self.unravel(x))
        sub = handlers.substitute(handlers.seed(self.model, rng_seed=0), data=params)
        tr = handlers.trace(sub).get_trace(*self.args, **self.kwargs)
        total = jnp.zeros(())
        for site in tr.values():
            if site["type"] == "sample" and site["name"] in self.observed_names:
                lp = site["fn"].log_prob(site["value"])
                if site["scale"] is not None:
                    lp = site["scale"] * lp
                total = total + jnp.sum(lp)
        return total

    def postprocess(self, x: jax.Array) -> dict[str, jax.Array]:
        return self._postprocess(self.unravel(x))

    # -- prior draws, flattened in unconstrained space
    def prior_draw(self, rng_key: jax.Array) -> jax.Array:
        tr = handlers.trace(handlers.seed(self.model, rng_seed=rng_key)).get_trace(
            *self.args, **self.kwargs
        )
        z = {k: biject_to(tr[k]["fn"].support).inv(tr[k]["value"]) for k in self.latent_names}
        return ravel_pytree(z)[0]

    def data_free_arguments(self) -> tuple[tuple, dict]:
        """Model arguments with the data left out (``None``), so that the model as given
        simulates every observed site (``_model.split_data_arguments``); a ``ValueError``
        names the sites whose data is fixed inside the model."""
        args, kwargs, data = _model.split_data_arguments(self.raw_model, self.args, self.kwargs)
        fixed = sorted(set(self.observed_values) - set(self.observations) - set(data))
        if fixed:
            raise ValueError(
                f"prior and posterior_predictive simulate the observed sites, but site(s) "
                f"{fixed} carry data fixed inside the model: pass it in `observations`, or as "
                "a model argument that defaults to None"
            )
        return args, kwargs

    def inference_data(
        self, rng_key, posterior, stats, meta, *, prior, posterior_predictive, log_likelihood
    ) -> az.InferenceData:
        """``az.InferenceData`` of ``posterior`` (chains, draws, *site_shape) with the groups of
        ``MFDiff.to_inference_data`` (``_arviz.from_draws``); the prior draws (one chain, as
        many as the posterior's) and the posterior predictive use keys folded from ``rng_key``.
        """
        k_prior, k_pp = jax.random.split(jax.random.fold_in(rng_key, 1))
        args, kwargs = (self.args, self.kwargs) if self.free_args is None else self.free_args
        draws = prior_predictive = None
        if prior:
            n = int(np.prod(next(iter(posterior.values())).shape[:2]))
            sites = [*self.latent_names, *self.deterministic_names]
            draws, prior_predictive = sample_prior(
                self.raw_model, k_prior, n, sites, list(self.observed_values), args, kwargs
            )
        groups = Groups(posterior_predictive, log_likelihood, draws, prior_predictive, stats, meta)
        return from_draws(
            self.raw_model,
            posterior,
            self.observed_values,
            k_pp,
            observed_sites=list(self.observed_values),
            model_args=args,
            model_kwargs=kwargs,
            groups=groups,
        )


class _DropSites(numpyro.primitives.Messenger):
    """Handler that zeroes the log probability of the sample sites named in ``names``."""

    def __init__(self, fn, names):
        self.names = names
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["name"] in self.names:
            msg["fn"] = msg["fn"].mask(False)
