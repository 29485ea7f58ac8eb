import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpyro  # noqa: E402

numpyro.set_platform("cpu")
