"""Saving and loading prior simulations, labelled triples and generators (one .npz file).

Format version 3 (version 2 had no batched refinements, version 1 no triples and no
model-argument fingerprint; version 2 files still load):
``meta`` (JSON: version, site shapes, settings, schedule, diagnostics, what
is present), ``theta``/``y``/``valid``/``dist<name>`` (simulations; the
observed-site distribution parameters stored by name, e.g. ``dist['y'].loc``),
``triple_<name>`` (labelled triples, optional) and ``generator`` (bytes of
``eqx.tree_serialise_leaves``, optional) and ``default_obs_<site>`` (the
data passed to ``run`` as model arguments, optional; older files have none);
after a batched refinement, ``bank_log_weight`` (the bank's per-point log-weights),
``focus`` (the batch's observations) and ``pool_kde<r>_<field>`` (its proposals).
The zip container checks a CRC per
array, so a damaged file fails to load instead of loading wrong numbers.
"""

from __future__ import annotations

import io
import json
import os

import equinox as eqx
import jax
import numpy as np

from . import _model
from ._bank import build_bank, low_generator
from ._config import Config
from ._model import _simulate
from ._stages import data_observations
from ._state import Diagnostics, State
from .generator._network import CentredGenerator, Generator

FORMAT_VERSION = 3
_READS = (2, 3)
_TRIPLE_KEYS = ("y", "z", "theta", "dropped")


def save(path, config, state, diagnostics):
    """Write ``config`` (:class:`~numpyro_mfdiff._config.Config`), ``state``
    (:class:`~numpyro_mfdiff._state.State`, with simulations) and ``diagnostics``
    (a dict: its JSON part) to ``path``."""
    sims, spec = state.simulations, state.spec
    # by name, not position: distribution leaf order differs between processes
    names = _simulate.leaf_names(sims.dists)
    leaves = jax.tree.leaves(sims.dists)
    arrays = {f"dist{n}": np.asarray(x) for n, x in zip(names, leaves, strict=True)}
    settings = config.to_json()
    meta = dict(
        format_version=FORMAT_VERSION,
        latent_shapes={k: list(v) for k, v in spec.latent_shapes.items()},
        observed_shapes={k: list(v) for k, v in spec.observed_shapes.items()},
        dist_names=names,
        schedule=settings.pop("schedule"),
        settings=settings,
        has_generator=state.generator is not None,
        has_triples=state.triples is not None,
        model_args=_simulate.fingerprint(tuple(state.args), dict(state.kwargs)),
        diagnostics={k: v for k, v in diagnostics.items() if k != "train_history"},
    )
    if state.generator is not None:
        arrays["generator"] = _serialise(state.generator)
    if state.triples is not None:
        arrays.update({f"triple_{k}": np.asarray(state.triples[k]) for k in _TRIPLE_KEYS})
    meta["refinements"] = _save_refinements(state.refinements, arrays)
    meta["pooled"] = _save_pooled(state, arrays)
    default = state.default_observations or {}
    meta["default_observations"] = sorted(default)
    meta["data_args"] = [list(x) for x in state.data_args]
    arrays.update({f"default_obs_{k}": np.asarray(v) for k, v in default.items()})
    with open(path, "wb") as f:
        np.savez(
            f,
            meta=np.array(json.dumps(meta)),
            theta=sims.theta,
            y=sims.y,
            valid=sims.valid,
            **arrays,
        )


def _serialise(module):
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, module)
    return np.frombuffer(buf.getvalue(), np.uint8)


