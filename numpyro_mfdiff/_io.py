"""Saving and loading prior simulations, labelled triples and generators (one .npz file).

Format version 2 (version 1 had no triples and no model-argument fingerprint):
``meta`` (JSON: version, site shapes, settings, schedule, diagnostics, what
is present), ``theta``/``y``/``valid``/``dist<name>`` (simulations; the
observed-site distribution parameters stored by name, e.g. ``dist['y'].loc``),
``triple_<name>`` (labelled triples, optional) and ``generator`` (bytes of
``eqx.tree_serialise_leaves``, optional) and ``default_obs_<site>`` (the
data passed to ``run`` as model arguments, optional; older files have none).
The zip container checks a CRC per
array, so a damaged file fails to load instead of loading wrong numbers.
"""

from __future__ import annotations

import io
import json

import equinox as eqx
import jax
import numpy as np

from . import _model, _simulate
from ._network import Generator

FORMAT_VERSION = 2
_TRIPLE_KEYS = ("y", "z", "theta", "dropped")


def save(inf, path):
    sims = inf.simulations
    # by name, not position: distribution leaf order differs between processes
    names = _simulate.leaf_names(sims.dists)
    leaves = jax.tree.leaves(sims.dists)
    arrays = {f"dist{n}": np.asarray(x) for n, x in zip(names, leaves, strict=True)}
    meta = dict(
        format_version=FORMAT_VERSION,
        latent_shapes={k: list(v) for k, v in inf.spec.latent_shapes.items()},
        observed_shapes={k: list(v) for k, v in inf.spec.observed_shapes.items()},
        dist_names=names,
        settings=inf._settings,
        schedule=_schedule_to_json(inf.schedule),
        has_generator=inf.generator is not None,
        has_triples=inf.triples is not None,
        model_args=_simulate.fingerprint(tuple(inf._args), dict(inf._kwargs)),
        diagnostics={k: v for k, v in inf.diagnostics.items() if k != "train_history"},
    )
    if inf.generator is not None:
        buf = io.BytesIO()
        eqx.tree_serialise_leaves(buf, inf.generator)
        arrays["generator"] = np.frombuffer(buf.getvalue(), np.uint8)
    if inf.triples is not None:
        arrays.update({f"triple_{k}": np.asarray(inf.triples[k]) for k in _TRIPLE_KEYS})
    meta["refinements"] = _save_refinements(inf, arrays)
    default = getattr(inf, "default_observations", None) or {}
    meta["default_observations"] = sorted(default)
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


def load(cls, path, model, args, kwargs):
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
        meta = json.loads(str(data["meta"]))
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise ValueError(f"{path} is not a numpyro_mfdiff file or is corrupted: {e}") from e
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {meta.get('format_version')}; this "
            f"numpyro_mfdiff reads version {FORMAT_VERSION} only: rerun (or resume from a "
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
    return _load(cls, path, model, args, kwargs, data, meta)


