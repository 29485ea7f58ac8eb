import collections
import inspect
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The default suite is bound by XLA's compilations, not by running what it compiles:
# XLA's cheapest compile (backend optimisation level 0, LLVM's expensive passes off)
# takes tests/test_loglik_fast.py + tests/test_model_features.py from 239 s to 149 s
# (one core, empty cache). The slow checks run long trainings, which it slows down
# (test_refine_accuracy's gaussian10: see pytest_runtest_setup): they compile with
# XLA's optimisations, as users do (LLVM's level 2 rather than 3: below). An
# environment variable, so the subprocesses of the suite (the killed checkpointed
# run, the two-device checks, the CLI) inherit it;
# JAX_DISABLE_MOST_OPTIMIZATIONS=0 turns it off. No default of numpyro_mfdiff changes.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
_CHEAP_COMPILE = os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] not in ("", "0")


# XLA's compilations dominate the suite's time on a CPU, and many tests compile the
# same programs in fresh closures (each MFDiff jits its own): JAX's persistent cache,
# keyed by the compiled program, serves them from disk within a run and to the next
# one. Measured on tests/test_loglik_fast.py (CPU seconds, one shared machine): 137
# without, 105 with an empty cache, 62 warm.
# It lives in .cache/jax (git-ignored); MFDIFF_TEST_CACHE= (empty) turns it off.
_cache = os.environ.get(
    "MFDIFF_TEST_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "jax")
)
if _cache:
    # as environment variables, read by JAX at import (here and in the suite's
    # subprocesses: the CLI and checkpoint runs share the cache)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.abspath(_cache)
    # 0 (every compilation cached) measured slower: 161 s against 149 s on the two files
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    # A size limit turns on JAX's file lock around each read and write of the cache: the
    # two pytest-xdist workers share it, and one must not read an entry the other is
    # still writing (a failed read warns, and warnings are errors here). 4 GiB: no
    # eviction in practice (a whole run writes about 12 MB).
    os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(4 * 2**30)

import pytest  # noqa: E402

# in-process pytest sessions for the checks of these hooks (tests/test_ci_guards.py)
pytest_plugins = ["pytester"]


# XLA's CPU fusion emitters (the MLIR code generator of fused loops) take most of a
# cheap compilation: without them the default suite went from 930 s to 580 s on one
# core (296 tests, empty cache). What they compile runs faster, though (a slow accuracy
# check took 340 s without them against 154 s with), so they are off exactly where
# optimisations are: for the tests compiled cheaply (pytest_runtest_setup), by an
# option added to each of their compilations (the persistent cache's key includes it),
# and for those tests' subprocesses by XLA_FLAGS. MFDIFF_TEST_FUSION_EMITTERS=1 keeps
# them everywhere. Two more options of those compilations change nothing they compute:
# the machine code in one piece, not split for parallel compilation (the two workers
# keep both cores busy), and no copy of the program's text in the executable. They took
# tests/test_loglik_fast.py + test_model_features.py + test_score_fast.py (-n 0, empty
# cache, alternate runs on 2026-12-07) from 92.6 and 83.1 s to 85.4 and 79.9 s, with
# 6-11% less CPU time.
_FUSION_EMITTERS = os.environ.get("MFDIFF_TEST_FUSION_EMITTERS", "") not in ("", "0")
_CHEAP_XLA_OPTIONS = {
    "xla_cpu_parallel_codegen_split_count": 1,
    "xla_embed_ir_in_executable": False,
    **({} if _FUSION_EMITTERS else {"xla_cpu_use_fusion_emitters": False}),
}
# The tests compiled with optimisations (the slow checks, the default tests marked
# ``optimised``) have LLVM's optimisation level 2 rather than XLA's default 3: XLA's
# own passes and the libraries it calls (matrix products) are the same, the machine
# code is optimised less. The slow gaussian10 refinement check's calls (a script, one
# process, alternate runs on 2026-12-07): 76.2 and 73.2 s at level 3, 65.4 s at level
# 2 (and at 1), XLA's backend compile 20.5 and 17.7 s against 11.1 s, the ODE sampling
# (running what it compiled) 13.5 and 16.2 s against 13.6 s, 14% less CPU time.
_OPTIMISED_XLA_OPTIONS = {"xla_backend_optimization_level": 2}


def _flags(options):
    return [f"--{k}={str(v).lower()}" for k, v in options.items()]


_CHEAP_XLA_FLAGS, _OPTIMISED_XLA_FLAGS = _flags(_CHEAP_XLA_OPTIONS), _flags(_OPTIMISED_XLA_OPTIONS)


