"""Chunked simulation runs: checkpoints on disk, resume, failure budget, executors.

The unit of work is a *chunk*: a slice of the per-simulation keys (split up
front, so chunk ``i`` always gets the same keys) and, for refinement, the
same slice of given latent values. :func:`run_chunks` runs the chunks of one
compiled simulation function in order, writes each finished chunk to a
:class:`Checkpoint` (``chunk_00000.npz`` ... written to a temporary file and
moved into place with ``os.replace``, so a killed run never leaves a partial
chunk), and on a restart with the same manifest loads finished chunks
instead of running them again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import Distribution

from . import _external

__all__ = [
    "Checkpoint",
    "run_chunks",
    "leaf_names",
    "fingerprint",
    "key_fingerprint",
    "FailureBudgetError",
]

CHECKPOINT_VERSION = 1


class FailureBudgetError(RuntimeError):
    """More simulations failed than ``max_failure_fraction`` allows."""


def _is_dist(x):
    return isinstance(x, Distribution)


def leaf_names(tree) -> list[str]:
    """Names of the leaves of ``tree``, in ``jax.tree.leaves`` order, equal in every process.

    NumPyro distributions flatten their parameters in the iteration order of
    a ``set`` of field names, which changes between processes (string hash
    randomisation), so leaves saved by position in one process would be read
    back into the wrong parameters in another. Files therefore store leaves
    by these names (e.g. ``"[2]['y'].loc"``).
    """
    out = []
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_dist)
    for path, node in flat:
        p = jax.tree_util.keystr(path)
        if _is_dist(node):
            children, _ = node.tree_flatten()
            if type(node).tree_flatten is Distribution.tree_flatten:
                fields = type(node).gather_pytree_data_fields()
            else:
                fields = [f"<{i}>" for i in range(len(children))]
            for f, c in zip(fields, children, strict=True):
                out += [f"{p}.{f}{sub}" for sub in leaf_names(c)]
        else:
            out.append(p)
    return out


def key_fingerprint(key) -> list:
    """The raw ``uint32`` data of a JAX key (typed or raw) as a JSON-friendly list."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key).ravel().tolist()


def fingerprint(*objs) -> str:
    """SHA-256 over array contents, numbers and strings of ``objs`` (any pytrees).

    Leaves that are neither (functions, objects) contribute only their type
    name, so a fingerprint is the same in another process.
    """
    h = hashlib.sha256()
    leaves, treedef = jax.tree.flatten(objs, is_leaf=lambda x: x is None)
    h.update(str(treedef).encode())
    for x in leaves:
        if x is None or isinstance(x, (bool, int, float, complex, str, bytes)):
            h.update(repr(x).encode())
        elif isinstance(x, (np.ndarray, np.generic, jax.Array)):
            a = np.asarray(x)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        else:
            h.update(type(x).__qualname__.encode())
    return h.hexdigest()


