"""The numbers of the public API at fixed keys, written to one ``.npz`` (issue 27's check).

Runs the quadratic example and the linear-Gaussian model of ``tests/models.py`` through
``run``, ``get_samples``, ``sample_ode``, ``ess``, the generator check, ``refine`` of one
observation (engine ``"is"`` and ``"smc"``) and of a batch, ``save`` + ``load`` and
``to_inference_data`` at small budgets, and stores every array. A re-layout of the
package must leave each of them bitwise equal.

    python benchmarks/fingerprint.py --out fp.npz [--saved FILE]
    python benchmarks/fingerprint.py --compare fp_main.npz fp.npz

``--saved FILE`` loads a file written by ``save`` (``--write-saved FILE`` writes the
quadratic build's) and fingerprints its draws (default: the file just written): a file
saved by an earlier version must load and draw as it did there.

Bitwise only at a fixed number of CPU cores: XLA's CPU reductions are split by thread
count, so the same tree on one core and on two differs in its last bits (43 of 178
arrays, amplified by training). Make both fingerprints under the same ``taskset``, e.g.
``taskset -c 1 python benchmarks/fingerprint.py --out fp.npz``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from models import SMALL, linear_gaussian  # noqa: E402

from numpyro_mfdiff import MFDiff  # noqa: E402
from numpyro_mfdiff.examples import quadratic  # noqa: E402

X_OBS = {"x": np.array([0.5, -0.3, 0.8, 0.2])}
XS = np.array([[0.5, -0.3, 0.8, 0.2], [-0.4, 0.6, 0.1, 0.0]])


# wall-clock figures in the diagnostics: not numbers of the method
CLOCK = ("seconds", "timings")


def _clock(key) -> bool:
    return any(part in CLOCK for part in key.split("/"))


def _flat(prefix, tree, out):
    """Every array leaf of a (nested) dict into ``out`` under ``prefix/key`` (clock
    readings left out)."""
    if _clock(prefix):
        return
    if isinstance(tree, dict):
        for k in sorted(tree):
            _flat(f"{prefix}/{k}", tree[k], out)
    elif isinstance(tree, (list, tuple)) and tree and not np.isscalar(tree[0]):
        for i, v in enumerate(tree):
            _flat(f"{prefix}/{i}", v, out)
    else:
        try:
            a = np.asarray(tree)
        except Exception:
            return
        if a.dtype.kind in "biuf":
            out[prefix] = a


def _idata(prefix, idata, out):
    for g in idata.groups():
        ds = idata[g]
        for v in ds.data_vars:
            out[f"{prefix}/{g}/{v}"] = np.asarray(ds[v].values)


def _draws(prefix, inf, obs, out):
    k = jax.random.PRNGKey(11)
    _flat(f"{prefix}/get_samples", inf.get_samples(k, obs, 200), out)
    _flat(f"{prefix}/sample_ode", inf.sample_ode(k, obs, 200), out)
    out[f"{prefix}/ess"] = np.asarray(inf.ess(obs))


def fingerprint(saved=None, write_saved=None) -> dict:
    out = {}
    key = jax.random.PRNGKey
    with tempfile.TemporaryDirectory() as tmp:
        # the quadratic example
        q = MFDiff(quadratic, num_simulations=2000, **SMALL).run(key(0))
        _draws("quad", q, {"y": 1.0}, out)
        _draws("quad_batch", q, {"y": np.array([0.5, 1.0, 2.0])}, out)
        _flat("quad/generator_check", q.diagnostics["generator_check"], out)
        _flat("quad/triples", q.triples, out)
        _flat("quad/grid", q.grid, out)
        q.refine(key(3), {"y": 1.0}, max_simulations=600, engine="is", train_steps=50)
        _draws("quad/refined_is", q, {"y": 1.0}, out)
        _flat("quad/refinements", q.diagnostics["refinements"], out)
        path = os.path.join(tmp, "q.npz")
        q.save(path)
        if write_saved:
            q.save(write_saved)
        q2 = MFDiff.load(path, quadratic)
        _draws("quad/loaded", q2, {"y": 1.0}, out)
        _draws("quad/loaded_low", q2, {"y": 0.5}, out)
        # a file written by another version (default: the one just written)
        q3 = MFDiff.load(saved or path, quadratic)
        _draws("saved/loaded", q3, {"y": 1.0}, out)
        _draws("saved/loaded_low", q3, {"y": 0.5}, out)
        _idata("quad/idata", q.to_inference_data(key(5), {"y": 1.0}, 100, num_chains=2), out)

        # the linear-Gaussian model, data given to run
        lin = MFDiff(linear_gaussian, num_simulations=2000, **SMALL)
        lin.run(key(1), x=X_OBS["x"])
        _draws("lin", lin, None, out)
        _draws("lin_batch", lin, {"x": XS}, out)
        _flat("lin/generator_check", lin.diagnostics["generator_check"], out)
        _idata("lin/idata", lin.to_inference_data(key(6), num_samples=100, prior=True), out)
        lin.refine(key(4), X_OBS, max_simulations=800, engine="smc", train_steps=50)
        _draws("lin/refined_smc", lin, X_OBS, out)
        _flat("lin/refinements", lin.diagnostics["refinements"], out)
        lin.refine(key(7), {"x": XS}, max_simulations=400, rounds=1)
        _draws("lin/pooled", lin, {"x": XS}, out)
        _flat("lin/pooled_record", lin.diagnostics["pooled"], out)
        path = os.path.join(tmp, "lin.npz")
        lin.save(path)
        lin2 = MFDiff.load(path, linear_gaussian, x=X_OBS["x"])
        _draws("lin/loaded", lin2, X_OBS, out)
        _idata("lin/loaded_idata", lin2.to_inference_data(key(6), num_samples=100), out)
    return out


def compare(a, b) -> int:
    fa, fb = np.load(a), np.load(b)
    differ = 0
    for k in sorted(set(fa.files) | set(fb.files)):
        if _clock(k):
            continue
        if k not in fa.files or k not in fb.files:
            print(f"{k}: only in {'A' if k in fa.files else 'B'}")
            differ += 1
            continue
        x, y = fa[k], fb[k]
        if x.shape != y.shape or x.dtype != y.dtype:
            print(f"{k}: shape/dtype {x.shape} {x.dtype} vs {y.shape} {y.dtype}")
            differ += 1
            continue
        same = np.array_equal(x, y, equal_nan=x.dtype.kind == "f")
        d = 0.0 if same or x.size == 0 else float(np.nanmax(np.abs(x.astype(float) - y)))
        print(f"{k}: max abs diff {d:.3g}{'' if same else '  DIFFERS'}")
        differ += not same
    n = [sum(not _clock(k) for k in f.files) for f in (fa, fb)]
    print(f"{n[0]} vs {n[1]} arrays (clock readings left out), {differ} differ")
    return int(differ > 0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out")
    p.add_argument("--saved", help="a file written by save (an earlier version) to load")
    p.add_argument("--write-saved", help="also save the quadratic build to this path")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"))
    a = p.parse_args()
    if a.compare:
        sys.exit(compare(*a.compare))
    warnings.simplefilter("ignore")
    fp = fingerprint(a.saved, a.write_saved)
    np.savez(a.out, **fp)
    print(f"{len(fp)} arrays -> {a.out}")


if __name__ == "__main__":
    main()
