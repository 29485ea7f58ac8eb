"""The training-free diffusion: forward schedules and time grids (``_schedule``), the
Monte Carlo denoiser and score over weighted points (``_score``), the probability-flow
ODE's solvers (``_ode``) and the labelling of ``(y, z, theta)`` triples (``_label``).
A new solver goes in ``_ode``; a new schedule in ``_schedule``."""