def _add_xla_options():
    from jax._src import compiler

    plain = compiler.get_compile_options
    if "env_options_overrides" not in inspect.signature(plain).parameters:
        return  # another JAX: the suite compiles as before, only slower

    def get_compile_options(*args, env_options_overrides=None, **kwargs):
        cheap = compiler._DISABLE_MOST_OPTIMIZATIONS.value  # this test compiles cheaply
        options = _CHEAP_XLA_OPTIONS if cheap else _OPTIMISED_XLA_OPTIONS
        env_options_overrides = {**options, **(env_options_overrides or {})}
        return plain(*args, env_options_overrides=env_options_overrides, **kwargs)

    compiler.get_compile_options = get_compile_options


def pytest_configure(config):
    """JAX's settings in each process that runs tests (before collection: test modules
    compute at import). The pytest-xdist controller runs none and imports no JAX: it
    took 2.2 s, before any worker started (2026-12-07)."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import numpyro

    numpyro.set_platform("cpu")
    _add_xla_options()


def pytest_unconfigure(config):
    """A pytest-xdist worker drops JAX's in-memory caches (traced and compiled programs)
    when its session ends, before pytest's five garbage collections at exit and JAX's
    own clean-up: a worker held 1.2-1.4 million objects at that point, and the last
    worker's exit is on the session's critical path. On tests/test_smc.py,
    test_loglik_fast.py, test_model_features.py and test_refine.py (-n 2, alternate runs
    on 2026-12-07), from the last test's end to the session's: 4.6 and 4.9 s before,
    3.0 and 3.5 s after. Workers only: the in-process sessions of tests/test_ci_guards.py
    share their process with the tests that follow."""
    if hasattr(config, "workerinput"):
        import jax

        jax.clear_caches()


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures are built
def pytest_runtest_setup(item):
    """XLA's cheapest compile for the default suite, its optimisations for the slow
    tests and the default tests marked ``optimised`` (those whose time goes to running
    what they compile; their module fixtures are built in their first test's setup, so
    after this), except the slow tests marked ``cheap`` (those whose time goes to
    compiling)."""
    full = any(item.get_closest_marker(m) is not None for m in ("slow", "optimised"))
    full = full and item.get_closest_marker("cheap") is None
    cheap = _CHEAP_COMPILE and not full
    import jax

    jax.config.update("jax_disable_most_optimizations", cheap)
    # and the test's subprocesses compile as it does (test_sharding compares a child's
    # results with this process's to 1e-5)
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1" if cheap else "0"
    flags = os.environ.get("XLA_FLAGS", "").split()
    flags = [f for f in flags if f not in _CHEAP_XLA_FLAGS + _OPTIMISED_XLA_FLAGS]
    os.environ["XLA_FLAGS"] = " ".join(
        flags + (_CHEAP_XLA_FLAGS if cheap else _OPTIMISED_XLA_FLAGS)
    )


@pytest.fixture
def no_simulation(monkeypatch):
    """Any simulation fails the test: for checks that must fail before simulating."""
    from numpyro_mfdiff import _model

    def fail(*a, **k):
        raise AssertionError("simulated before validating")

    monkeypatch.setattr(_model, "simulate", fail)


@pytest.fixture
def tiny():
    """Budgets of a tiny build (``models.TINY``, no ESS warning), a fresh dict per test:
    for tests of mechanics, not of accuracy."""
    from models import TINY

    return dict(TINY, ess_warning=0.0)


# ------------------------------------------- small builds shared by the session
# Each is built once per session and read by several files; a test that would refine,
# refit or otherwise change one builds its own instead.
@pytest.fixture(scope="session")
def quadratic_small():
    """``MFDiff(quadratic, 2000, **models.SMALL).run(PRNGKey(0))``, read-only."""
    import jax
    from models import SMALL, quadratic

    from numpyro_mfdiff import MFDiff

    return MFDiff(quadratic, num_simulations=2000, **SMALL).run(jax.random.PRNGKey(0))


@pytest.fixture(scope="session")
def linear_gaussian_small():
    """``MFDiff(linear_gaussian, 2000, **models.SMALL).run(PRNGKey(0))``, read-only
    (a test may refine it if it leaves it without refinements, as it found it)."""
    import jax
    from models import SMALL, linear_gaussian

    from numpyro_mfdiff import MFDiff

    return MFDiff(linear_gaussian, num_simulations=2000, **SMALL).run(jax.random.PRNGKey(0))


def _fidelity_pairs():
    """``(name, low, high)`` for each example of ``numpyro_mfdiff.examples`` with two
    fidelities: every public ``*_low`` with its ``*_high``, and ``quadratic_coarse`` with
    ``quadratic``. Public names only (the modules behind them may move)."""
    import numpyro_mfdiff.examples as ex

    names = set(getattr(ex, "__all__", dir(ex)))
    pairs = [("quadratic", ex.quadratic_coarse, ex.quadratic)]
    for n in sorted(names):
        if n.endswith("_low") and n[:-4] + "_high" in names:
            pairs.append((n[:-4], getattr(ex, n), getattr(ex, n[:-4] + "_high")))
    return pairs


def pytest_generate_tests(metafunc):
    """A test taking ``fidelity_pair`` runs once per example with two fidelities."""
    if "fidelity_pair" in metafunc.fixturenames:
        pairs = _fidelity_pairs()
        metafunc.parametrize("fidelity_pair", pairs, ids=[p[0] for p in pairs])


def _site_signature(model):
    """``{"latent" | "observed": {site: (value shape, event shape, support)}}`` of
    ``model``, traced abstractly (``jax.eval_shape``: no simulation runs). Observed
    sites are those named by a model argument defaulting to ``None`` (``y=None``, as
    every example writes them)."""
    import inspect

    import jax
    from numpyro import handlers

    observed = {p.name for p in inspect.signature(model).parameters.values() if p.default is None}
    out = {"latent": {}, "observed": {}}

    def trace(key):
        tr = handlers.trace(handlers.seed(model, rng_seed=key)).get_trace()
        for name, site in tr.items():
            if site["type"] == "sample":
                fn = site["fn"]
                sig = (tuple(site["value"].shape), tuple(fn.event_shape), repr(fn.support))
                out["observed" if name in observed else "latent"][name] = sig
        return 0

    jax.eval_shape(trace, jax.random.PRNGKey(0))
    return out


@pytest.fixture(scope="session")
def site_signature():
    """:func:`_site_signature`: what must agree between two fidelities of a model."""
    return _site_signature


# ------------------------------------------------------------- no silent skips
# Every test dependency is declared in pyproject.toml ("test" extra), so a skipped test
# means a broken install or a test that stopped running: the session fails. A skip
# that is meant to happen names itself here, by a substring of its reason.
ALLOWED_SKIPS: tuple[str, ...] = ()
_unexpected_skips: list[str] = []


def _record_skip(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
        if not any(allowed in reason for allowed in ALLOWED_SKIPS):
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_collectreport(report):
    _record_skip(report)


def pytest_runtest_logreport(report):
    _record_skip(report)


def pytest_terminal_summary(terminalreporter):
    if _unexpected_skips:
        terminalreporter.section("unexpected skips (fail the session)", red=True)
        for line in _unexpected_skips:
            terminalreporter.line(line)


def pytest_sessionfinish(session, exitstatus):
    if _unexpected_skips and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ------------------------------------------------------- two workers (pytest-xdist)
# pyproject.toml runs the suite on two workers with ``--dist loadgroup``: a test with an
# ``xdist_group`` mark runs on the worker that runs the rest of its group, any other
# test wherever a worker is free. The default suite's tests are grouped by file, so a
# file's module fixtures and in-process compilations serve all of its tests on one
# worker; a slow test only where it shares a module fixture, so that the long slow
# tests spread over both workers (tests/test_refine_accuracy.py's three take 5 minutes).
@pytest.hookimpl(tryfirst=True)  # before xdist reads the marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        shares = info is not None and any(
            defs[-1].scope == "module" for defs in info.name2fixturedefs.values()
        )
        if shares or item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    items.sort(key=_longest_first(items))


# Files whose tests take longest, longest first (seconds on the two workers, 2026-12-07,
# slow tests / the default ones): test_refine_accuracy's three slow checks 93-138 s each;
# test_accuracy 101 s in a group and 40 s; test_smc 77 s and 15 s / 66 s in all;
# test_loglik_fast 41 s / 55 s; test_pooled's group 61 s; test_tutorials 18-34 s each /
# 17 s. pyproject.toml keeps xdist from reordering (``--no-loadscope-reorder``), so each
# worker takes the next unit (a test, or a group where its first test stands) in this
# order, and no long test is left to run alone at the end while the other worker idles.
_LONGEST = (
    "test_refine_accuracy",
    "test_accuracy",
    "test_smc",
    "test_loglik_fast",
    "test_pooled",
    "test_tutorials",
)


def _longest_first(items):
    """The sort key of the session's tests: the files of ``_LONGEST`` in its order, then
    the others by their number of tests, most first (a rough measure of their time);
    in each file the slow tests first, so that a module fixture a default test shares
    with them is built while they compile with optimisations (a jitted function
    keeps the executable of its first call, cheap or not), then the file's order."""
    count = collections.Counter(item.module.__name__ for item in items)

    def key(item):
        m = item.module.__name__
        rank = _LONGEST.index(m) if m in _LONGEST else len(_LONGEST)
        return rank, -count[m], m, item.get_closest_marker("slow") is None

    return key