class Checkpoint:
    """A directory of finished chunks plus ``manifest.json`` describing the run.

    Opening a directory that already holds a manifest checks it field by field
    against ``manifest`` and raises ``ValueError`` naming the first difference:
    a checkpoint is never reused for a different run.
    """

    def __init__(self, directory, manifest: dict):
        self.dir = Path(directory)
        self.manifest = json.loads(json.dumps(manifest))  # normalise tuples to lists
        self.manifest["checkpoint_version"] = CHECKPOINT_VERSION
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "manifest.json"
        if path.exists():
            try:
                saved = json.loads(path.read_text())
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"{path} is not a readable checkpoint manifest: {e}") from e
            for k in sorted(set(saved) | set(self.manifest)):
                if saved.get(k) != self.manifest.get(k):
                    raise ValueError(
                        f"checkpoint directory {self.dir} was written for a different run: "
                        f"{k} is {saved.get(k)!r} there and {self.manifest.get(k)!r} now. "
                        "Use another directory, or delete this one to start afresh"
                    )
        else:
            _atomic_write(path, json.dumps(self.manifest, indent=1).encode())

    def chunk_path(self, i: int) -> Path:
        return self.dir / f"chunk_{i:05d}.npz"

    def finished(self) -> list[int]:
        """Indices of the chunks on disk."""
        return sorted(int(p.stem[6:]) for p in self.dir.glob("chunk_*.npz"))

    def load(self, i: int, like: dict):
        """Chunk ``i`` as ``(arrays, info)``, or ``None`` if not finished.

        ``like`` maps leaf names to the expected shapes/dtypes; ``arrays`` maps
        the same names to arrays. A file that does not match or cannot be
        read is a ``ValueError`` naming it.
        """
        path = self.chunk_path(i)
        if not path.exists():
            return None
        try:
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
                info = json.loads(str(f["info"]))
                arrays = {name: f[name] for name in like}
        except Exception as e:  # noqa: BLE001
            raise ValueError(
                f"checkpoint chunk {path} is unreadable ({type(e).__name__}: {e}); delete it "
                "to simulate that chunk again"
            ) from e
        for name, ref in like.items():
            x = arrays[name]
            if x.shape != tuple(ref.shape) or x.dtype != np.dtype(ref.dtype):
                raise ValueError(
                    f"checkpoint chunk {path}: array {name} has shape {x.shape} and dtype "
                    f"{x.dtype}, expected {tuple(ref.shape)} and {np.dtype(ref.dtype)}"
                )
        return arrays, info

    def save(self, i: int, arrays: dict, info: dict):
        """Write chunk ``i`` (``arrays``: name -> array) atomically."""
        arrays = {name: np.asarray(x) for name, x in arrays.items()}
        tmp = self.chunk_path(i).with_suffix(".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, info=np.array(json.dumps(info)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.chunk_path(i))


def _atomic_write(path: Path, data: bytes):
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _host(x):
    return x if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else np.asarray(x)


def _concat(xs):
    return np.concatenate(xs) if isinstance(xs[0], np.ndarray) else jnp.concatenate(xs)


def run_chunks(
    fn: Callable,
    inputs,
    chunk_size: int,
    *,
    out_like,
    count_failed: Callable,
    pad: bool = True,
    padded_size: int | None = None,
    checkpoint: Checkpoint | None = None,
    executor=None,
    max_failure_fraction: float | None = None,
    progress: Callable | None = None,
):
    """Run ``fn`` over ``inputs`` in chunks; returns ``(outputs, num_failed, messages)``.

    Args:
        fn: compiled batch function, ``fn(*chunk_inputs) -> pytree`` (leading axis = chunk).
        inputs: tuple of arrays with a common leading axis ``N`` (keys, given latents...).
        chunk_size: rows per call.
        out_like: pytree of ``jax.ShapeDtypeStruct`` for ONE row of output.
        count_failed: ``count_failed(chunk_output) -> int`` failed rows in a chunk.
        pad: pad the last chunk to ``chunk_size`` (one compilation; padding rows
            are real calls, so turn it off for expensive external simulators).
        padded_size: with ``pad``, the rows of each call (default ``chunk_size``).
        checkpoint: where finished chunks are written and found again.
        executor: executor for external simulators during the run.
        max_failure_fraction: stop with :class:`FailureBudgetError` once more than
            this fraction of ``N`` has failed (the final fraction can only be larger).
        progress: callable receiving the rows finished per chunk.

    Outputs are concatenated on the host (NumPy), ``messages`` are the first
    few exception summaries from external simulators.
    """
    # on the host (typed PRNG keys excepted): slicing and padding device arrays would
    # compile a program per chunk shape
    inputs = jax.tree.map(_host, inputs)
    num = int(jax.tree.leaves(inputs)[0].shape[0])
    leaves_like, treedef = jax.tree.flatten(out_like)
    names = leaf_names(out_like)
    budget = math.inf if max_failure_fraction is None else math.floor(max_failure_fraction * num)
    parts, failed, messages, num_errors = [], 0, [], 0
    size = chunk_size if padded_size is None else int(padded_size)
    with _external.session(executor) as sess:
        for i, start in enumerate(range(0, num, chunk_size)):
            chunk = jax.tree.map(lambda x, s=start: x[s : s + chunk_size], inputs)
            n = int(jax.tree.leaves(chunk)[0].shape[0])
            like = {
                name: jax.ShapeDtypeStruct((n, *x.shape), x.dtype)
                for name, x in zip(names, leaves_like, strict=True)
            }
            loaded = checkpoint.load(i, like) if checkpoint is not None else None
            if loaded is not None:
                arrays, info = loaded
                out = jax.tree.unflatten(treedef, [arrays[name] for name in names])
            else:
                args = chunk
                if pad and n < size:  # same shapes as the other chunks: no recompilation
                    fill = np.arange(size - n) % num  # the first rows, repeated if need be
                    args = jax.tree.map(lambda c, x, f=fill: _concat([c, x[f]]), chunk, inputs)
                out = jax.tree.map(lambda x, n=n: np.asarray(x)[:n], jax.device_get(fn(*args)))
                errs, msgs = sess.drain()
                info = dict(index=i, size=n, num_errors=errs, messages=msgs)
                if checkpoint is not None:
                    leaves = jax.tree.leaves(out)
                    checkpoint.save(i, dict(zip(names, leaves, strict=True)), info)
            parts.append(out)
            num_errors += info["num_errors"]
            messages.extend(info["messages"][: _external.MAX_MESSAGES - len(messages)])
            failed += int(count_failed(out))
            if progress is not None:
                progress(n)
            if failed > budget:
                first = "; ".join(messages[:3])
                raise FailureBudgetError(
                    f"{failed} of {num} simulations have failed after {start + n} were run, "
                    f"more than max_failure_fraction={max_failure_fraction} allows "
                    f"({budget} of {num})"
                    + (f"; first errors: {first}" if first else "")
                    + ". Fix the simulator or raise max_failure_fraction"
                    + (f" (finished chunks are kept in {checkpoint.dir})" if checkpoint else "")
                )
    outputs = jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
    return outputs, failed, messages
