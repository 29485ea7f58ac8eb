"""The suite cannot pass by not running: an unexpected skip fails the session."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFTEST = (Path(__file__).parent / "conftest.py").read_text()


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "xdist"])
def test_an_unexpected_skip_fails_the_session(pytester, workers):
    """A test that skips, and a module whose import is skipped (``importorskip`` of a
    missing package), each fail the session and are named in its summary; without them
    the same session passes. The same failure with two pytest-xdist workers (the
    suite's ``-n 2``), where the skips happen in the workers and the session ends in
    the controller."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_a="import pytest\n\ndef test_ok():\n    pass\n\n"
        "def test_skips():\n    pytest.skip('no such thing')\n",
        test_b="import pytest\n\npytest.importorskip('no_such_package_here')\n",
    )
    # the suite's own plugin options (pyproject.toml's addopts are not read here)
    args = ["-p", "no:cacheprovider", "-p", "no:benchmark", *workers]
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == 1
    out = result.stdout.str()
    assert "unexpected skips" in out
    assert "test_a.py::test_skips: Skipped: no such thing" in out
    assert "test_b.py: Skipped: could not import 'no_such_package_here'" in out
    if workers:
        return  # that xdist sessions without skips pass, the suite's own run shows
    (pytester.path / "test_a.py").write_text("def test_ok():\n    pass\n")
    (pytester.path / "test_b.py").unlink()
    assert pytester.runpytest(*args).ret == 0


def test_declared_test_dependencies_import():
    """The packages some tests need, all in the "test" extra of pyproject.toml: a missing
    one is a broken install, which fails here rather than skipping a file."""
    import diffrax  # noqa: F401
    import distributed  # noqa: F401
    import filelock  # noqa: F401
    import matplotlib  # noqa: F401
    import scipy.special  # noqa: F401
    import xdist  # noqa: F401


def test_ci_runs_the_readme_test_command():
    """The README's test command is a line of ``.ci/run``, word for word, and CI builds
    its virtual environment afresh (``--clear``)."""
    readme = (ROOT / "README.md").read_text()
    (command,) = re.findall(r"^(pytest[^#\n]*?)\s*#", readme, re.MULTILINE)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in ci, (command, ci)
    assert "python3 -m venv --clear .ci-venv" in ci


def _fusion_emitters_off():
    from jax._src import compiler

    opts = compiler.get_compile_options(num_replicas=1, num_partitions=1)
    in_process = any(k == "xla_cpu_use_fusion_emitters" for k, _ in opts.env_option_overrides)
    in_children = "--xla_cpu_use_fusion_emitters=false" in os.environ.get("XLA_FLAGS", "")
    assert in_process == in_children  # this test's compilations and its subprocesses agree
    return in_process


def test_a_cheap_test_compiles_without_fusion_emitters():
    """tests/conftest.py: the default suite's cheap compile leaves out XLA's CPU fusion
    emitters, in this process (an option of each compilation) and in its subprocesses."""
    assert _fusion_emitters_off() == (
        os.environ.get("MFDIFF_TEST_FUSION_EMITTERS", "") in ("", "0")
    )


@pytest.mark.optimised
def test_an_optimised_test_keeps_them():
    assert not _fusion_emitters_off()
