"""NumPyro model plumbing: site discovery, prior simulation and likelihoods.

The latent sites are the prior; the observed sites carry the simulator
output and its noise. Everything here works on flat unconstrained vectors
``theta`` of size ``D`` (``jax.flatten_util.ravel_pytree`` order) and flat
observation vectors ``y`` of size ``M``.

Modules: ``_sites`` (tracing, site kinds, data arguments), ``_spec`` (the model's
:class:`ModelSpec` and the checks against it), ``_sims`` (prior simulations),
``_density`` (prior, likelihood and deterministic sites), ``_reparam`` (automatic
non-centring). Callers use this
package's names (``_model.simulate``...), so that tests can patch them here.
"""

from ._density import deterministic_fn, log_likelihood, log_prior_fn
from ._reparam import REPARAM, auto_reparam_sites, hidden_sites, reparam_model

# private helpers other modules use: _io and _mfdiff (_simulate_one), the baselines
# (_is_factor), tests/test_model_features.py (_same_support)
from ._sims import (
    Simulations,
    _simulate_one,  # noqa: F401
    simulate,
)
from ._sites import (
    _is_factor,  # noqa: F401
    data_arguments,
    split_data_arguments,
    with_data,
)
from ._spec import (
    ModelSpec,
    _same_support,  # noqa: F401
    check_high_fidelity,
    check_observations,
    check_same_latents,
    inspect_model,
    obs_tag,
)

__all__ = [
    "ModelSpec",
    "Simulations",
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
    "obs_tag",
]
