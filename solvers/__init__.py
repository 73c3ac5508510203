"""Solver backends of convexdual, installed as ``convexdual.solvers``.

Import through ``convexdual.solvers``; this folder is mapped there by
pyproject.toml (a PyPI package named ``solvers`` exists, so it must never be a
top-level import).
"""

if __name__ != "convexdual.solvers":
    raise ImportError(
        f"the convexdual solvers package was imported as {__name__!r}; import it as "
        "'convexdual.solvers' (install the project with 'pip install -e .')"
    )

from convexdual.solvers.base import Solver, SolverBase, SolverOptions  # noqa: E402

__all__ = ["Solver", "SolverBase", "SolverOptions"]