def load(path, model, args, kwargs):
    """``(config, state, diagnostics)`` of the file ``path`` written by :func:`save`, for
    ``model`` with ``args``/``kwargs`` (data among them replaces the saved data); a
    ``ValueError`` for a file of another version, incomplete, corrupted, or saved for
    other sites or model arguments; ``FileNotFoundError`` when there is no such file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no file {os.fspath(path)!r} to load (written by MFDiff.save)")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
        meta = json.loads(str(data["meta"]))
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise ValueError(f"{path} is not a numpyro_mfdiff file or is corrupted: {e}") from e
    if meta.get("format_version") not in _READS:
        raise ValueError(
            f"{path} has format version {meta.get('format_version')}; this "
            f"numpyro_mfdiff reads versions {list(_READS)} only: rerun (or resume from a "
            "checkpoint_dir) and save again"
        )
    need_meta = ("settings", "schedule", "latent_shapes", "observed_shapes", "dist_names")
    need_meta += ("has_generator", "has_triples", "model_args", "diagnostics")
    missing = [k for k in need_meta if k not in meta]
    need = ["theta", "y", "valid"] + [f"dist{n}" for n in meta.get("dist_names", ())]
    need += ["generator"] if meta.get("has_generator") else []
    need += [f"triple_{k}" for k in _TRIPLE_KEYS] if meta.get("has_triples") else []
    missing += [k for k in need if k not in data]
    if missing:
        raise ValueError(f"{path} is not a complete numpyro_mfdiff file: missing {missing}")
    return _load(path, model, args, kwargs, data, meta)


def _load(path, model, args, kwargs, data, meta):
    config = Config.from_json(
        {**meta["settings"], "schedule": meta["schedule"]},
        observed_sites=sorted(meta["observed_shapes"]),
        where=str(path),
    )
    # data among the arguments is taken out as in run (its fingerprint excludes it)
    args, kwargs, given = _model.split_data_arguments(model, args, kwargs)
    args, kwargs = tuple(args), dict(kwargs)
    if _simulate.fingerprint(args, kwargs) != meta["model_args"]:
        raise ValueError(
            f"{path} was saved with other model arguments than the ones given to load; "
            "pass the args/kwargs used in run"
        )
    # the sites run non-centred: chosen again as simulate chose them (same model and arguments)
    sites = ()
    if config.reparam == "auto":
        sites = _model.auto_reparam_sites(model, args, kwargs, config.observed_sites)
    user_model, model = model, _model.reparam_model(model, sites)
    spec = _model.inspect_model(model, args, kwargs, config.observed_sites)
    for kind, saved, now in (
        ("latent", meta["latent_shapes"], spec.latent_shapes),
        ("observed", meta["observed_shapes"], spec.observed_shapes),
    ):
        now = {k: list(v) for k, v in now.items()}
        if saved != now:
            raise ValueError(f"{path} was saved for {kind} sites {saved}; the model has {now}")
    sims = _simulations(path, model, spec, args, kwargs, data, meta)
    proposals, focus, log_weight = _load_pooled(path, data, meta.get("pooled"))
    bank = build_bank(spec, sims, log_weight, num_prior=config.num_simulations)
    state = State(spec=spec, args=args, kwargs=kwargs, simulations=sims, bank=bank, reparam=sites)
    state = state.replace(data_args=tuple(tuple(x) for x in meta.get("data_args", [])))
    state = state.replace(proposals=proposals, focus=focus)
    if meta["has_triples"]:
        state = state.replace(triples=_triples(path, spec, data))
    if meta["has_generator"]:
        like = low_generator(jax.random.PRNGKey(0), spec, bank, config.net_config)
        try:
            gen = eqx.tree_deserialise_leaves(io.BytesIO(data["generator"].tobytes()), like)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{path}: the saved generator does not match its settings: {e}") from e
        state = state.replace(generator=gen)
    centring = _model.centring(user_model, spec, args, kwargs, sites)
    refs = _load_refinements(path, spec, config, data, meta.get("refinements", []), centring)
    names = meta.get("default_observations", [])
    try:
        stored = {k: data[f"default_obs_{k}"] for k in names}
    except KeyError as e:
        raise ValueError(f"{path}: default observation {e} is missing") from e
    # data passed to load replaces the stored data, as it would in run
    default = data_observations(spec, given or stored)
    diagnostics = Diagnostics(meta["diagnostics"])
    return config, state.replace(refinements=refs, default_observations=default), diagnostics


def _simulations(path, model, spec, args, kwargs, data, meta):
    """The saved simulations, their observed-site distributions rebuilt (by leaf name) on
    the tree structure of one simulation of ``model``; shapes checked."""
    shapes = jax.eval_shape(
        lambda k: _model.simulate_one(model, spec, args, kwargs, k),
        jax.random.PRNGKey(0),
    )
    treedef = jax.tree.structure(shapes[2])
    names = _simulate.leaf_names(shapes[2])
    if sorted(names) != sorted(meta["dist_names"]):
        raise ValueError(
            f"{path} holds observed-site distribution parameters {sorted(meta['dist_names'])}; "
            f"the model has {sorted(names)}"
        )
    leaves = [data[f"dist{n}"] for n in names]
    n = data["theta"].shape[0]
    expected = {
        "theta": (n, spec.dim),
        "y": (n, spec.obs_dim),
        "valid": (n,),
        **{
            f"dist{k}": (n, *x.shape)
            for k, x in zip(names, jax.tree.leaves(shapes[2]), strict=True)
        },
    }
    got = {"theta": data["theta"], "y": data["y"], "valid": data["valid"]}
    got.update({f"dist{k}": x for k, x in zip(names, leaves, strict=True)})
    for k, shape in expected.items():
        if got[k].shape != shape:
            raise ValueError(f"{path}: array {k} has shape {got[k].shape}, expected {shape}")
    return _model.Simulations(
        theta=data["theta"],
        y=data["y"],
        dists=jax.tree.unflatten(treedef, leaves),
        valid=data["valid"],
        errors=tuple(meta["diagnostics"].get("simulation_errors", ())),
    )


def _triples(path, spec, data):
    t = {k: data[f"triple_{k}"] for k in _TRIPLE_KEYS}
    T = t["y"].shape[0]
    want = dict(y=(T, spec.obs_dim), z=(T, spec.dim), theta=(T, spec.dim), dropped=(T,))
    for k, shape in want.items():
        if t[k].shape != shape:
            raise ValueError(f"{path}: triples {k} has shape {t[k].shape}, expected {shape}")
    return t


def _save_pooled(state, arrays):
    """Put a batched refinement's bank weights, observations and KDEs in ``arrays``;
    return its metadata (None without one)."""
    p = state.proposals
    if p is None:
        return None
    arrays["bank_log_weight"] = np.asarray(state.bank.log_weight)
    arrays["focus"] = np.asarray(state.focus)
    for r, kde in enumerate(p.kdes):
        arrays.update({f"pool_kde{r}_{k}": np.asarray(v) for k, v in kde._asdict().items()})
    return dict(prior_count=p.prior_count, counts=list(p.counts))


def _load_pooled(path, data, m):
    """``(proposals, focus, log_weight)`` of a batched refinement, or Nones."""
    if m is None:
        return None, None, None
    from .refine._kde import KDE
    from .refine._pooled import Proposals

    try:
        kdes = tuple(
            KDE(*(data[f"pool_kde{r}_{k}"] for k in KDE._fields)) for r in range(len(m["counts"]))
        )
        proposals = Proposals(int(m["prior_count"]), kdes, tuple(int(c) for c in m["counts"]))
        return proposals, data["focus"], data["bank_log_weight"]
    except Exception as e:  # noqa: BLE001 - the same clear error for any inconsistency
        raise ValueError(f"{path}: the batched refinement is incomplete or corrupted: {e}") from e


_REF_ARRAYS = ("y", "theta", "loglik", "logprior", "log_w", "mean", "scale")


def _save_refinements(refinements, arrays):
    """Put each refinement's arrays, KDEs and G_high in ``arrays``; return their metadata."""
    out = []
    for i, (key, ref) in enumerate(refinements.items()):
        arrays.update({f"ref{i}_{k}": np.asarray(getattr(ref, k)) for k in _REF_ARRAYS})
        for r, kde in enumerate(ref.kdes):
            arrays.update({f"ref{i}_kde{r}_{k}": np.asarray(v) for k, v in kde._asdict().items()})
        arrays[f"ref{i}_generator"] = _serialise(ref.generator)
        out.append(
            dict(
                key=key,
                prior_count=ref.prior_count,
                counts=list(ref.counts),
                rounds=[r.as_dict() for r in ref.rounds],
                num_high_fidelity=ref.num_high_fidelity,
                ess_before=ref.ess_before,
                smoothing=ref.smoothing,
                lam=ref.lam,
                engine=ref.engine,
                residual=bool(getattr(ref.generator, "residual", False)),
                centred=isinstance(ref.generator, CentredGenerator),
            )
        )
    return out


