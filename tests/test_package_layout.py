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


@pytest.mark.parametrize("name", ["fastmri", "mri_sim"])
def test_data_has_no_mri_code(name):
    """data/ holds no MRI module of its own; what sits at the old paths only re-exports convexdual.mri."""
    path = ROOT / "convexdual" / "data" / f"{name}.py"
    if not path.exists():
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
    assert defined == [], f"{path.name} defines {defined}; MRI code belongs in convexdual/mri/"
