"""Saving and loading prior simulations and trained generators (one .npz file)."""

from __future__ import annotations

import io
import json

import equinox as eqx
import jax
import numpy as np

from . import _model

FORMAT_VERSION = 1


def save(inf, path):
    sims = inf.simulations
    leaves = jax.tree.leaves(sims.dists)
    arrays = {f"dist_{i}": np.asarray(x) for i, x in enumerate(leaves)}
    meta = dict(
        format_version=FORMAT_VERSION,
        latent_shapes={k: list(v) for k, v in inf.spec.latent_shapes.items()},
        observed_shapes={k: list(v) for k, v in inf.spec.observed_shapes.items()},
        num_dist_leaves=len(leaves),
        settings=inf._settings,
        schedule=_schedule_to_json(inf.schedule),
        has_generator=inf.generator is not None,
        diagnostics={k: v for k, v in inf.diagnostics.items() if k != "train_history"},
    )
    if inf.generator is not None:
        buf = io.BytesIO()
        eqx.tree_serialise_leaves(buf, inf.generator)
        arrays["generator"] = np.frombuffer(buf.getvalue(), np.uint8)
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
            f"numpyro_mfdiff reads version {FORMAT_VERSION}"
        )
    settings = dict(meta["settings"])
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
    inf._args, inf._kwargs = tuple(args), dict(kwargs)
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
    if treedef.num_leaves != meta["num_dist_leaves"]:
        raise ValueError(f"{path} does not match the model's observed-site distributions")
    dists = jax.tree.unflatten(treedef, [data[f"dist_{i}"] for i in range(treedef.num_leaves)])
    sims = _model.Simulations(theta=data["theta"], y=data["y"], dists=dists, valid=data["valid"])
    inf._set_simulations(sims)
    inf.diagnostics.update(meta["diagnostics"])
    if meta["has_generator"]:
        like = inf._new_generator(jax.random.PRNGKey(0))
        inf.generator = eqx.tree_deserialise_leaves(io.BytesIO(data["generator"].tobytes()), like)
        inf._make_draw()
    return inf


def _schedule_to_json(schedule):
    fields = {k: float(v) for k, v in vars(schedule).items()}
    return {"type": type(schedule).__name__, "fields": fields}


def _schedule_from_json(d):
    from . import _schedule

    cls = getattr(_schedule, d["type"], None)
    if cls is None:
        raise ValueError(f"unknown schedule {d['type']!r} in the saved file")
    return cls(**d["fields"])