def _load(cls, path, model, args, kwargs, data, meta):
    settings = dict(meta["settings"])
    settings.setdefault("label_smoothing", False)  # files written before it existed
    act = settings.pop("activation")
    if not hasattr(jax.nn, str(act)):
        raise ValueError(
            f"{path}: the generator's activation {act!r} is not in jax.nn; "
            "rebuild it with MFDiff(...).run instead"
        )
    inf = cls(
        model,
        activation=getattr(jax.nn, act),
        schedule=_schedule_from_json(meta["schedule"]),
        observed_sites=sorted(meta["observed_shapes"]),
        **settings,
    )
    # data among the arguments is taken out as in run (its fingerprint excludes it)
    args, kwargs, given = _model.split_data_arguments(model, args, kwargs)
    inf._args, inf._kwargs = tuple(args), dict(kwargs)
    if _simulate.fingerprint(inf._args, inf._kwargs) != meta["model_args"]:
        raise ValueError(
            f"{path} was saved with other model arguments than the ones given to load; "
            "pass the args/kwargs used in run"
        )
    inf.spec = _model.inspect_model(model, inf._args, inf._kwargs, inf.observed_sites)
    for kind, saved, now in (
        ("latent", meta["latent_shapes"], inf.spec.latent_shapes),
        ("observed", meta["observed_shapes"], inf.spec.observed_shapes),
    ):
        now = {k: list(v) for k, v in now.items()}
        if saved != now:
            raise ValueError(f"{path} was saved for {kind} sites {saved}; the model has {now}")
    # rebuild the tree structure of the observed-site distributions from one simulation
    shapes = jax.eval_shape(
        lambda k: _model._simulate_one(model, inf.spec, inf._args, inf._kwargs, k),
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
        "theta": (n, inf.spec.dim),
        "y": (n, inf.spec.obs_dim),
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
    dists = jax.tree.unflatten(treedef, leaves)
    sims = _model.Simulations(
        theta=data["theta"],
        y=data["y"],
        dists=dists,
        valid=data["valid"],
        errors=tuple(meta["diagnostics"].get("simulation_errors", ())),
    )
    inf._set_simulations(sims)
    inf.diagnostics.update(meta["diagnostics"])
    if meta["has_triples"]:
        t = {k: data[f"triple_{k}"] for k in _TRIPLE_KEYS}
        T = t["y"].shape[0]
        want = dict(
            y=(T, inf.spec.obs_dim), z=(T, inf.spec.dim), theta=(T, inf.spec.dim), dropped=(T,)
        )
        for k, shape in want.items():
            if t[k].shape != shape:
                raise ValueError(f"{path}: triples {k} has shape {t[k].shape}, expected {shape}")
        inf.triples = t
    if meta["has_generator"]:
        like = inf._new_generator(jax.random.PRNGKey(0))
        try:
            inf.generator = eqx.tree_deserialise_leaves(
                io.BytesIO(data["generator"].tobytes()), like
            )
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{path}: the saved generator does not match its settings: {e}") from e
        inf._make_draw()
    _load_refinements(inf, path, data, meta.get("refinements", []))
    names = meta.get("default_observations", [])
    try:
        stored = {k: data[f"default_obs_{k}"] for k in names}
    except KeyError as e:
        raise ValueError(f"{path}: default observation {e} is missing") from e
    # data passed to load replaces the stored data, as it would in run
    inf.default_observations = inf._data_observations(given or stored)
    return inf


_REF_ARRAYS = ("y", "theta", "loglik", "logprior", "log_w", "mean", "scale")


def _save_refinements(inf, arrays):
    """Put each refinement's arrays, KDEs and G_high in ``arrays``; return their metadata."""
    out = []
    for i, (key, ref) in enumerate(inf._refinements.items()):
        arrays.update({f"ref{i}_{k}": np.asarray(getattr(ref, k)) for k in _REF_ARRAYS})
        for r, kde in enumerate(ref.kdes):
            arrays.update({f"ref{i}_kde{r}_{k}": np.asarray(v) for k, v in kde._asdict().items()})
        buf = io.BytesIO()
        eqx.tree_serialise_leaves(buf, ref.generator)
        arrays[f"ref{i}_generator"] = np.frombuffer(buf.getvalue(), np.uint8)
        out.append(
            dict(
                key=key,
                prior_count=ref.prior_count,
                counts=list(ref.counts),
                rounds=ref.rounds,
                num_high_fidelity=ref.num_high_fidelity,
                ess_before=ref.ess_before,
                smoothing=ref.smoothing,
                lam=ref.lam,
                residual=bool(getattr(ref.generator, "residual", False)),
            )
        )
    return out


def _load_refinements(inf, path, data, metas):
    from ._kde import KDE
    from ._refine import Refinement, high_generator

    for i, m in enumerate(metas):
        try:
            fields = {k: data[f"ref{i}_{k}"] for k in _REF_ARRAYS}
            kdes = [
                KDE(*(data[f"ref{i}_kde{r}_{k}"] for k in KDE._fields))
                for r in range(len(m["counts"]))
            ]
            ref = Refinement(
                **fields,
                prior_count=m["prior_count"],
                kdes=kdes,
                counts=m["counts"],
                rounds=m["rounds"],
                num_high_fidelity=m["num_high_fidelity"],
                ess_before=m["ess_before"],
                smoothing=m.get("smoothing", 0.0),
                lam=m.get("lam", 1.0),
            )
            d = inf.spec.dim
            residual = m.get("residual", True)
            like = high_generator(
                jax.random.PRNGKey(0), d, np.zeros(d), np.eye(d), inf.net_config, residual
            )
            raw = data[f"ref{i}_generator"].tobytes()
            try:
                ref.generator = eqx.tree_deserialise_leaves(io.BytesIO(raw), like)
            except Exception:  # noqa: BLE001 - a G_high saved before it was whitened
                like = Generator(jax.random.PRNGKey(0), 0, d, **inf.net_config)
                ref.generator = eqx.tree_deserialise_leaves(io.BytesIO(raw), like)
        except Exception as e:  # noqa: BLE001 - any inconsistency is the same clear error
            raise ValueError(f"{path}: refinement {i} is incomplete or corrupted: {e}") from e
        if ref.theta.shape[1:] != (inf.spec.dim,) or ref.y.shape != (inf.spec.obs_dim,):
            raise ValueError(f"{path}: refinement {i} does not match the model's sites")
        inf._refinements[m["key"]] = ref


def _schedule_to_json(schedule):
    fields = {k: float(v) for k, v in vars(schedule).items()}
    return {"type": type(schedule).__name__, "fields": fields}


def _schedule_from_json(d):
    from . import _schedule

    cls = getattr(_schedule, d["type"], None)
    if cls is None:
        raise ValueError(f"unknown schedule {d['type']!r} in the saved file")
    return cls(**d["fields"])
