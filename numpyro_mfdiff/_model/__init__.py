"""NumPyro model plumbing: site discovery, prior simulation and likelihoods.

The latent sites are the prior; the observed sites carry the simulator
output and its noise. Everything here works on flat unconstrained vectors
``theta`` of size ``D`` (``jax.flatten_util.ravel_pytree`` order) and flat
observation vectors ``y`` of size ``M``.

Modules: ``_sites`` (tracing, site kinds, data arguments), ``_spec`` (the model's
:class:`ModelSpec` and the checks against it), ``_sims`` (prior simulations),
``_density`` (prior, likelihood and deterministic sites), ``_reparam`` (automatic
non-centring), ``_simulate`` (chunked, checkpointed simulation runs, executors),
``_external`` (non-JAX simulators inside a model), ``_expfam`` (exponential-family
likelihoods as one matmul). The other layers use the names below (``_model.simulate``...).
"""

from ._density import deterministic_fn, log_likelihood, log_prior_fn
from ._reparam import (
    REPARAM,
    Centring,
    auto_reparam_sites,
    centring,
    hidden_sites,
    reparam_model,
)
from ._sims import BatchSimulator, Simulations, batch_simulator, simulate, simulate_one
from ._sites import data_arguments, is_factor, split_data_arguments, with_data
from ._spec import (
    ModelSpec,
    check_high_fidelity,
    check_observations,
    check_same_latents,
    inspect_model,
    obs_tag,
    same_support,
)

__all__ = [
    "ModelSpec",
    "BatchSimulator",
    "Simulations",
    "batch_simulator",
    "simulate_one",
    "is_factor",
    "same_support",
    "inspect_model",
    "split_data_arguments",
    "data_arguments",
    "with_data",
    "simulate",
    "log_likelihood",
    "check_observations",
    "check_same_latents",
    "check_high_fidelity",
    "log_prior_fn",
    "deterministic_fn",
    "REPARAM",
    "auto_reparam_sites",
    "reparam_model",
    "hidden_sites",
    "Centring",
    "centring",
    "obs_tag",
]
