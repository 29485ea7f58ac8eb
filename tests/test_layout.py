"""The package's shape (issue 27): a short import tower, small modules, no reaching into
another subpackage's private names. Read from the source (AST), nothing imported.

The import tower: the longest chain of relative imports (``from .x import``, ``from ..x
import``, ``from . import x``; inside functions too) between the package's modules. A
package's ``__init__`` is a re-export surface, not a layer: an import of it stands for
imports of the modules it imports (``from . import _model`` reaches every module of
``_model/``). Imports under ``if TYPE_CHECKING:`` (annotations only) do not count. ``cli``,
the console script, sits on top of the package and is left out (it adds one).

``python tests/test_layout.py`` prints the longest chains and the largest modules.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "numpyro_mfdiff"
MAX_CHAIN = 7  # modules in the longest chain of package imports
MAX_LINES = 400
ENTRY_POINTS = ("numpyro_mfdiff.cli",)


def _modules() -> dict:
    """Dotted name (``numpyro_mfdiff.diffusion.ode``) -> path of every module."""
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(name: str, path: Path, modules: dict) -> list:
    """``(module imported, names taken)`` of every relative import in ``path`` (anywhere in
    it: imports inside functions count): ``from .x import a`` -> ``(pkg.x, [a])``; ``from
    .p import x`` -> ``(pkg.p.x, [])`` when ``x`` is a module, else ``(pkg.p, [x])``."""
    out = []
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level == 0 or id(node) in typing_only:
            continue
        base = _package(name, path)
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        target = f"{base}.{node.module}" if node.module else base
        names = [a.name for a in node.names]
        subs = [n for n in names if f"{target}.{n}" in modules]  # modules, not names
        out += [(f"{target}.{n}", []) for n in subs]
        names = [n for n in names if n not in subs]
        if names:
            out.append((target, names))
    return out


def import_graph(entry_points=ENTRY_POINTS) -> dict:
    """Module -> the package modules it imports from (relative imports only), packages'
    ``__init__`` files replaced by what they import; ``entry_points`` left out."""
    modules = _modules()
    raw = {
        m: {t for t, _ in _imports(m, p, modules) if t in modules and t != m}
        for m, p in modules.items()
    }
    inits = {m for m, p in modules.items() if p.name == "__init__.py"}

    def through(m, seen=()):
        out = set()
        for t in raw[m]:
            out |= through(t, (*seen, t)) if t in inits and t not in seen else {t}
        return out - inits

    return {
        m: sorted(through(m) - {m}) for m in modules if m not in inits and m not in entry_points
    }


def longest_chain(graph: dict) -> list:
    """The longest chain of imports ``[m0, m1, ...]`` (``m_i`` imports from ``m_{i+1}``);
    a cycle is an ``AssertionError``."""
    active = set()

    @functools.cache
    def chain(m):
        assert m not in active, f"import cycle through {m}"
        active.add(m)
        best = max((chain(t) for t in graph[m]), key=len, default=())
        active.discard(m)
        return (m, *best)

    return list(max((chain(m) for m in graph), key=len))


def module_lines() -> dict:
    return {m: len(p.read_text().splitlines()) for m, p in _modules().items()}


def private_reaches() -> list:
    """``(module, imported module, name)`` for every private name (``_x``) a module takes
    from a module of another subpackage (its own subpackage and the package root's
    private modules being the module's own layer)."""
    modules = _modules()
    out = []
    for m, p in modules.items():
        home = _package(m, p)
        for target, names in _imports(m, p, modules):
            t_home = _package(target, modules[target]) if target in modules else target
            for n in names:
                other = t_home != home and not (t_home == "numpyro_mfdiff" and n.startswith("_"))
                if n.startswith("_") and not n.startswith("__") and other:
                    out.append((m, target, n))
    return out


def test_import_chain_is_short():
    """The longest chain of package imports: 9 modules at main de55e9f counted so (10 with
    ``cli``; the issue counted 11 at 2cdb1de), 7 since issue 27 (8 with ``cli``)."""
    chain = longest_chain(import_graph())
    assert len(chain) <= MAX_CHAIN, " > ".join(c.rpartition(".")[2] for c in chain)


def test_no_module_over_400_lines():
    big = {m: n for m, n in module_lines().items() if n > MAX_LINES}
    assert not big, big


def test_no_private_names_across_subpackages():
    assert not private_reaches()


def test_settings_written_once():
    """``MFDiff``'s settings are ``Config``'s fields (same names, order and defaults), and
    ``refine``'s keyword settings ``RefineSettings``'s: the signature and the record
    cannot drift apart."""
    import dataclasses
    import inspect

    from numpyro_mfdiff import Config, MFDiff, RefineSettings

    def params(fn, skip):
        ps = inspect.signature(fn).parameters.values()
        return {p.name: p.default for p in ps if p.name not in skip}

    fields = {f.name: f.default for f in dataclasses.fields(Config)}
    assert list(params(MFDiff.__init__, ("self", "model"))) == list(fields)
    assert params(MFDiff.__init__, ("self", "model")) == fields
    given = params(MFDiff.refine, ("self", "rng_key", "observations", "model"))
    given = {k: v for k, v in given.items() if k not in ("model_args", "model_kwargs")}
    assert given == {f.name: f.default for f in dataclasses.fields(RefineSettings)}


if __name__ == "__main__":
    for entry in (ENTRY_POINTS, ()):
        chain = longest_chain(import_graph(entry))
        print(f"longest import chain: {len(chain)} modules: {' > '.join(chain)}")
    lines = sorted(module_lines().items(), key=lambda x: -x[1])[:5]
    print("largest modules:", ", ".join(f"{m} {n}" for m, n in lines))
    for r in private_reaches():
        print("private reach:", *r)
