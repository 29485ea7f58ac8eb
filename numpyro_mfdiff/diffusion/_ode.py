"""Reverse-time probability-flow ODE with exponential-integrator steps.

Step rules on the denoiser ``m``, one small final class each, with its order:
:class:`DDIM` (first order, exact when ``m`` is constant over a step) and the
multistep rules of DPM-Solver++, :class:`DPMSolver2M` (``m`` extrapolated
linearly in ``lambda = log(alpha / beta)`` from the previous step) and
:class:`DPMSolver3M` (quadratically from the two previous steps), at no extra
denoiser cost. Wherever a solver is taken, its name (``"ddim"``, ``"dpm2m"``,
``"dpm3m"``) is accepted too.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._schedule import AbstractSchedule
from ._score import denoise, denoise_fused, fuse_points, prune_points

__all__ = [
    "AbstractSolver",
    "DDIM",
    "DPMSolver2M",
    "DPMSolver3M",
    "get_solver",
    "integrate",
    "ddim_step",
    "solve_ode",
    "solve_ode_jit",
    "stop_ratios",
    "sample_pruned",
    "auto_block_size",
    "row_sharding",
    "SOLVERS",
]


def ddim_step(x, m, alpha_t, beta_t, alpha_s, beta_s):
    """One step from ``t`` to ``s < t``: ``alpha_s m + (beta_s / beta_t)(x - alpha_t m)``.

    Exact when the denoised mean ``m`` is constant over the step.
    """
    return alpha_s * m + (beta_s / beta_t) * (x - alpha_t * m)


class AbstractSolver(eqx.Module):
    """One step rule of the reverse probability-flow ODE in ``lambda = log(alpha / beta)``.

    A solver turns the grid into per-step coefficients once, then steps a carry whose
    first entry is the state ``x`` (B, D); ``m_fn(x, alpha, beta)`` is the denoiser.
    ``order`` is the global order of convergence in the step length.
    """

    name: eqx.AbstractClassVar[str]
    order: eqx.AbstractClassVar[int]

    @abc.abstractmethod
    def coefficients(self, alphas, betas, h, r):
        """Per-step coefficients (a tuple of arrays with one row per step) for the grid's
        ``alphas``, ``betas`` (S + 1,), step lengths ``h`` (S,) in ``lambda`` and ratios
        ``r`` (S,) of the previous step length to this one (0 on the first step)."""

    @abc.abstractmethod
    def init(self, x0):
        """The carry at the first grid time, from the state ``x0`` (B, D)."""

    @abc.abstractmethod
    def step(self, m_fn, carry, coeffs):
        """One step: ``(carry, coefficients of this step) -> (carry, None)`` (a scan body)."""


class _AbstractMultistep2(AbstractSolver):
    """DDIM on ``m + c (m - m_prev)``, ``c = slope / (2 r)``: the denoised mean extrapolated
    linearly in ``lambda`` from the previous step, by ``slope`` (0: none)."""

    slope: eqx.AbstractClassVar[float]

    def coefficients(self, alphas, betas, h, r):
        return alphas[:-1], betas[:-1], alphas[1:], betas[1:], r

    def init(self, x0):
        return x0, jnp.zeros_like(x0)

    def step(self, m_fn, carry, coeffs):
        x, m_prev = carry
        a_t, b_t, a_s, b_s, r_i = coeffs
        m = m_fn(x, a_t, b_t)
        c = jnp.where(r_i > 0, self.slope * 0.5 / jnp.where(r_i > 0, r_i, 1.0), 0.0)
        d = (1.0 + c) * m - c * m_prev
        return (ddim_step(x, d, a_t, b_t, a_s, b_s), m), None


class DDIM(_AbstractMultistep2):
    """First order: :func:`ddim_step` with the denoised mean at the start of the step."""

    name: ClassVar[str] = "ddim"
    order: ClassVar[int] = 1
    slope: ClassVar[float] = 0.0


class DPMSolver2M(_AbstractMultistep2):
    """DPM-Solver++(2M): the denoised mean extrapolated linearly in ``lambda`` from the
    previous step (the first step is DDIM)."""

    name: ClassVar[str] = "dpm2m"
    order: ClassVar[int] = 2
    slope: ClassVar[float] = 1.0


class DPMSolver3M(AbstractSolver):
    """DPM-Solver++(3M) (Lu et al. 2022, data prediction): the denoised mean extrapolated
    quadratically in ``lambda`` from the two previous steps (DDIM, then 2M, to start).

    ``D2`` is the whole ``h^2 m''`` that the third-order term ``-alpha phi_3 h^2 m''``
    needs (DPM-Solver's reference form takes half of it and measures order 2 on a
    Gaussian problem with a known flow; this one measures 3.9: ``tests/test_ode_order.py``)."""

    name: ClassVar[str] = "dpm3m"
    order: ClassVar[int] = 3

    def coefficients(self, alphas, betas, h, r):
        """``x_s = (beta_s / beta_t) x + a0 D0 + a1 D1 + a2 D2`` with ``D0, D1, D2`` the
        denoised mean and its first and second divided differences in ``lambda``
        (``r0, r1`` the two previous step lengths over this one, 0 where the history is
        missing)."""
        r1 = jnp.concatenate([jnp.zeros(2), h[:-2] / h[2:]])[: h.shape[0]]
        em = jnp.expm1(-h)  # e^-h - 1
        a_s = alphas[1:]
        a0 = -a_s * em
        a1 = a_s * (em / h + 1.0)
        a2 = -a_s * ((em + h) / h**2 - 0.5)
        return betas[1:] / betas[:-1], alphas[:-1], betas[:-1], a0, a1, a2, r, r1

    def init(self, x0):
        return x0, jnp.zeros_like(x0), jnp.zeros_like(x0)

    def step(self, m_fn, carry, coeffs):
        x, m1, m2 = carry
        ratio, a_t, b_t, a0, a1, a2, r0, r1 = coeffs
        m0 = m_fn(x, a_t, b_t)
        d10 = jnp.where(r0 > 0, (m0 - m1) / jnp.where(r0 > 0, r0, 1.0), 0.0)
        d11 = jnp.where(r1 > 0, (m1 - m2) / jnp.where(r1 > 0, r1, 1.0), 0.0)
        w = jnp.where(r1 > 0, 1.0 / jnp.where(r1 > 0, r0 + r1, 1.0), 0.0)
        d1 = d10 + (r0 * w) * (d10 - d11)
        d2 = 2.0 * w * (d10 - d11)  # ~ h^2 m'': the third-order term needs it whole
        return (ratio * x + a0 * m0 + a1 * d1 + a2 * d2, m0, m1), None


_BY_NAME = {cls.name: cls for cls in (DDIM, DPMSolver2M, DPMSolver3M)}
SOLVERS = tuple(_BY_NAME)


def get_solver(solver) -> AbstractSolver:
    """The solver for ``solver``: an :class:`AbstractSolver`, or one of the names in
    ``SOLVERS``; a ``ValueError`` otherwise."""
    if isinstance(solver, AbstractSolver):
        return solver
    if isinstance(solver, str) and solver in _BY_NAME:
        return _BY_NAME[solver]()
    raise ValueError(f"solver must be one of {SOLVERS} or an AbstractSolver, got {solver!r}")


def _steps(solver, alphas, betas):
    """``solver``'s per-step coefficients on the grid ``alphas``, ``betas`` (S + 1,)."""
    lam = jnp.log(alphas) - jnp.log(betas)
    h = lam[1:] - lam[:-1]
    # ratio of the previous step length to this one; 0 on the first step (-> DDIM)
    r = jnp.concatenate([jnp.zeros(1), h[:-1] / h[1:]])
    return solver.coefficients(alphas, betas, h, r)


