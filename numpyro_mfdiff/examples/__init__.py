"""Example models from the paper, with their exact posteriors where they exist.

One private module per example (``_quadratic``, ``_lorenz``, ``_ou``, ``_runaway``,
``_burgers``), the time-grid check of the fixed-step solvers in ``_grid``; the public
names are all here.
"""

from __future__ import annotations

from . import _burgers, _lorenz, _ou, _quadratic, _runaway
from ._burgers import *  # noqa: F403
from ._lorenz import *  # noqa: F403
from ._ou import *  # noqa: F403
from ._quadratic import *  # noqa: F403
from ._runaway import *  # noqa: F403

__all__ = _quadratic.__all__ + _lorenz.__all__ + _burgers.__all__ + _ou.__all__ + _runaway.__all__