def _load_refinements(path, spec, config, data, metas, centring=None):
    """The saved refinements by key (a ``ValueError`` naming a corrupted one); ``centring``
    (:func:`~numpyro_mfdiff._model.centring`) rebuilds a ``G_high`` calibrated in the
    centred coordinates (saved with ``centred``; files before it have none)."""
    out = {}
    for i, m in enumerate(metas):
        try:
            ref = _load_refinement(i, spec, config, data, m, centring)
        except Exception as e:  # noqa: BLE001 - any inconsistency is the same clear error
            raise ValueError(f"{path}: refinement {i} is incomplete or corrupted: {e}") from e
        if ref.theta.shape[1:] != (spec.dim,) or ref.y.shape != (spec.obs_dim,):
            raise ValueError(f"{path}: refinement {i} does not match the model's sites")
        out[m["key"]] = ref
    return out


def _load_refinement(i, spec, config, data, m, centring=None):
    from .refine._kde import KDE
    from .refine._refine import high_generator
    from .refine._refinement import Refinement, RoundInfo

    kdes = tuple(
        KDE(*(data[f"ref{i}_kde{r}_{k}"] for k in KDE._fields)) for r in range(len(m["counts"]))
    )
    d = spec.dim
    like = high_generator(
        jax.random.PRNGKey(0), d, np.zeros(d), np.eye(d), config.net_config, m.get("residual", True)
    )
    if m.get("centred", False):
        to = (centring.to_centred, centring.to_noncentred)
        like = CentredGenerator(like, np.zeros(d, np.float32), np.eye(d, dtype=np.float32), *to)
    raw = data[f"ref{i}_generator"].tobytes()
    try:
        gen = eqx.tree_deserialise_leaves(io.BytesIO(raw), like)
    except RuntimeError:  # equinox's TreePathError: a G_high saved before it was whitened
        like = Generator(jax.random.PRNGKey(0), 0, d, **config.net_config)
        try:
            gen = eqx.tree_deserialise_leaves(io.BytesIO(raw), like)
        except RuntimeError as e:
            raise ValueError(f"refinement {i}: the saved G_high matches no layout: {e}") from e
    return Refinement(
        **{k: data[f"ref{i}_{k}"] for k in _REF_ARRAYS},
        prior_count=m["prior_count"],
        kdes=kdes,
        counts=tuple(m["counts"]),
        generator=gen,
        rounds=tuple(RoundInfo.from_dict(r) for r in m["rounds"]),
        num_high_fidelity=m["num_high_fidelity"],
        ess_before=m["ess_before"],
        smoothing=m.get("smoothing", 0.0),
        lam=m.get("lam", 1.0),
        engine=m.get("engine", "is"),
    )
