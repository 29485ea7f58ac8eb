"""numpyro_mfdiff: multi-fidelity posterior estimation with training-free conditional diffusion.

The public surface is :class:`MFDiff`; the numerical core (schedules, the
Monte Carlo denoiser, ODE steps) is re-exported for users who compose it.
"""

from ._config import Config
from ._mfdiff import MFDiff
from ._model._external import external_simulator
from ._refining import RefineSettings
from .diffusion._ode import DDIM, AbstractSolver, DPMSolver2M, DPMSolver3M, ddim_step, solve_ode
from .diffusion._schedule import (
    AbstractSchedule,
    CosineSchedule,
    LinearSchedule,
    geometric_grid,
    uniform_grid,
)
from .diffusion._score import denoise, score
from .refine._weights import ess

__version__ = "0.1.0"

__all__ = [
    "MFDiff",
    "Config",
    "RefineSettings",
    "external_simulator",
    "AbstractSchedule",
    "LinearSchedule",
    "CosineSchedule",
    "geometric_grid",
    "uniform_grid",
    "denoise",
    "score",
    "ess",
    "ddim_step",
    "solve_ode",
    "AbstractSolver",
    "DDIM",
    "DPMSolver2M",
    "DPMSolver3M",
]
