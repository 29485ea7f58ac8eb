"""Runaway electrons: a reduced 0-D stand-in for the paper's kinetic runaway-electron solver.

**This is a stand-in.** The paper's runaway-electron example uses a specialised
relativistic kinetic solver that is not available here. This module reproduces its
*structure* (a parameterised plasma model whose output is the runaway-electron fraction
as a function of electric field, density and temperature, solved at two fidelities) with
the 0-D fluid model used in many disruption studies, for example the GO code
(Fehér et al., Plasma Phys. Control. Fusion 53, 035014, 2011) and Smith et al.
(Phys. Plasmas 13, 102502, 2006):

    d f / dt = (S_D(E, n_e, T_e) + Gamma_av(E, n_e, T_e) f) (1 - f),

with ``f = n_re / n_e`` the runaway fraction (the factor ``1 - f`` keeps ``f <= 1``),
hydrogen plasma (``Z = 1``) and SI units (``T_e`` in joules inside the formulas):

- Coulomb logarithm (Wesson, *Tokamaks*): ``lnL = 14.9 - 0.5 ln(n_e / 1e20) + ln(T_e / 1 keV)``;
- Connor-Hastie critical field: ``E_c = n_e e^3 lnL / (4 pi eps0^2 m_e c^2)``;
- Dreicer field: ``E_D = E_c m_e c^2 / T_e``;
- thermal collision frequency: ``nu_ee = n_e e^4 lnL / (4 pi eps0^2 m_e^2 v_te^3)``,
  ``v_te = sqrt(2 T_e / m_e)``;
- Dreicer generation per electron (Connor & Hastie, Nucl. Fusion 15, 415, 1975,
  without the relativistic correction; ``C = 0.35``):
  ``S_D = C nu_ee (E_D / E)^(3 (1 + Z) / 16) exp(-E_D / (4 E) - sqrt((1 + Z) E_D / E))``;
- avalanche growth rate (Rosenbluth & Putvinski, Nucl. Fusion 37, 1355, 1997):
  ``Gamma_av = (E / E_c - 1) / (tau_c lnL) sqrt(pi / (3 (Z + 5)))``, with the relativistic
  collision time ``tau_c = 4 pi eps0^2 m_e^2 c^3 / (n_e e^4 lnL)`` (zero below ``E_c``).

Simplifications against those papers: one (thermal) Coulomb logarithm everywhere, no
relativistic correction to the Dreicer rate, no hot-tail generation (a fixed seed
instead), no current-quench feedback of the runaways on the field.

A thermal quench drives the time dependence: ``T_e(t) = T_f + (T_0 - T_f) exp(-t / t_TQ)``
(``T_0 = 200 eV``, ``t_TQ = 1 ms``), and at constant current density the Ohmic field
follows the Spitzer resistivity, ``E(t) = E_f (T_f / T_e(t))^(3/2)``. The unknowns are the
final field ``E_f`` (V/m), the density ``n_e`` (``1e19 m^-3``) and the final temperature
``T_f`` (eV); the seed is ``f(0) = 1e-12``. Observed: ``log10 f`` at ``t = 4, 6, ..., 14 ms``
with ``N(0, 0.3^2)`` noise (decades).

Fidelities: explicit Euler with a fixed step of 1 ms (low; it misses the Dreicer burst's
shape and under-grows the avalanche) and classical RK4 with a fixed step of 0.1 ms (high;
2e-4 decades from a 50 times finer solve at the true parameters).
With constant parameters (``T_0 = T_f``) the equation is a Riccati equation with a closed
form (:func:`runaway_closed_form`), which the tests use to check the solvers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from ._grid import grid_steps

__all__ = [
    "RUNAWAY_TRUE",
    "RUNAWAY_TIMES",
    "RUNAWAY_NOISE",
    "RUNAWAY_COARSE_DT",
    "RUNAWAY_FINE_DT",
    "runaway_rates",
    "runaway_solve",
    "runaway_closed_form",
    "runaway_low",
    "runaway_high",
]

# SI constants (CODATA 2018)
_E = 1.602176634e-19  # elementary charge, C
_ME = 9.1093837015e-31  # electron mass, kg
_C = 299_792_458.0  # speed of light, m/s
_EPS0 = 8.8541878128e-12  # vacuum permittivity, F/m
_Z = 1.0  # effective charge (hydrogen)
_CH = 0.35  # Connor-Hastie constant of order one
_EC = 1e19 * _E**3 / (4 * np.pi * _EPS0**2 * _ME * _C**2)  # E_c / (n_e [1e19] lnL), V/m
_MC2 = _ME * _C**2 / _E  # m_e c^2 in eV
# nu_ee / (n_e [1e19] lnL / T_e[eV]^1.5), 1/s
_NU = 1e19 * _E**4 / (4 * np.pi * _EPS0**2 * _ME**2 * (2 * _E / _ME) ** 1.5)
_TAU = _ME * _C / _E  # tau_c * E_c, s V/m

RUNAWAY_TRUE = {"E_f": 8.0, "n_e": 1.0, "T_f": 10.0}  # V/m, 1e19 m^-3, eV
RUNAWAY_TIMES = tuple(2.0 * k for k in range(2, 8))  # ms
RUNAWAY_NOISE = 0.3  # decades of log10 f
RUNAWAY_COARSE_DT = 1.0  # ms
RUNAWAY_FINE_DT = 0.1  # ms
RUNAWAY_T0 = 200.0  # eV, temperature before the thermal quench
RUNAWAY_TQ = 1.0  # ms, thermal-quench time
RUNAWAY_SEED = 1e-12  # runaway fraction at t = 0
_PRIOR = {"E_f": (np.log(8.0), 0.3), "n_e": (0.0, 0.3), "T_f": (np.log(10.0), 0.1)}


def runaway_rates(e_field, n_e, t_e):
    """Dreicer generation per electron ``S_D`` and avalanche growth rate ``Gamma_av``, in 1/s.

    Args:
        e_field: parallel electric field, V/m.
        n_e: electron density, ``1e19 m^-3``.
        t_e: electron temperature, eV.

    Returns:
        ``(S_D, Gamma_av)``, broadcast arrays (formulas in the module docstring).
    """
    # float32-safe: the SI constants are combined in float64 Python scalars first
    lnl = 14.9 - 0.5 * jnp.log(n_e / 10.0) + jnp.log(t_e / 1e3)
    e_c = _EC * n_e * lnl  # V/m
    r = e_c * _MC2 / t_e / e_field  # E_D / E
    nu_ee = _NU * n_e * lnl / t_e**1.5  # 1/s
    s_d = _CH * nu_ee * r ** (3 * (1 + _Z) / 16) * jnp.exp(-r / 4 - jnp.sqrt((1 + _Z) * r))
    tau_c = _TAU / e_c  # s; = 4 pi eps0^2 m_e^2 c^3 / (n_e e^4 lnL)
    gamma = jnp.maximum(e_field / e_c - 1, 0.0) / (tau_c * lnl) * jnp.sqrt(jnp.pi / (3 * (_Z + 5)))
    return s_d, gamma


def _rhs(t, f, params, t0):
    """``df/dt`` in 1/ms at time ``t`` (ms)."""
    e_f, n_e, t_f = params
    temp = t_f + (t0 - t_f) * jnp.exp(-t / RUNAWAY_TQ)
    e_field = e_f * (t_f / temp) ** 1.5
    s_d, gamma = runaway_rates(e_field, n_e, temp)
    return 1e-3 * (s_d + gamma * f) * (1 - f)


def runaway_solve(params, times=RUNAWAY_TIMES, dt=RUNAWAY_FINE_DT, method="rk4", t0=RUNAWAY_T0):
    """Runaway fraction ``f`` at ``times`` (ms) by a fixed-step integrator from ``f(0) = 1e-12``.

    Args:
        params: ``(E_f, n_e, T_f)`` scalars (V/m, ``1e19 m^-3``, eV).
        times: observation times in ms, each a multiple of ``dt``.
        dt: step in ms.
        method: ``"euler"`` (explicit Euler) or ``"rk4"`` (classical Runge-Kutta).
        t0: temperature before the quench (eV); ``t0 = T_f`` gives constant rates.

    Returns:
        ``f`` at ``times``, shape ``(len(times),)``, clipped to ``[1e-30, 1]``. Plain JAX
        (``lax.scan``): vmap-able and differentiable.
    """
    if method not in ("euler", "rk4"):
        raise ValueError(f"method must be 'euler' or 'rk4', got {method!r}")
    steps = grid_steps(times, dt)

    def f(t, x):
        return _rhs(t, x, params, t0)

    def step(x, n):
        t = n * dt
        if method == "euler":
            x = x + dt * f(t, x)
        else:
            k1 = f(t, x)
            k2 = f(t + 0.5 * dt, x + 0.5 * dt * k1)
            k3 = f(t + 0.5 * dt, x + 0.5 * dt * k2)
            k4 = f(t + dt, x + dt * k3)
            x = x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        x = jnp.clip(x, 1e-30, 1.0)
        return x, x

    x0 = jnp.asarray(RUNAWAY_SEED, jnp.result_type(float))
    _, path = jax.lax.scan(step, x0, jnp.arange(int(steps.max())))
    return path[steps - 1]


def runaway_closed_form(params, times=RUNAWAY_TIMES):
    """Exact ``f`` at ``times`` (ms) for constant rates (no quench: ``T_e = T_f``, ``E = E_f``).

    ``df/dt = (s + g f)(1 - f)`` integrates to ``(s + g f) / (1 - f) = K e^{(s + g) t}``,
    ``K = (s + g f_0) / (1 - f_0)``, so ``f = (K e^{(s + g) t} - s) / (g + K e^{(s + g) t})``.
    """
    e_f, n_e, t_f = params
    s, g = (1e-3 * np.asarray(v, np.float64) for v in runaway_rates(e_f, n_e, t_f))
    k = (s + g * RUNAWAY_SEED) / (1 - RUNAWAY_SEED)
    ke = k * np.exp((s + g) * np.asarray(times, np.float64))
    return (ke - s) / (g + ke)


def _runaway(dt, method, y):
    e_f = numpyro.sample("E_f", dist.LogNormal(*_PRIOR["E_f"]))
    n_e = numpyro.sample("n_e", dist.LogNormal(*_PRIOR["n_e"]))
    t_f = numpyro.sample("T_f", dist.LogNormal(*_PRIOR["T_f"]))
    frac = runaway_solve((e_f, n_e, t_f), dt=dt, method=method)
    numpyro.sample("y", dist.Normal(jnp.log10(frac), RUNAWAY_NOISE).to_event(1), obs=y)


def runaway_low(y=None):
    """Runaway electrons (reduced 0-D stand-in), low fidelity: explicit Euler, step 1 ms.

    Prior (independent): ``E_f ~ LogNormal(log 8, 0.3)`` V/m, ``n_e ~ LogNormal(0, 0.3)``
    ``x 1e19 m^-3``, ``T_f ~ LogNormal(log 10, 0.1)`` eV. ``y`` (6,) is ``log10`` of the
    runaway fraction at ``t = 4, 6, ..., 14 ms`` plus ``N(0, 0.3^2)`` noise. See the docstring
    of ``numpyro_mfdiff/examples/_runaway.py`` for the equations and the published models
    it follows.
    The coarse step misses the shape of the Dreicer burst at the end of the thermal quench
    (``log10 f`` at 4 ms is 1.3 decades low at the true parameters), which moves the
    posterior of ``T_f`` up by about 1.5 posterior sds.
    """
    _runaway(RUNAWAY_COARSE_DT, "euler", y)


def runaway_high(y=None):
    """Runaway electrons (reduced 0-D stand-in), high fidelity: RK4 with a step of 0.1 ms.

    Same prior, times and noise as :func:`runaway_low`.
    """
    _runaway(RUNAWAY_FINE_DT, "rk4", y)
