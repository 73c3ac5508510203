"""Packaging: a non-editable install ships every package, and the extras install what the code uses."""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _source_packages() -> set[str]:
    """Every package folder of the source tree, under its import name."""
    names = {"convexdual.solvers"}  # solvers/ is installed as convexdual.solvers
    for init in (ROOT / "convexdual").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        names.add(".".join(rel.parts))
    return names


def test_every_package_folder_is_listed_in_pyproject():
    cfg = _pyproject()["tool"]["setuptools"]
    listed = set(cfg["packages"])
    missing = _source_packages() - listed
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {sorted(missing)}: a wheel would not ship them"
    assert "convexdual.experiments.mnist" in listed and "convexdual.mri" in listed
    # solvers/ keeps its mapping: the folder must never become a top-level `solvers` package
    assert cfg["package-dir"]["convexdual.solvers"] == "solvers"
    assert "solvers" not in listed


def test_extras_install_what_the_code_uses():
    extras = _pyproject()["project"]["optional-dependencies"]

    def names(extra):
        return {req.split(">")[0].split("=")[0].split("<")[0].strip().lower() for req in extras[extra]}

    assert {"mlxtend", "numba", "hypothesis", "pytest", "sigpy", "h5py", "ecos", "scs"} <= names("all")
    assert {"pytest", "hypothesis"} <= names("test")
    # `all` is the union of the others
    others = set().union(*(names(e) for e in extras if e != "all"))
    assert others <= names("all"), f"in an extra but not in 'all': {sorted(others - names('all'))}"


def test_ci_builds_and_checks_a_wheel():
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'python3 -m pytest -m "not slow" -q -p no:cacheprovider' in ci
    assert "pip wheel" in ci and "pip install --quiet --no-deps" in ci and "cd /tmp" in ci
    assert '/bin/convexdual" --help' in ci and '/bin/convexdual" solvers' in ci


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    """Build a wheel from a copy of the sources, install it into a fresh venv, run the CLI from elsewhere."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("convexdual", "solvers"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(dist), str(src)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # dependencies from this interpreter's site folder, without running its .pth files (the editable hook)
    pathlib.Path(site, "_system_site.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(dist.glob("convexdual-*.whl"))
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import importlib, pathlib, sys\n"
            f"for n in {sorted(_source_packages())!r}:\n"
            "    f = pathlib.Path(importlib.import_module(n).__file__).resolve()\n"
            f"    assert pathlib.Path({str(venv.resolve())!r}) in f.parents, (n, f)\n")
    subprocess.run([str(py), "-c", code], check=True, cwd=outside, env=env)
    for args in (["--help"], ["solvers"]):
        out = subprocess.run([str(venv / "bin" / "convexdual"), *args], cwd=outside, env=env,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_math_reference_is_in_the_repository():
    import re

    math = (ROOT / "docs" / "math.md").read_text()
    for label in ("[eq. 1]", "[eq. 2]", "[eq. 3]", "eq. 4]", "[eq. 5]", "[eq. 7]", "[eq. 8]", "Theorem 1",
                  "Corollary 1.1", "Appendix E", "Gated ReLU relaxation", "beta_max", "Descent neurons",
                  "relative cone violation", "Proj_K(c) = c + A^T lam*"):
        assert label in math, label
    sections = {int(m) for m in re.findall(r"^## (\d+)\.", math, re.M)}
    # docs link the repository's own page, never a MATH.md outside it
    for page in (ROOT / "docs").glob("*.md"):
        assert "MATH.md" not in page.read_text(), page.name
    # every "docs/math.md §N" cited in the code names a section that exists
    for path in [*(ROOT / "convexdual").rglob("*.py"), *(ROOT / "solvers").glob("*.py")]:
        for n in re.findall(r"math\.md[ ,]*§\s*(\d+)", path.read_text()):
            assert int(n) in sections, f"{path.name} cites docs/math.md §{n}, which does not exist"
