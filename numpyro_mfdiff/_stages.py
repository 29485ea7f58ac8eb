"""The stages of an inference as functions of its settings and state: simulate the
prior, label triples, fit ``G_low``. Each takes a :class:`~numpyro_mfdiff._config.Config`
and a :class:`~numpyro_mfdiff._state.State` and returns a new state with the records
of what it did (for :meth:`~numpyro_mfdiff._state.Diagnostics.record`); no ``MFDiff``
inside. ``fast_likelihood=False`` takes the generic ``log_prob`` path for every
observed site instead of one matmul for exponential families (the same numbers to
float rounding: tests and benchmarks compare the two)."""

from __future__ import annotations

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import _model
from ._bank import build_bank, check_generator, low_generator
from ._progress import progress
from ._state import LabelStats, SimulationStats
from .diffusion._label import label_triples
from .generator._network import fit_generator
from .refine._pooled import FOCUS_SHARE

__all__ = ["run_simulations", "simulate", "label", "fit"]
__all__ += ["data_observations", "split_run_arguments", "count_failures"]


def run_simulations(config, state, rng_key, num, theta=None, *, desc=None, checkpoint=None):
    """``num`` simulations (:class:`~numpyro_mfdiff._model.Simulations`) of the state's
    model as the inference runs it, with the config's chunks, executor and failure
    budget: from the prior, or at unconstrained ``theta`` (num, D); a progress bar
    ``desc`` (when the config shows them), checkpoints under ``config.checkpoint_dir /
    checkpoint``. The one runner of every stage that simulates."""
    ckpt = None
    if checkpoint is not None and config.checkpoint_dir is not None:
        ckpt = config.checkpoint_dir / checkpoint
    with progress(num, desc or "", config.progress_bar and desc is not None) as update:
        extra = {} if theta is None else dict(theta=jnp.asarray(theta))
        return _model.simulate(
            rng_key,
            _model.reparam_model(state.model, state.reparam),
            state.spec,
            num,
            state.args,
            state.kwargs,
            config.simulation_chunk_size,
            update if desc is not None else None,
            **extra,
            checkpoint=ckpt,
            executor=config.executor,
            max_failure_fraction=config.max_failure_fraction,
        )


def simulate(config, state, rng_key, args, kwargs):
    """Check the state's model with arguments ``args``/``kwargs`` (data among them taken
    out) and simulate it ``config.num_simulations`` times from the prior; returns ``(state
    with spec, arguments, default observations, simulations and bank, SimulationStats)``."""
    args, kwargs, data, observed, data_args = split_run_arguments(
        state.model, args, kwargs, config.observed_sites
    )
    sites = ()
    if config.reparam == "auto":
        sites = _model.auto_reparam_sites(state.model, args, kwargs, observed)
    state = state.replace(reparam=sites, data_args=data_args)
    spec = _model.inspect_model(
        _model.reparam_model(state.model, state.reparam), args, kwargs, observed
    )
    default = data_observations(spec, data)
    state = state.replace(spec=spec, args=args, kwargs=kwargs, default_observations=default)
    n = config.num_simulations
    sims = run_simulations(config, state, rng_key, n, desc="simulating", checkpoint="prior")
    failed = count_failures(sims, n)
    state = state.replace(simulations=sims, bank=build_bank(spec, sims))
    return state, SimulationStats(n, failed, list(sims.errors))


def label(config, state, rng_key, fast_likelihood=True):
    """``config.num_labels`` labelled triples from the Monte Carlo-score ODE over the
    state's bank: ``(state with triples, triples, LabelStats)``; the triples a dict of
    ``y`` (T, M), ``z`` (T, D), ``theta`` (T, D) (standardised) and ``dropped`` (T,)."""
    bank, sims = state.bank, state.simulations
    k_idx, k_z = jax.random.split(rng_key)
    valid_idx = np.flatnonzero(sims.valid)
    T = config.num_labels
    focus = state.focus
    n_focus = 0 if focus is None else int(FOCUS_SHARE * T)
    idx = np.asarray(
        jax.random.choice(k_idx, valid_idx, (T - n_focus,), replace=T - n_focus > valid_idx.size)
    )
    y = sims.y[idx]
    if n_focus:  # after a batched refinement, a share at the batch's observations
        y = np.concatenate([y, np.asarray(focus)[np.arange(n_focus) % focus.shape[0]]])
    y_std = bank.standardise_y(y)
    z = np.asarray(jax.random.normal(k_z, (T, state.spec.dim)))
    with progress(T, "labelling", config.progress_bar) as update:
        order, theta, dropped, used = label_triples(
            y,
            y_std,
            z,
            partial(bank.log_weights, fast=fast_likelihood),
            bank.points,
            config.schedule,
            config.time_grid,
            config.label_points,
            config.solver,
            config.chunk_size,
            update,
            tol=config.prune_tol,
            smooth=config.label_smoothing,
        )
    y_std, z = y_std[order], z[order]
    stats = LabelStats(float(dropped.max()), float(dropped.mean()), float(used.mean()))
    triples = dict(y=y_std.astype(np.float32), z=z, theta=theta, dropped=dropped)
    return state.replace(triples=triples), triples, stats


