"""The settings of an inference, frozen: :class:`Config`, built from :class:`MFDiff`'s
constructor arguments, owns their validation and their JSON form (saved files)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import jax

from ._checks import positive_int, real
from ._domain import DOMAIN_CHECKS
from .diffusion._ode import SOLVERS
from .diffusion._schedule import AbstractSchedule, LinearSchedule, geometric_grid, uniform_grid
from .refine._refinement import OdeConfig, RefineContext

__all__ = ["Config", "GRIDS", "BUDGETS", "setting_property"]

GRIDS = {"geometric": geometric_grid, "uniform": uniform_grid}
# integer budgets, each validated as a positive integer (in this order)
BUDGETS = (
    "num_simulations",
    "num_labels",
    "num_steps",
    "label_points",
    "width",
    "depth",
    "heads",
    "train_steps",
    "batch_size",
    "chunk_size",
    "simulation_chunk_size",
)
_REALS = ("t_min", "t_max", "prune_tol", "gate_scale", "learning_rate", "ess_warning")
_REALS += ("max_failure_fraction",)
# fields that are not plain JSON: written by name or not at all (see Config.to_json)
_OBJECTS = ("observed_sites", "schedule", "activation", "checkpoint_dir", "executor")


@dataclasses.dataclass(frozen=True, eq=False)
class Config:
    """The settings of :class:`MFDiff` (its constructor arguments but the model), validated.

    ``num_steps`` are the ODE's steps and ``train_steps`` the generator's;
    ``grid`` is the kind of time grid (:attr:`time_grid` the times). A ``ValueError``
    (``TypeError`` for ``checkpoint_dir`` and ``executor``) names the first bad
    argument. :meth:`to_json` holds the plain settings (the activation by name, the
    schedule as its type and fields); ``observed_sites``, ``checkpoint_dir`` and
    ``executor`` are not saved (the sites come from the saved shapes; the others are
    machine-specific).

    Attributes:
        num_simulations: prior simulations ``N``.
        observed_sites: names of the observed sites. Default: the sites the
            data given to :meth:`MFDiff.run` observes, else the sample sites no other
            site depends on.
        num_labels: labelled triples used to fit the generator.
        num_steps: ODE steps.
        solver: ``"dpm2m"`` (second-order exponential multistep), ``"dpm3m"`` (third
            order) or ``"ddim"`` (first order).
        grid: ``"geometric"`` (steps concentrated near ``t = 0``) or ``"uniform"``.
        t_min, t_max: end points of the time grid.
        schedule: forward-diffusion schedule (default :class:`LinearSchedule`).
        label_points: most prior points a labelling chunk weighs (those of
            largest likelihood); the dropped likelihood mass is reported, with a
            warning above 1%.
        prune_tol: likelihood mass :meth:`MFDiff.sample_ode` and labelling may drop per
            observation: points below it are skipped, exactly (see
            :func:`~numpyro_mfdiff.diffusion._score.support_order`), so the target moves by
            at most ``prune_tol`` in total variation (1e-4 labels the quadratic 9%
            faster, and its ODE KL rises by about 1e-4: docs/benchmarks.md).
        label_smoothing: label each triple from its observation's weighted prior
            points smoothed by a Gaussian kernel, so that ``G_low`` does not
            learn the discrete points themselves. The kernel is chosen per
            observation: Silverman's factor from its likelihood-weight ESS and
            the dimension (at most 0.5) times the sd of its posterior's narrowest
            direction; the ODE stops where its noise reaches that sd, and the
            label is shrunk so that it keeps the weighted mean and covariance.
            Observations whose weighted points look multimodal or spiky along
            an axis of their covariance (bimodality coefficient >= 0.5 or
            kurtosis >= 5) are not smoothed. ``False``: the ODE's end point.
        width, depth, activation: generator MLP.
        heads, gate_scale: the output is a softmax-gated mixture of ``heads``
            values per coordinate, gates sharpened by ``gate_scale``, so the
            network can switch between modes without blurring between them.
        train_steps, batch_size, learning_rate, loss: generator fit.
        chunk_size: triples labelled per compiled call.
        simulation_chunk_size: prior simulations per compiled call (and per
            checkpoint file).
        ess_warning: warn when the likelihood-weight ESS of an observation is
            below this.
        progress_bar: show progress bars.
        max_failure_fraction: fraction of simulations, in ``[0, 1)``, that may
            fail (non-finite output, or an exception inside a simulator wrapped
            by :func:`~numpyro_mfdiff.external_simulator`). Failed simulations are left out
            with a warning giving the count and the first errors; beyond this
            fraction :meth:`MFDiff.simulate` stops with a ``RuntimeError``.
        checkpoint_dir: directory where prior simulation chunks are written
            as they finish (``<dir>/prior``). Rerunning with the same key and
            settings loads the finished chunks instead of simulating them
            again, so a killed run resumes; a directory written for another
            run is a ``ValueError``.
        executor: a ``concurrent.futures.Executor`` (a process pool, a Dask
            ``Client.get_executor()``, Ray's...) that runs the calls of
            simulators wrapped by :func:`~numpyro_mfdiff.external_simulator`. Results are
            gathered in order: the same as without it.
        reparam: ``"auto"``: non-centre hierarchical latent sites before the
            inference runs. A latent sample site is non-centred when its
            distribution is a location-scale family (``Normal``, ``Laplace``,
            ``Cauchy``, ``Logistic``, ``StudentT``; expanded or ``to_event``
            allowed) and its parameters depend on another latent sample site
            (``numpyro.infer.inspect.get_model_relations``), e.g. ``theta_j ~
            N(mu, tau)``: the inference then runs on ``theta_decentered ~ N(0, 1)``
            with ``theta = mu + tau * theta_decentered``
            (``LocScaleReparam(centered=0)``), which turns the funnel between
            ``tau`` and ``theta`` into a nearly Gaussian posterior. Draws keep the
            user's sites (``theta``, not ``theta_decentered``); :attr:`MFDiff.spec`
            describes the coordinates the inference runs in (``theta_decentered``)
            and ``state.reparam`` names the non-centred sites. ``None``: the model
            as it is written.
        domain_check: ``"warn"`` (default), ``"error"`` or ``None``: what
            :meth:`MFDiff.get_samples` does for an observation outside the simulated ones
            ``G_low`` was trained on (:mod:`~numpyro_mfdiff._domain`: far below all of
            1,000 prior simulations in prior-predictive log evidence; measured false
            alarms on prior-predictive observations 0-0.02%).
    """

    num_simulations: int = 20_000
    observed_sites: Sequence[str] | str | None = None
    num_labels: int = 20_000
    num_steps: int = 100
    solver: str = "dpm2m"
    grid: str = "geometric"
    t_min: float = 1e-4
    t_max: float = 1.0 - 1e-4
    schedule: AbstractSchedule | None = None
    label_points: int = 65_536
    prune_tol: float = 1e-6
    label_smoothing: bool = True
    width: int = 128
    depth: int = 3
    activation: Any = jax.nn.gelu
    heads: int = 4
    gate_scale: float = 10.0
    train_steps: int = 10_000
    batch_size: int = 512
    learning_rate: float = 5e-3
    loss: str = "l1"
    chunk_size: int = 256
    simulation_chunk_size: int = 10_000
    ess_warning: float = 50.0
    progress_bar: bool = True
    max_failure_fraction: float = 0.2
    checkpoint_dir: str | os.PathLike | None = None
    executor: Any = None
    reparam: str | None = "auto"
    domain_check: str | None = "warn"

    def __post_init__(self):
        for name in BUDGETS:
            positive_int(name, getattr(self, name))
        positive_int("num_simulations", self.num_simulations, minimum=2)
        real("t_min", self.t_min, 0.0, 1.0, low_open=True, high_open=True)
        real("t_max", self.t_max, 0.0, 1.0, low_open=True)
        if not self.t_min < self.t_max:
            raise ValueError(f"t_min must be < t_max, got t_min={self.t_min}, t_max={self.t_max}")
        real("gate_scale", self.gate_scale, 0.0, low_open=True)
        real("learning_rate", self.learning_rate, 0.0, low_open=True)
        real("ess_warning", self.ess_warning, 0.0)
        real("max_failure_fraction", self.max_failure_fraction, 0.0, 1.0, high_open=True)
        ckpt, executor = self.checkpoint_dir, self.executor
        if ckpt is not None and not isinstance(ckpt, (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be a path, got {type(ckpt).__name__}")
        if executor is not None and not callable(getattr(executor, "submit", None)):
            raise TypeError(
                "executor must be a concurrent.futures.Executor (with .submit), got "
                f"{type(executor).__name__}"
            )
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.grid not in GRIDS:
            raise ValueError(f"grid must be one of {tuple(GRIDS)}, got {self.grid!r}")
        if self.loss not in ("l1", "mse", "huber"):
            raise ValueError(f"loss must be 'l1', 'mse' or 'huber', got {self.loss!r}")
        real("prune_tol", self.prune_tol, 0.0, 1.0, high_open=True)
        if self.reparam is not None and not (
            isinstance(self.reparam, str) and self.reparam == "auto"
        ):
            raise ValueError(f"reparam must be 'auto' or None, got {self.reparam!r}")
        if not any(self.domain_check is c or self.domain_check == c for c in DOMAIN_CHECKS):
            raise ValueError(
                f"domain_check must be 'warn', 'error' or None, got {self.domain_check!r}"
            )
        # the checked values, converted
        plain = {k: int(getattr(self, k)) for k in BUDGETS}
        plain.update({k: float(getattr(self, k)) for k in _REALS})
        plain.update(
            label_smoothing=bool(self.label_smoothing), progress_bar=bool(self.progress_bar)
        )
        plain["schedule"] = LinearSchedule() if self.schedule is None else self.schedule
        plain["checkpoint_dir"] = None if ckpt is None else Path(ckpt)
        for k, v in plain.items():
            object.__setattr__(self, k, v)

    def replace(self, **changes) -> Config:
        """A copy with ``changes``, validated again."""
        return dataclasses.replace(self, **changes)

    @cached_property
    def time_grid(self):
        """The ODE's decreasing times, ``num_steps + 1`` of them from ``t_max`` to ``t_min``."""
        return GRIDS[self.grid](self.num_steps, t_max=self.t_max, t_min=self.t_min)

    @property
    def net_config(self) -> dict:
        """The keyword arguments of the generator network (``Generator``)."""
        return dict(
            width=self.width,
            depth=self.depth,
            activation=self.activation,
            heads=self.heads,
            gate_scale=self.gate_scale,
        )

    @property
    def fit_config(self) -> dict:
        """The keyword arguments of the generator fit (``fit_generator``)."""
        return dict(
            num_steps=self.train_steps,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            loss=self.loss,
        )

    @property
    def ode(self) -> OdeConfig:
        """The ODE settings as :func:`~numpyro_mfdiff.refine._refine.ode_draw` takes them."""
        return OdeConfig(
            schedule=self.schedule,
            grid=self.time_grid,
            grid_kind=self.grid,
            num_steps=self.num_steps,
            t_max=self.t_max,
            solver=self.solver,
            prune_tol=self.prune_tol,
        )

    def refine_context(self, spec, centring=None) -> RefineContext:
        """The settings :func:`~numpyro_mfdiff.refine._refine.refine` reads, for the
        model's ``spec`` and its ``centring`` (:func:`~numpyro_mfdiff._model.centring`)."""
        return RefineContext(
            spec=spec,
            ode=self.ode,
            net_config=self.net_config,
            fit_config=self.fit_config,
            ess_warning=self.ess_warning,
            progress_bar=self.progress_bar,
            checkpoint_dir=self.checkpoint_dir,
            executor=self.executor,
            simulation_chunk_size=self.simulation_chunk_size,
            max_failure_fraction=self.max_failure_fraction,
            centring=centring,
        )

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict:
        """The saved settings: every plain field, ``activation`` by its name and
        ``schedule`` as ``{"type", "fields"}`` (not ``observed_sites``,
        ``checkpoint_dir``, ``executor``)."""
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in _OBJECTS
        }
        out["activation"] = getattr(self.activation, "__name__", None)
        out["schedule"] = _schedule_to_json(self.schedule)
        return out

    @classmethod
    def from_json(cls, settings: dict, *, observed_sites=None, where="the saved file") -> Config:
        """The config of :meth:`to_json`'s ``settings`` (a ``ValueError`` naming ``where``
        for an activation that is not in ``jax.nn`` or an unknown schedule)."""
        settings = dict(settings)
        settings.setdefault("label_smoothing", False)  # files written before it existed
        settings.setdefault("reparam", None)  # likewise: those models ran centred
        act = settings.pop("activation")
        if not hasattr(jax.nn, str(act)):
            raise ValueError(
                f"{where}: the generator's activation {act!r} is not in jax.nn; "
                "rebuild it with MFDiff(...).run instead"
            )
        schedule = _schedule_from_json(settings.pop("schedule"))
        return cls(
            activation=getattr(jax.nn, act),
            schedule=schedule,
            observed_sites=observed_sites,
            **settings,
        )


def _schedule_to_json(schedule):
    fields = {k: float(v) for k, v in vars(schedule).items()}
    return {"type": type(schedule).__name__, "fields": fields}


def _schedule_from_json(d):
    from .diffusion import _schedule

    cls = getattr(_schedule, d["type"], None)
    if cls is None:
        raise ValueError(f"unknown schedule {d['type']!r} in the saved file")
    return cls(**d["fields"])


def setting_property(name, settable=False):
    """A property of an object holding a :class:`Config` as ``_config`` that reads its
    setting ``name`` (settable: replacing the config, validated again)."""

    def get(self):
        return getattr(self._config, name)

    def set_(self, value):
        self._config = self._config.replace(**{name: value})

    doc = f"The ``{name}`` setting (:class:`~numpyro_mfdiff.Config`)."
    return property(get, set_ if settable else None, doc=doc)
