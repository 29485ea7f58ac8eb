"""Generator networks and their regression fit."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "FIT_MEAN_TOL",
    "FIT_SD_RANGE",
    "CentredGenerator",
    "Generator",
    "calibrate",
    "calibrate_centred",
    "fit_generator",
    "generate",
    "generator_check",
    "generator_off",
]


class Generator(eqx.Module):
    """``G(y, z) -> theta``: an MLP with standardisation built in.

    Call with ``y`` of shape (M,) (or (0,) for an unconditional generator) and
    ``z`` of shape (D,); returns unconstrained ``theta`` of shape (D,). Inputs
    and outputs are standardised with the stored means and scales, or, with
    ``theta_chol`` (D, D), the output is whitened: ``theta = theta_mean +
    theta_chol @ u``. ``residual=True`` adds ``z`` to the network's output
    ``u``, so the network fits only the departure from the Gaussian
    ``N(theta_mean, theta_chol theta_chol^T)`` (``G_high``).
    """

    mlp: eqx.nn.MLP
    heads: int = eqx.field(static=True)
    gate_scale: float = eqx.field(static=True)
    y_mean: jax.Array
    y_scale: jax.Array
    theta_mean: jax.Array
    theta_scale: jax.Array
    theta_chol: jax.Array | None
    residual: bool = eqx.field(static=True)

    def __init__(
        self,
        key,
        obs_dim,
        dim,
        width=128,
        depth=3,
        y_mean=None,
        y_scale=None,
        theta_mean=None,
        theta_scale=None,
        activation: Callable = jax.nn.gelu,
        heads: int = 4,
        gate_scale: float = 10.0,
        theta_chol=None,
        residual: bool = False,
    ):
        self.heads = int(heads)
        self.gate_scale = float(gate_scale)
        out = dim if self.heads == 1 else 2 * self.heads * dim
        self.mlp = eqx.nn.MLP(obs_dim + dim, out, width, depth, activation=activation, key=key)
        self.y_mean = jnp.zeros(obs_dim) if y_mean is None else jnp.asarray(y_mean)
        self.y_scale = jnp.ones(obs_dim) if y_scale is None else jnp.asarray(y_scale)
        self.theta_mean = jnp.zeros(dim) if theta_mean is None else jnp.asarray(theta_mean)
        self.theta_scale = jnp.ones(dim) if theta_scale is None else jnp.asarray(theta_scale)
        self.theta_chol = None if theta_chol is None else jnp.asarray(theta_chol, jnp.float32)
        self.residual = bool(residual)

    def standardised(self, y_std, z):
        """Network output in standardised coordinates, from standardised ``y``."""
        out = self.mlp(jnp.concatenate([y_std, z]))
        if self.heads > 1:
            dim = z.shape[-1]
            logits = self.gate_scale * out[: self.heads * dim].reshape(self.heads, dim)
            vals = out[self.heads * dim :].reshape(self.heads, dim)
            out = jnp.sum(jax.nn.softmax(logits, axis=0) * vals, axis=0)
        return out + z if self.residual else out

    def __call__(self, y, z):
        y_std = (y - self.y_mean) / self.y_scale
        u = self.standardised(y_std, z)
        if self.theta_chol is None:
            return self.theta_mean + self.theta_scale * u
        return self.theta_mean + jnp.matmul(self.theta_chol, u, precision=jax.lax.Precision.HIGHEST)


@eqx.filter_jit
def generate(gen, y, z):
    """``gen(y, z_s)`` (S, D) for one observation ``y`` (M,) and noise ``z`` (S, D),
    4096 rows a step (an unconditional ``G_high``: ``y`` of shape (0,))."""
    return jax.lax.map(lambda zi: gen(y, zi), z, batch_size=4096)


def _optimiser(learning_rate, num_steps):
    """Adam on a cosine decay from ``learning_rate`` over ``num_steps`` (to 1e-3 of it)."""
    return optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps, alpha=1e-3))


@eqx.filter_jit  # one program, not one per parameter's zeros
def _init_optimiser(params, opt_args):
    return _optimiser(*opt_args).init(params)


def _loss(p, static, batch, loss, huber_delta):
    """Mean over rows of the summed per-coordinate loss of ``eqx.combine(p, static)`` on
    ``batch`` = (y_std, z, u)."""
    g = eqx.combine(p, static)
    yb, zb, ub = batch
    err = jax.vmap(g.standardised)(yb, zb) - ub
    if loss == "l1":
        e = jnp.abs(err)
    elif loss == "huber":
        e = optax.huber_loss(err, delta=huber_delta) / huber_delta
    else:
        e = err**2
    return jnp.mean(jnp.sum(e, axis=-1))


@eqx.filter_jit
def _train_block(p, s, key, train, valid, static, opt_args, loss_args, batch_size, nsteps):
    """``nsteps`` Adam steps on minibatches of ``train``, then the held-out loss on ``valid``.
    A module-level function of its data (not a closure over it): fits of the same
    shapes and settings share one compiled program, in a process and through JAX's
    persistent cache."""
    opt = _optimiser(*opt_args)

    def step(carry, kk):
        p, s = carry
        idx = jax.random.randint(kk, (batch_size,), 0, train[0].shape[0])
        value, grads = jax.value_and_grad(_loss)(
            p, static, tuple(x[idx] for x in train), *loss_args
        )
        updates, s = opt.update(grads, s, p)
        return (eqx.apply_updates(p, updates), s), value

    (p, s), losses = jax.lax.scan(step, (p, s), jax.random.split(key, nsteps))
    return p, s, jnp.mean(losses), _loss(p, static, valid, *loss_args)


def fit_generator(
    key,
    gen: Generator,
    y_std,
    z,
    u,
    *,
    num_steps=10_000,
    batch_size=512,
    learning_rate=5e-3,
    loss="l1",
    validation_fraction=0.1,
    eval_every=500,
    progress=None,
    select="best",
    huber_delta=0.05,
):
    """Fit ``gen`` by regression of ``u`` on ``(y_std, z)``.

    ``y_std`` (T, M), ``z`` (T, D), ``u`` (T, D): standardised labelled
    triples. ``loss`` is ``"l1"`` (absolute error, default: the few triples
    next to a jump between modes do not dominate the fit), ``"mse"`` or
    ``"huber"`` (quadratic within ``huber_delta``, scaled to match L1 beyond).
    Adam with cosine decay; the held-out loss is checked every ``eval_every``
    steps and the parameters of the best check are returned
    (``select="best"``) or those at the end (``select="last"``). ``progress`` receives the
    number of finished steps. Returns ``(generator, history)`` where history
    has the train and validation losses at each check.
    """
    if loss not in ("l1", "mse", "huber"):
        raise ValueError(f"loss must be 'l1', 'mse' or 'huber', got {loss!r}")
    if select not in ("best", "last"):
        raise ValueError(f"select must be 'best' or 'last', got {select!r}")
    n = u.shape[0]
    k_perm, k_train = jax.random.split(key)
    perm = np.asarray(jax.random.permutation(k_perm, n))
    n_val = int(round(validation_fraction * n)) if n >= 20 else 0
    val, tr = perm[:n_val], perm[n_val:]
    # split on the host: indexing device arrays would compile a gather per shape
    data = tuple(np.asarray(x, np.float32) for x in (y_std, z, u))
    train = tuple(jnp.asarray(x[tr]) for x in data)
    valid = tuple(jnp.asarray(x[val]) for x in data) if n_val else train
    batch_size = min(batch_size, train[0].shape[0])
    opt_args = (float(learning_rate), int(num_steps))
    loss_args = (loss, float(huber_delta))
    # the loss only sees the MLP: the standardisation constants get zero
    # gradients, hence zero Adam updates, and stay as they are
    params, static = eqx.partition(gen, eqx.is_inexact_array)
    opt_state = _init_optimiser(params, opt_args)

    best = (jnp.inf, params)
    history = []
    done = 0
    keys = jax.random.split(k_train, -(-num_steps // eval_every))
    for kb in keys:
        nsteps = min(eval_every, num_steps - done)
        params, opt_state, tl, vl = _train_block(
            params, opt_state, kb, train, valid, static, opt_args, loss_args, batch_size, nsteps
        )
        done += nsteps
        history.append((done, float(tl), float(vl)))
        if select == "last" or float(vl) < float(best[0]):
            best = (vl, params)
        if progress is not None:
            progress(nsteps)
    return eqx.combine(best[1], static), history


# a generator against its labels: a warning beyond this mean error (in label sds) or sd ratio
FIT_MEAN_TOL = 0.2
FIT_SD_RANGE = (0.8, 1.25)


def generator_check(draws, labels) -> dict:
    """A fitted generator's draws (S, D) against the labels (S, D) it was fitted to, at
    the same noise: the largest mean difference in label sds (``mean_error``) and the
    sd ratio per coordinate (``sd_ratio``, a list)."""
    draws, labels = np.asarray(draws, np.float64), np.asarray(labels, np.float64)
    sd = np.maximum(labels.std(0), 1e-12)
    return dict(
        mean_error=float(np.max(np.abs(draws.mean(0) - labels.mean(0)) / sd)),
        sd_ratio=(draws.std(0) / sd).tolist(),
    )


def generator_off(check) -> bool:
    """Whether a :func:`generator_check` is beyond ``FIT_MEAN_TOL`` or ``FIT_SD_RANGE``."""
    lo, hi = FIT_SD_RANGE
    ratio = check["sd_ratio"]
    return check["mean_error"] > FIT_MEAN_TOL or not lo <= min(ratio) <= max(ratio) <= hi


def _affine(draws, mean, chol):
    """``(a (D, D), m_g (D,))``: the map ``mean + a (x - m_g)`` that gives ``draws`` (S, D)
    the mean ``mean`` and covariance ``chol chol^T``, and their mean ``m_g``."""
    draws = np.asarray(draws, np.float64)
    m_g = draws.mean(0)
    c_g = np.atleast_2d(np.cov(draws, rowvar=False))
    return np.asarray(chol, np.float64) @ np.linalg.inv(np.linalg.cholesky(c_g)), m_g


def calibrate(gen: Generator, draws, mean, chol):
    """``gen`` with its output moved by the affine map that gives its ``draws`` (S, D)
    the weighted particles' ``mean`` (D,) and covariance ``chol chol^T``, and the draws
    so moved. A regression fit of the ODE's map from ``z`` learns its conditional mean
    and so shrinks where the map is too irregular to learn: ``G_high`` came out 8%
    narrower than its labels in every coordinate on issue 26's 34-parameter model."""
    a, m_g = _affine(draws, mean, chol)
    new_mean = np.asarray(mean, np.float64) + a @ (np.asarray(gen.theta_mean, np.float64) - m_g)
    new_chol = a @ np.asarray(gen.theta_chol, np.float64)
    gen = eqx.tree_at(
        lambda g: (g.theta_mean, g.theta_chol),
        gen,
        (jnp.asarray(new_mean, jnp.float32), jnp.asarray(new_chol, jnp.float32)),
    )
    moved = np.asarray(mean, np.float64) + (np.asarray(draws, np.float64) - m_g) @ a.T
    return gen, moved.astype(np.float32)