def fit(config, state, rng_key, triples, fast_likelihood=True):
    """Fit ``G_low`` on ``triples`` (from :func:`label`) and check it against the bank:
    ``(state with generator, training history, GeneratorCheck)``."""
    k_init, k_fit = jax.random.split(rng_key)
    gen = low_generator(k_init, state.spec, state.bank, config.net_config)
    with progress(config.train_steps, "training", config.progress_bar) as update:
        gen, history = fit_generator(
            k_fit,
            gen,
            triples["y"],
            triples["z"],
            triples["theta"],
            progress=update,
            **config.fit_config,
        )
    sims, key = state.simulations, jax.random.fold_in(rng_key, 1)
    check = check_generator(key, state.bank, gen, sims.y, sims.valid, fast_likelihood)
    return state.replace(generator=gen), history, check


def data_observations(spec, data):
    """Validated default observations from data passed to ``run`` (or None)."""
    if not data:
        return None
    missing = sorted(set(spec.observed_shapes) - set(data))
    if missing:
        raise ValueError(
            f"the model arguments give data for site(s) {sorted(data)} but not for the "
            f"observed site(s) {missing}: pass data for every observed site or for none"
        )
    for name, shape in spec.observed_shapes.items():
        got = np.shape(data[name])
        if got != tuple(shape):
            raise ValueError(
                f"data passed to run for site '{name}' has shape {got}, but the site "
                f"simulates shape {tuple(shape)}: MCMC.run would read the data as one data "
                "set of that shape, which these simulations cannot weigh. Give the site "
                f"that shape in the model (e.g. numpyro.plate('data', {got[0] if got else 1})"
                " around it, or .expand), or, for separate observations, run without the "
                f"data and pass a batch to get_samples(key, {{'{name}': data}})"
            )
    try:
        _model.check_observations(spec, data)
    except ValueError as e:
        raise ValueError(f"data passed to run: {e}") from e
    return {k: np.asarray(v) for k, v in data.items()}


def split_run_arguments(model, args, kwargs, observed_sites):
    """The model arguments of ``run`` without the data, the data, the observed sites
    to inspect (``observed_sites``, else the sites the data observes, else None) and the
    arguments that carried the data (:func:`~numpyro_mfdiff._model.data_arguments`); a
    ``ValueError`` for data observing a site outside ``observed_sites``."""
    args0, kwargs0 = tuple(args), dict(kwargs)
    args, kwargs, data = _model.split_data_arguments(model, args, kwargs)
    data_args = _model.data_arguments(args0, kwargs0, args, kwargs, data)
    if data and observed_sites is not None:
        names = [observed_sites] if isinstance(observed_sites, str) else list(observed_sites)
        extra = sorted(set(data) - set(names))
        if extra:
            raise ValueError(
                f"the model arguments observe site(s) {extra}, which are not among "
                f"observed_sites={sorted(names)}"
            )
    observed = sorted(data) if data and observed_sites is None else observed_sites
    return args, kwargs, data, observed, data_args


def count_failures(sims, num_simulations) -> int:
    """The failed simulations (a warning giving the first errors); a ``RuntimeError``
    when fewer than two are finite."""
    n_valid = int(sims.valid.sum())
    if n_valid < 2:
        raise RuntimeError(f"only {n_valid} of {num_simulations} prior simulations are finite")
    failed = num_simulations - n_valid
    if failed:
        first = "; ".join(sims.errors[:3])
        warnings.warn(
            f"{failed} of {num_simulations} prior simulations failed (non-finite "
            "output or a simulator error) and are left out"
            + (f"; first errors: {first}" if first else ""),
            stacklevel=4,
        )
    return failed
