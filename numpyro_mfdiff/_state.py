"""What an inference has built (:class:`State`, frozen) and what it reports
(:class:`Diagnostics`: typed records per stage, read as the dict users index)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "State",
    "Diagnostics",
    "SimulationStats",
    "LabelStats",
    "Timings",
    "OdeStats",
    "GeneratorCheck",
    "obs_key",
    "built_property",
]


@dataclasses.dataclass(frozen=True)
class State:
    """The ``model`` (the user's NumPyro model), its ``spec`` and arguments
    (``args``/``kwargs``, the data left out), the ``default_observations`` (the data
    given to ``run``), the prior ``simulations`` and their ``bank``, the labelled
    ``triples``, ``G_low`` (``generator``) and the ``refinements`` by observation
    (:func:`obs_key` -> :class:`~numpyro_mfdiff.refine._refinement.Refinement`);
    after a batched refinement, the ``proposals`` the bank's points came from
    (:class:`~numpyro_mfdiff.refine._pooled.Proposals`) and the batch's observations ``focus``
    (B, M), where a share of ``G_low``'s labels is placed; ``reparam``, the latent
    sites non-centred (:mod:`~numpyro_mfdiff._model._reparam`); ``data_args``, the model
    arguments that carried data to ``run`` (:func:`~numpyro_mfdiff._model.data_arguments`).
    Each stage returns a new state (:meth:`replace`)."""

    model: Any = None
    spec: Any = None
    args: tuple = ()
    kwargs: Mapping = dataclasses.field(default_factory=dict)
    default_observations: dict | None = None
    simulations: Any = None
    bank: Any = None
    triples: dict | None = None
    generator: Any = None
    refinements: Mapping = dataclasses.field(default_factory=dict)
    proposals: Any = None
    focus: Any = None
    reparam: tuple = ()
    data_args: tuple = ()

    def replace(self, **changes) -> State:
        return dataclasses.replace(self, **changes)

    def with_refinement(self, key, ref) -> State:
        return self.replace(refinements={**self.refinements, key: ref})


class GeneratorCheck(NamedTuple):
    """``G_low`` against its weighted prior points at ``rows`` simulated observations
    (likelihood ESS at least ``ess_min``): the largest mean error in weighted sds and
    the sd ratio per coordinate and row."""

    rows: int
    ess_min: float
    mean_error: float
    sd_ratio: list


def built_property(name, doc):
    """A read-only property of an object holding a :class:`State` as ``_state`` that
    reads its field ``name``."""
    return property(lambda self: getattr(self._state, name), doc=doc)


def obs_key(y) -> str:
    """Dictionary key of a flat observation: its float32 values, exactly."""
    return np.asarray(y, np.float32).tobytes().hex()


class SimulationStats(NamedTuple):
    """Stage 1: simulations run, how many failed, the first errors."""

    num_simulations: int
    num_failed: int
    simulation_errors: list


class LabelStats(NamedTuple):
    """Stage 2: the likelihood mass labelling dropped (largest, mean) and the points it
    weighed per triple (mean)."""

    label_dropped_mass_max: float
    label_dropped_mass_mean: float
    label_points_mean: float


class Timings(NamedTuple):
    """Seconds of the three stages of ``run``."""

    simulation: float
    labelling: float
    training: float


class OdeStats(NamedTuple):
    """The last :meth:`MFDiff.sample_ode` call: points used, likelihood mass dropped."""

    points: int
    dropped_mass: float


# records kept under one key; the others (SimulationStats, LabelStats) spread their fields
_KEYS = {Timings: "timings", OdeStats: "last_ode", GeneratorCheck: "generator_check"}


class Diagnostics(dict):
    """The diagnostics of an inference: a dict (``num_simulations``, ``num_failed``,
    ``simulation_errors``, ``label_dropped_mass_max``/``_mean``, ``label_points_mean``,
    ``train_history``, ``generator_check``, ``timings``, ``last_ode``,
    ``refinements``), filled from typed records by :meth:`record`."""

    def record(self, *records, **plain):
        """Add typed records (a ``GeneratorCheck``, ``Timings``, ``OdeStats`` under their
        key; ``SimulationStats`` and ``LabelStats`` field by field) and plain entries."""
        for r in records:
            if type(r) in _KEYS:
                self[_KEYS[type(r)]] = r._asdict()
            else:
                self.update(r._asdict())
        self.update({k: v._asdict() if hasattr(v, "_asdict") else v for k, v in plain.items()})
        return self

    def record_all(self, records):
        """:meth:`record` each of ``records``: typed records, or dicts of plain entries."""
        for r in records:
            self.record(**r) if isinstance(r, dict) else self.record(r)
        return self

    def record_refinement(self, key, observations, ref):
        """The summary of refinement ``ref`` of ``observations`` under ``key``."""
        self.setdefault("refinements", {})[key] = dict(
            observations={k: np.asarray(v).tolist() for k, v in observations.items()},
            **ref.summary(),
        )
