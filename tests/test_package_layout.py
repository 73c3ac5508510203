"""Package layout: the folders keep the import direction docs/ARCHITECTURE.md draws.

Every import statement counts, also the ones inside functions (a lazy import is still a
dependency), so the check reads the source with ``ast`` rather than ``sys.modules``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _package_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "solvers":
        parts = ["convexdual", "solvers", *parts[1:]]
    return ".".join(parts[:-1])  # the package a relative import starts from (also for __init__.py)


def _imports(path: Path) -> set[str]:
    """Absolute names of the convexdual modules imported anywhere in the file."""
    pkg = _package_of(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            else:
                found.add(node.module or "")
    return {name for name in found if name == "convexdual" or name.startswith("convexdual.")}


def _edges(source_pkg: str, target_pkg: str) -> list[tuple[str, str]]:
    folder = ROOT / "solvers" if source_pkg == "convexdual.solvers" else ROOT / Path(*source_pkg.split("."))
    return sorted(
        (str(f.relative_to(ROOT)), name)
        for f in folder.rglob("*.py")
        for name in _imports(f)
        if name == target_pkg or name.startswith(target_pkg + ".")
    )


def test_mri_never_imports_data():
    """The MRI readers, simulator and pipeline live in convexdual/mri/ (issue 13): mri/ -> data/ is gone,
    so the old data/ <-> mri/ loop cannot come back through a lazy import either."""
    assert _edges("convexdual.mri", "convexdual.data") == []


SHIMS = {"convexdual.data.fastmri": "convexdual.mri.fastmri", "convexdual.data.mri_sim": "convexdual.mri.simulate"}


@pytest.mark.parametrize("old", sorted(SHIMS))
def test_data_has_no_mri_code(old):
    """data/ holds no MRI code: the old paths only re-export convexdual.mri."""
    path = ROOT / Path(*old.split(".")).with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
    assert defined == [], f"{path.name} defines {defined}; MRI code belongs in convexdual/mri/"


@pytest.mark.parametrize("old", sorted(SHIMS))
def test_old_paths_reexport_with_a_warning(old, monkeypatch):
    import importlib
    import sys

    new = importlib.import_module(SHIMS[old])
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=SHIMS[old].replace(".", r"\.")):
        shim = importlib.import_module(old)
    assert list(shim.__all__) == list(new.__all__)
    for name in new.__all__:
        assert getattr(shim, name) is getattr(new, name), name


def test_nothing_here_imports_the_old_paths():
    """The package, its tests, benchmarks and examples are on the new paths (the shims are for users)."""
    here = Path(__file__).resolve()
    files = [f for folder in ("convexdual", "solvers", "tests", "benchmarks", "examples") if (ROOT / folder).exists()
             for f in (ROOT / folder).rglob("*.py") if f.resolve() != here]
    users = sorted(str(f.relative_to(ROOT)) for f in files if _imports(f) & set(SHIMS))
    assert users == []
