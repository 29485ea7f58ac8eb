"""The records of refinement and the checked inputs of a ``refine`` call.

The frozen contexts refinement reads (:class:`OdeConfig`, :class:`RefineContext`), the
model it simulates (:class:`HighFidelity`), the record of an observation
(:class:`Refinement`, frozen, with a :class:`RoundInfo` per stage and the
:class:`FitInfo` of ``G_high``), and the checks of :meth:`MFDiff.refine`'s arguments
(:func:`check_settings`, :func:`high_fidelity_model`); the stages themselves are in
:mod:`~numpyro_mfdiff.refine._refine`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _model
from .._checks import model_callable, positive_int, real
from ..diffusion._schedule import AbstractSchedule, geometric_grid, uniform_grid
from ..generator._network import Generator
from . import _sequential, _smc
from ._weights import ess as _ess
from ._weights import host_ess

__all__ = [
    "DEFAULT_BUDGET",
    "FitInfo",
    "HighFidelity",
    "OdeConfig",
    "RefineContext",
    "Refinement",
    "RoundInfo",
    "check_settings",
    "high_fidelity_model",
    "new_refinement",
]

# the refinement engines of check_settings' ``engine``
ENGINES = ("auto", "is", "smc")
# the budget of a refine call with neither max_simulations nor num_simulations set
DEFAULT_BUDGET = 2_000


class OdeConfig(NamedTuple):
    """The Monte Carlo-score ODE of refined draws: the ``schedule``, the time ``grid``
    (its kind ``"geometric"``/``"uniform"``, ``num_steps`` and ``t_max``, to build the
    shorter grid of a smoothed end point), the ``solver`` and ``prune_tol``, the weight
    pruning may drop."""

    schedule: AbstractSchedule
    grid: Any
    grid_kind: str
    num_steps: int
    t_max: float
    solver: str
    prune_tol: float

    def grid_to(self, t_min):
        """The grid of the same kind, steps and ``t_max`` that ends at ``t_min``."""
        make = geometric_grid if self.grid_kind == "geometric" else uniform_grid
        return make(self.num_steps, t_max=self.t_max, t_min=t_min)


class RefineContext(NamedTuple):
    """The settings of the inference object that refinement reads: the low-fidelity
    model's ``spec`` (latent dimension, observed sites), the ``ode``, ``G_high``'s
    network (``net_config``) and fit (``fit_config``), the ESS below which it warns
    (``ess_warning``), and how simulations run (``progress_bar``, ``checkpoint_dir``,
    ``executor``, ``simulation_chunk_size``, ``max_failure_fraction``), and the
    :class:`~numpyro_mfdiff._model.Centring` of a model with non-centred sites
    (``centring``; None: none), in whose centred coordinates ``G_high`` is calibrated."""

    spec: _model.ModelSpec
    ode: OdeConfig
    net_config: dict
    fit_config: dict
    ess_warning: float
    progress_bar: bool
    checkpoint_dir: Path | None
    executor: Any
    simulation_chunk_size: int
    max_failure_fraction: float
    centring: Any = None


class HighFidelity(NamedTuple):
    """The model refinement simulates, with its arguments and ``spec``; ``same``
    when it is the low-fidelity model with the same arguments."""

    model: Any
    args: tuple
    kwargs: dict
    spec: _model.ModelSpec
    same: bool


class FitInfo(NamedTuple):
    """``G_high``'s fit at the end of a ``refine`` call: its :func:`generator_check`, the
    points its labelling ODE used and the mass it dropped, and the timings (seconds of
    the stages, of labelling and of training)."""

    generator_check: dict
    label_points: int
    label_dropped_mass: float
    timings: dict


class RoundInfo(NamedTuple):
    """One stage (a :class:`~numpyro_mfdiff.refine._sequential.StageInfo` of importance sampling,
    a :class:`~numpyro_mfdiff.refine._smc.StageInfo` of SMC, or its dict as an older file saved
    it) and, for the last stage of a ``refine`` call, ``G_high``'s
    :class:`FitInfo`."""

    stage: Any
    fit: FitInfo | None = None

    def as_dict(self) -> dict:
        """The stage's fields and the fit's, as one dict (diagnostics, saved files)."""
        out = self.stage._asdict() if hasattr(self.stage, "_asdict") else dict(self.stage)
        return out if self.fit is None else {**out, **self.fit._asdict()}

    @classmethod
    def from_dict(cls, d) -> RoundInfo:
        """The record of :meth:`as_dict`'s ``d`` (a dict kept as it is when its fields
        are not those of this version)."""
        fit_keys = FitInfo._fields
        for kind in (_sequential.StageInfo, _smc.StageInfo):
            stage_keys = kind._fields
            if set(d) in (set(stage_keys), set(stage_keys) | set(fit_keys)):
                fit = FitInfo(**{k: d[k] for k in fit_keys}) if fit_keys[0] in d else None
                return cls(kind(**{k: d[k] for k in stage_keys}), fit)
        return cls(dict(d))


@dataclass(frozen=True)
class Refinement:
    """Everything refinement gathered for one observation (frozen: :func:`refine`
    returns a new record).

    ``theta`` (n, D) unconstrained points with their high-fidelity
    log-likelihoods ``loglik`` (n,) and prior log densities ``logprior``
    (n,); ``prior_count`` of them were drawn from the prior, ``counts[r]``
    from ``kdes[r]``; ``log_w`` (n,) their importance log-weights (at
    temperature ``lam``, 1 once tempering has reached the posterior);
    ``mean``/``scale`` (D,) the weighted standardisation of ``G_high``;
    ``smoothing`` the kernel sd of the refined ODE's end point, in whitened
    units (0: none); ``rounds`` a :class:`RoundInfo` per stage; ``engine`` the
    refinement's (``"is"``: importance sampling, ``"smc"``: tempered SMC, whose
    ``theta`` are the final particles, ``log_w`` their weights, and no KDEs).
    """

    y: np.ndarray
    theta: np.ndarray
    loglik: np.ndarray
    logprior: np.ndarray
    prior_count: int = 0
    kdes: tuple = ()
    counts: tuple = ()
    log_w: np.ndarray | None = None
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    generator: Generator | None = None
    rounds: tuple = ()
    num_high_fidelity: int = 0
    ess_before: float = 0.0
    smoothing: float = 0.0
    lam: float = 0.0
    engine: str = "is"

    @property
    def ess(self) -> float:
        return host_ess(self.log_w)

    def summary(self) -> dict:
        """Diagnostics as plain numbers (for ``diagnostics`` and InferenceData attrs)."""
        return dict(
            engine=self.engine,
            ess_before=self.ess_before,
            ess_after=self.ess,
            num_high_fidelity_simulations=self.num_high_fidelity,
            num_points=int(self.theta.shape[0]),
            num_rounds=len(self.rounds),
            temperature=self.lam,
            smoothing=self.smoothing,
            kde_bandwidth=[k.bandwidth.tolist() for k in self.kdes],
            rounds=[r.as_dict() for r in self.rounds],
        )


def check_settings(
    *,
    rounds,
    num_simulations,
    max_simulations,
    num_labels,
    train_steps,
    inflation,
    prior_fraction,
    target_ess,
    smoothing,
    engine="auto",
) -> dict:
    """The arguments of :meth:`MFDiff.refine`, validated (a ``ValueError`` naming the
    first bad one) and converted: the keyword arguments of :func:`refine` (the
    budget, the stage size and the most stages) and ``smoothing`` (``None``: automatic)."""
    if rounds is not None:
        rounds = positive_int("rounds", rounds)
    if num_simulations is not None:
        num_simulations = positive_int("num_simulations", num_simulations)
        if num_simulations < 2:
            raise ValueError(f"num_simulations must be at least 2, got {num_simulations}")
    if max_simulations is not None:
        max_simulations = positive_int("max_simulations", max_simulations)
    num_labels = positive_int("num_labels", num_labels)
    train_steps = positive_int("train_steps", train_steps)
    if not inflation > 0:
        raise ValueError(f"inflation must be positive, got {inflation}")
    if not 0.0 <= prior_fraction < 1.0:
        raise ValueError(f"prior_fraction must be in [0, 1), got {prior_fraction}")
    if target_ess is not None and not target_ess > 0:
        raise ValueError(f"target_ess must be positive, got {target_ess}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if smoothing is not None:
        smoothing = real("smoothing", smoothing, 0.0, 1.0, high_open=True)
    # the budget, then the stage size and the number of stages
    if max_simulations is not None:
        budget = max_simulations
    elif num_simulations is not None:
        budget = num_simulations * (rounds or 1)
    else:
        budget = DEFAULT_BUDGET
    if num_simulations is not None:
        stage = num_simulations
    elif rounds is not None:
        stage = max(-(-budget // rounds), 2)
    else:
        stage = _sequential.stage_size(budget)
    return dict(
        budget=int(budget),
        stage=int(min(stage, budget)),
        max_stages=rounds,
        num_labels=num_labels,
        train_steps=train_steps,
        inflation=float(inflation),
        prior_fraction=float(prior_fraction),
        target_ess=target_ess,
        smoothing=smoothing,
        engine=engine,
    )


def high_fidelity_model(
    spec, low_model, low_args, low_kwargs, model=None, model_args=None, model_kwargs=None
) -> HighFidelity:
    """The model refinement simulates (default: ``low_model``) with its arguments (default:
    ``low_args``/``low_kwargs``, those of the run) and its spec, checked against the
    low-fidelity ``spec`` (a ``ValueError`` naming the site that differs); ``same`` when it
    is the low-fidelity model with equal arguments (passing ``run``'s own arguments
    again is still the same fidelity: the prior simulations join the pool)."""
    same = model is None or model is low_model
    model = low_model if model is None else model
    model_callable(model)
    args = low_args if model_args is None else tuple(model_args)
    kwargs = low_kwargs if model_kwargs is None else dict(model_kwargs)
    same = same and _same_arguments((args, kwargs), (low_args, low_kwargs))
    spec_hi = _model.inspect_model(model, args, kwargs, sorted(spec.observed_shapes))
    _model.check_high_fidelity(spec, spec_hi)
    return HighFidelity(model, args, kwargs, spec_hi, same)


def _same_arguments(a, b) -> bool:
    """Whether two argument pytrees are equal: one structure, equal leaves."""
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    if tree_a != tree_b:
        return False
    try:
        return all(
            np.shape(x) == np.shape(y) and bool(np.all(np.asarray(x) == np.asarray(y)))
            for x, y in zip(leaves_a, leaves_b, strict=True)
        )
    except (TypeError, ValueError):  # leaves that do not compare as arrays
        return all(x is y for x, y in zip(leaves_a, leaves_b, strict=True))


def new_refinement(
    y, dim, loglik_low, prior_theta=None, log_prior=None, proposals=None, log_weight=None
) -> Refinement:
    """An empty record for ``y`` with ``dim`` latent coordinates, whose low-fidelity
    log-likelihoods over the prior bank are ``loglik_low`` (N,); with ``prior_theta``
    (N, D), the bank's points at the same fidelity, they join it (temperature 0), with
    their prior log densities from ``log_prior`` (batched): as draws from the prior, or
    after a batched refinement from the bank's ``proposals``
    (:class:`~numpyro_mfdiff.refine._pooled.Proposals`), whose ``log_weight`` (N,) also enters
    the ESS before refinement."""
    weights = loglik_low
    if log_weight is not None:
        weights = np.asarray(loglik_low, np.float64) + np.asarray(log_weight)
    ess_before = float(_ess(weights))
    if prior_theta is None:
        return Refinement(
            y=np.asarray(y, np.float32),
            theta=np.zeros((0, dim), np.float32),
            loglik=np.zeros(0, np.float32),
            logprior=np.zeros(0, np.float32),
            ess_before=ess_before,
        )
    theta = np.asarray(prior_theta, np.float32)
    kdes, counts, prior_count = (), (), int(prior_theta.shape[0])
    if proposals is not None and proposals.kdes:
        kdes, counts, prior_count = proposals.kdes, proposals.counts, proposals.prior_count
    return Refinement(
        y=np.asarray(y, np.float32),
        theta=theta,
        loglik=np.asarray(loglik_low, np.float32),
        logprior=np.asarray(log_prior(jnp.asarray(theta)), np.float32),
        prior_count=prior_count,
        kdes=tuple(kdes),
        counts=tuple(int(c) for c in counts),
        ess_before=ess_before,
    )
