"""The documentation site builds with ``mkdocs build --strict`` and lists every tutorial."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_tutorial_is_in_the_nav():
    nav = [line.split("#")[0] for line in (ROOT / "mkdocs.yml").read_text().splitlines()]
    listed = set(re.findall(r"tutorials/(\d\d_\w+\.py)", "\n".join(nav)))
    present = {p.name for p in (ROOT / "tutorials").glob("[0-9][0-9]_*.py")}
    assert listed == present, (
        f"mkdocs.yml nav lists {sorted(listed)}, tutorials/ has {sorted(present)}"
    )


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", MFDIFF_DOCS_EXECUTE="false")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for page in ("index.html", "method/index.html", "benchmarks/index.html", "api/index.html"):
        assert (site / page).is_file(), page
    for path in (ROOT / "tutorials").glob("[0-9][0-9]_*.py"):
        assert (site / "tutorials" / path.stem / "index.html").is_file(), path.name
        assert (site / "tutorials" / f"{path.stem}.ipynb").is_file(), path.name
    api = (site / "api/index.html").read_text()
    for name in ("MFDiff", "get_samples", "to_inference_data", "nuts", "smc", "c2st"):
        assert name in api, f"{name} missing from the API reference"