def integrate(solver, m_fn, x0, alphas, betas):
    """The state at the last grid time: ``solver`` (or its name) from ``x0`` (B, D) at the
    first, over the grid's ``alphas``, ``betas`` (S + 1,), with the denoiser
    ``m_fn(x, alpha, beta) -> (B, D)``. Returns (B, D)."""
    solver = get_solver(solver)
    carry, _ = jax.lax.scan(
        lambda c, k: solver.step(m_fn, c, k), solver.init(x0), _steps(solver, alphas, betas)
    )
    return carry[0]


# weights per denoiser call above which shared points are split into blocks
# (running log-sum-exp), and the number of weights per block then. Measured on
# 2 CPU cores (B = 256, N = 20,000, D = 1): blocks of 2^20 weights (4 MB, in L2)
# 1.4x faster than 2^18 or 2^22 and 2x faster than one 5 x 10^6 block
AUTO_BLOCK_WEIGHTS = 2**20


def auto_block_size(batch, num_points):
    """Block size :func:`solve_ode` uses by default: ``None`` (one block) while
    ``batch * num_points <= AUTO_BLOCK_WEIGHTS``, else the points split evenly
    into the fewest blocks of at most ``AUTO_BLOCK_WEIGHTS / batch`` (at least 256)
    points, rounded up to a multiple of 8 (little padding)."""
    if batch * num_points <= AUTO_BLOCK_WEIGHTS:
        return None
    most = max(256, AUTO_BLOCK_WEIGHTS // batch)
    nb = -(-num_points // most)
    per_block = -(-num_points // nb)
    return -(-per_block // 8) * 8


def solve_ode(
    z,
    points,
    log_lik,
    schedule: AbstractSchedule,
    grid,
    solver: str | AbstractSolver = "dpm2m",
    block_size: int | None = None,
    fused: bool | None = None,
    denoise_last: bool = True,
    stop=None,
):
    """Integrate the probability-flow ODE from noise to posterior samples.

    Args:
        z: standard normal noise, (B, D).
        points: prior samples (K, D) or per-row (B, K, D), standardised coordinates.
        log_lik: (K,) or (B, K) log-weights of the points.
        schedule: forward-diffusion schedule.
        grid: decreasing times (S + 1,), from ``t_max`` to ``t_min``.
        solver: an :class:`AbstractSolver` or its name: ``"ddim"`` (first order),
            ``"dpm2m"`` or ``"dpm3m"`` (second- or third-order multistep).
        block_size: for shared points, points per block of the running
            log-sum-exp (memory ``B x block_size`` per step); default
            :func:`auto_block_size`.
        fused: for shared points, use :func:`denoise_fused` (one matmul for the
            kernel and likelihood terms, one for numerator and normaliser);
            ``False`` uses the plain :func:`denoise` (the reference). Default
            ``None``: fused on the CPU backend, plain elsewhere (measured on an
            H200: plain 2-5x faster there, fused 1-3.6x faster on 2 CPU cores).

        denoise_last: return the denoised mean at the final time (default);
            ``False`` returns the state ``x / alpha`` there instead: a sample of
            the points' measure smoothed by a Gaussian of sd ``beta / alpha``
            (early stopping; see ``refine(..., smoothing=...)``).
        stop: per-row early stopping, (B,) noise ratios ``beta / alpha``: a row
            with ``stop > 0`` returns the state ``x / alpha`` at the last grid
            time whose ratio is at least ``stop`` (that ratio:
            :func:`stop_ratios`); rows with ``stop <= 0`` follow ``denoise_last``.

    Returns:
        Samples of shape (B, D).
    """
    solver = get_solver(solver)
    alphas = schedule.alpha(grid)
    betas = schedule.beta(grid)
    x0 = betas[0] * z  # the diffused marginal at t_max is ~ N(0, beta^2) in standardised coords
    if fused is None:
        fused = jax.default_backend() == "cpu"
    if fused and points.ndim == 2:
        if block_size is None:
            block_size = auto_block_size(z.shape[0], points.shape[0])
        mats = fuse_points(points, log_lik, block_size)  # once: they do not depend on t

        def m_fn(x, a, b):
            return denoise_fused(x, a, b, *mats)
    else:

        def m_fn(x, a, b):
            return denoise(x, a, b, points, log_lik)

    def inner(carry, k):
        return solver.step(m_fn, carry, k)

    init, coeffs = solver.init(x0), _steps(solver, alphas, betas)
    if stop is None:
        carry, _ = jax.lax.scan(inner, init, coeffs)
    else:  # keep, per row, the last state whose noise ratio is still >= stop
        stop = jnp.asarray(stop, z.dtype)[:, None]

        def keep(c, k):
            (carry, held), (k_in, a_s, ratio_s) = c, k
            carry, _ = inner(carry, k_in)
            return (carry, jnp.where(ratio_s >= stop, carry[0] / a_s, held)), None

        (carry, held), _ = jax.lax.scan(
            keep, (init, jnp.zeros_like(z)), (coeffs, alphas[1:], betas[1:] / alphas[1:])
        )
    x = carry[0]
    out = x / alphas[-1] if not denoise_last else m_fn(x, alphas[-1], betas[-1])
    return out if stop is None else jnp.where(stop > 0, held, out)


def stop_ratios(schedule: AbstractSchedule, grid, stop):
    """The noise ratio at which :func:`solve_ode` stops each row for ``stop`` (B,):
    the smallest grid ratio ``beta / alpha`` (after the first step) at least
    ``stop``, 0 where ``stop <= 0`` (denoised). Returns (B,)."""
    ratios = (schedule.beta(grid) / schedule.alpha(grid))[1:]
    stop = jnp.asarray(stop)[:, None]
    used = jnp.min(jnp.where(ratios >= stop, ratios, jnp.inf), axis=1)
    return jnp.where(stop[:, 0] > 0, used, 0.0)


@eqx.filter_jit
def solve_ode_jit(z, points, log_lik, schedule, grid, solver, denoise_last=True):
    """:func:`solve_ode`, compiled once per shape, schedule, solver and end point."""
    return solve_ode(z, points, log_lik, schedule, grid, solver, denoise_last=denoise_last)


def row_sharding(devices=None):
    """Sharding that splits axis 0 (rows of states) over ``devices`` (default
    ``jax.devices()``) and replicates the rest; ``None`` with a single device.

    The Monte Carlo score of each row only needs the (replicated) prior points,
    so rows shard with no communication but the final gather.
    """
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) < 2:
        return None
    mesh = jax.sharding.Mesh(np.asarray(devices), ("rows",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("rows"))


def sample_pruned(
    z, points, log_w, schedule, grid, solver, prune_tol, batch_size=4096, denoise_last=True
):
    """ODE samples for one observation, from its fewest points holding ``1 - prune_tol``
    of the weight.

    ``z``: (S, D) noise; ``points``: (N, D) standardised; ``log_w``: (N,) NumPy
    log-weights (``-inf`` excluded). Solved in compiled batches of
    ``batch_size``, each split over the devices (:func:`row_sharding`);
    ``denoise_last`` as in :func:`solve_ode`.
    Returns ``(u (S, D) NumPy, points_used, dropped_mass)``.
    """
    idx, w_kept, dropped = prune_points(np.asarray(log_w, np.float64), prune_tol)
    # gathers, padding and joins on the host: on device arrays each would compile
    # once per shape, and the shapes change with every observation
    pts = np.asarray(points, np.float32)[idx]
    w_kept = np.asarray(w_kept, np.float32)
    z = np.asarray(z, np.float32)
    n = z.shape[0]
    sharding = row_sharding()
    ndev = 1 if sharding is None else len(sharding.device_set)
    B = -(-min(batch_size, n) // ndev) * ndev
    pad = (-n) % B
    zp = np.concatenate([z, np.resize(z, (pad, z.shape[1]))]) if pad else z
    out = []
    for s in range(0, zp.shape[0], B):
        zb = zp[s : s + B] if sharding is None else jax.device_put(zp[s : s + B], sharding)
        out.append(np.asarray(solve_ode_jit(zb, pts, w_kept, schedule, grid, solver, denoise_last)))
    return np.concatenate(out)[:n], int(idx.size), dropped
