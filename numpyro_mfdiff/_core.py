"""What the methods of :class:`~numpyro_mfdiff.MFDiff` share: its config, state and
diagnostics, compiled functions of the state, and the checks of observations."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np

from . import _domain, _model
from ._sampling import compile_deterministic, make_draws, prior_fns

__all__ = ["Core"]


class Core:
    """The config, state and diagnostics of an inference, and helpers over them."""

    def _setup(self, model, config, state, diagnostics):
        self.model = model
        self._config, self._state, self.diagnostics = config, state, diagnostics
        self._compiled = {}  # compiled functions of the state, built on first use
        return self

    # -------------------------------------------------------------- helpers
    def _cached(self, name, build):
        """``build()``, compiled once per state of the simulations."""
        if name not in self._compiled:
            self._compiled[name] = build()
        return self._compiled[name]

    def _draws(self):
        """Compiled generator draws, single and batched (:func:`make_draws`)."""
        return self._cached("draws", lambda: make_draws(self.spec.constrain))

    def _deterministic(self):
        """Compiled deterministic sites (:func:`compile_deterministic`), or None."""
        st = self._state
        return self._cached(
            "deterministic",
            lambda: compile_deterministic(
                self._inner_model(),
                st.spec,
                st.args,
                st.kwargs,
                _model.hidden_sites(st.reparam),
                st.data_args,
            ),
        )

    def _prior_fns(self):
        """Compiled ``log p(theta)`` (unconstrained, batched) and prior draws from keys."""
        st = self._state
        return self._cached(
            "prior", lambda: prior_fns(self._inner_model(), st.spec, st.args, st.kwargs)
        )

    def _inner_model(self, model=None):
        """``model`` (default: this inference's) as the inference runs it: with the latent
        sites of ``state.reparam`` non-centred (``reparam="auto"``)."""
        return _model.reparam_model(self.model if model is None else model, self._state.reparam)

    def _high_model(self, model):
        """A high-fidelity ``model`` given to :meth:`refine` non-centred as this inference's
        (None, or this inference's own model: None, the same fidelity)."""
        return None if model is None or model is self.model else self._inner_model(model)

    @property
    def _user_latents(self) -> list:
        """The user's latent site names: the spec's, non-centred sites by their own name."""
        hidden = set(_model.hidden_sites(self._state.reparam))
        names = [n for n in self.spec.latent_shapes if n not in hidden]
        return sorted([*names, *self._state.reparam])

    def _observations(self, observations):
        """``observations``, or the default ones (data given to :meth:`run`) when None."""
        if observations is not None:
            return observations
        if self.default_observations is None:
            raise ValueError(
                "no observations given and none stored: pass observations={site: value}, "
                "or pass the data to run as a model argument (run(key, ..., y=data))"
            )
        return self.default_observations

    def _low_summary(self, ys, skip=None):
        """``(log Z (B,), ESS (B,))`` of the bank's exact log-weights at flat ``ys`` (B, M)
        (:func:`~numpyro_mfdiff._domain.compile_summary`, compiled once per bank)."""
        fn = self._cached("summary", lambda: _domain.compile_summary(self.bank))
        skip = np.full(len(ys), -1) if skip is None else skip
        return (np.asarray(a, np.float64) for a in fn(jnp.asarray(ys), jnp.asarray(skip)))

    def _domain(self):
        """The reference log evidences of the domain check, computed once per bank."""
        sims = self.simulations
        return self._cached(
            "domain",
            lambda: _domain.reference(
                self._low_summary, sims.y, sims.valid, self._config.num_simulations
            ),
        )

    def _check(self, observations, warn=True, fidelity=None, sampler=None):
        """Flat observations (M,) or (B, M), checked: the ESS warning (``warn``), the
        domain check of the rows ``G_low`` serves (``sampler="generator"``), and a
        ``ValueError`` for rows with no finite likelihood weight (``sampler="sample_ode"``
        or ``"refine"``)."""
        self._require_sims()
        y = _model.check_observations(self.spec, self._observations(observations))
        if not warn and sampler is None:
            return y
        rows = np.atleast_2d(y)
        refs = [self._refinement(r, fidelity) for r in rows]
        low = np.flatnonzero([r is None for r in refs])
        e = np.asarray([np.inf if r is None else r.ess for r in refs], np.float64)
        if low.size:
            log_z, e[low] = self._low_summary(rows[low])
            if sampler in ("sample_ode", "refine"):
                _domain.require_weights(log_z, low, sampler)
            if sampler == "generator":  # rows warned about say their ESS there
                policy, dom = self._config.domain_check, self._domain()
                e[low[_domain.check(policy, dom, log_z, e[low], rows[low], low)]] = np.inf
        if warn and np.any(e < self.ess_warning):
            warnings.warn(
                f"the effective sample size of the likelihood weights is {e.min():.1f} "
                f"(< {self.ess_warning:g}): few prior simulations inform this posterior; "
                "increase num_simulations or refine",
                stacklevel=3,
            )
        return y

    def _require_sims(self):
        if self.simulations is None:
            raise RuntimeError("no prior simulations yet: call .run(rng_key, ...) first")

    def _require_generator(self):
        if self.generator is None:
            raise RuntimeError("no generator yet: call .run(rng_key, ...) first")
