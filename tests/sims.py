"""NumPy-only simulators for the external-simulator tests.

Kept free of JAX imports so that executor workers (process pools, Dask) can
unpickle them cheaply. Environment variables, read at call time:
``MFDIFF_TEST_CALL_LOG`` (append one line per call) and
``MFDIFF_TEST_BLOCK_AFTER`` (block forever once the log has that many lines).
"""

import os
import time

import numpy as np

FAIL_ABOVE = 1.0


def square_or_fail(theta):
    """``theta**2``; raises for ``theta > FAIL_ABOVE`` (a known failure region)."""
    theta = float(theta)
    if theta > FAIL_ABOVE:
        raise ValueError(f"solver diverged at theta={theta:.3f}")
    return np.float32(theta) ** 2


def logged_square(theta):
    """``theta**2``, logging each call to ``$MFDIFF_TEST_CALL_LOG`` ("theta pid" per line)."""
    path = os.environ["MFDIFF_TEST_CALL_LOG"]
    block_after = os.environ.get("MFDIFF_TEST_BLOCK_AFTER")
    if block_after is not None:
        with open(path) as f:
            done = sum(1 for _ in f)
        while done >= int(block_after):  # the parent kills this process meanwhile
            time.sleep(0.05)
    with open(path, "a") as f:
        f.write(f"{float(theta)!r} {os.getpid()}\n")
    return np.float32(theta) ** 2


def wrong_shape(theta):
    """Returns a (2,) array where the model expects a scalar."""
    return np.zeros(2, np.float32)