class CentredGenerator(eqx.Module):
    """``G_high`` of a model with non-centred sites, calibrated in their centred
    coordinates: ``gen(y, z)`` (D,) mapped by ``to_centred``, moved by ``shift +
    matrix @ c`` and mapped back by ``to_noncentred``
    (:class:`~numpyro_mfdiff._model.Centring`); called as ``gen``, it returns an
    unconstrained (D,)."""

    gen: Generator
    shift: jax.Array
    matrix: jax.Array
    to_centred: Callable = eqx.field(static=True)
    to_noncentred: Callable = eqx.field(static=True)

    @property
    def residual(self) -> bool:
        return self.gen.residual

    def __call__(self, y, z):
        c = self.to_centred(self.gen(y, z))
        hi = jax.lax.Precision.HIGHEST
        return self.to_noncentred(self.shift + jnp.matmul(self.matrix, c, precision=hi))


def calibrate_centred(gen: Generator, draws, mean, chol, centring):
    """``gen`` as a :class:`CentredGenerator` whose draws (``draws`` (S, D), unconstrained)
    have, in the centred coordinates of ``centring``, the mean ``mean`` (D,) and
    covariance ``chol chol^T`` (those of the labels they were fitted to, there), and
    those draws, centred and so moved. The network keeps the second moments of the
    non-centred coordinates and loses part of their dependence (issue 26: ``alpha = mu
    + tau eta`` up to 11% too wide)."""
    c = np.asarray(centring.rows_centred(jnp.asarray(draws, jnp.float32)), np.float64)
    a, m_g = _affine(c, mean, chol)
    shift = np.asarray(mean, np.float64) - a @ m_g
    f32 = partial(jnp.asarray, dtype=jnp.float32)
    out = CentredGenerator(gen, f32(shift), f32(a), centring.to_centred, centring.to_noncentred)
    return out, (shift + c @ a.T).astype(np.float32)
