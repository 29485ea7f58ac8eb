"""NumPyro models calling the NumPy simulators of ``sims`` through ``external_simulator``.

``jax_quadratic_fail`` is the same model in pure JAX (NaN where the external
one raises): same keys give the same latent draws and observations.
"""

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import sims

from numpyro_mfdiff import external_simulator

SCALAR = jax.ShapeDtypeStruct((), jnp.float32)
square_or_fail = external_simulator(sims.square_or_fail, SCALAR)
logged_square = external_simulator(sims.logged_square, SCALAR)


def ext_quadratic_fail(y=None):
    """``theta ~ U(-2, 2)``, ``y ~ N(theta^2, 0.1^2)``; the simulator raises for theta > 1."""
    theta = numpyro.sample("theta", dist.Uniform(-2.0, 2.0))
    numpyro.sample("y", dist.Normal(square_or_fail(theta), 0.1), obs=y)


def jax_quadratic_fail(y=None):
    theta = numpyro.sample("theta", dist.Uniform(-2.0, 2.0))
    mean = jnp.where(theta > sims.FAIL_ABOVE, jnp.nan, theta**2)
    numpyro.sample("y", dist.Normal(mean, 0.1), obs=y)


def ext_quadratic_logged(y=None):
    """Quadratic model whose simulator logs its calls (see ``sims.logged_square``)."""
    theta = numpyro.sample("theta", dist.Uniform(-2.0, 2.0))
    numpyro.sample("y", dist.Normal(logged_square(theta), 0.1), obs=y)
