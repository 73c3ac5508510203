"""Solver registry: names -> "module:Class" strings, imported only when used.

Keeping strings here (not classes) is what lets ``import convexdual`` stay free
of CVXPY backends, MOSEK and CUDA.
"""

from __future__ import annotations

import importlib

from convexdual.errors import SolverUnavailableError

__all__ = ["SOLVERS", "get_solver", "available_solvers"]

SOLVERS: dict[str, str] = {
    "clarabel": "convexdual.solvers.interior_point:ClarabelSolver",
    "mosek": "convexdual.solvers.interior_point:MosekSolver",
    "scs": "convexdual.solvers.interior_point:SCSSolver",
    "ecos": "convexdual.solvers.interior_point:ECOSSolver",
    "clarabel-ws": "convexdual.solvers.working_set:WorkingSetSolver",
    "fista": "convexdual.solvers.fista:FistaSolver",
    "augmented_lagrangian": "convexdual.solvers.augmented_lagrangian:AugmentedLagrangianSolver",
    "adam_hinge": "convexdual.solvers.adam_hinge:AdamHingeSolver",
    "active_set": "convexdual.solvers.active_set:ActiveSetSolver",
}


def get_solver(name: str):
    """Instantiate the solver registered under ``name``."""
    key = str(name).lower()
    if key not in SOLVERS:
        raise SolverUnavailableError(
            f"unknown solver {name!r}; registered solvers: {', '.join(sorted(SOLVERS))} (or 'auto')"
        )
    module, cls = SOLVERS[key].split(":")
    return getattr(importlib.import_module(module), cls)()


def available_solvers() -> dict[str, str]:
    """``{name: "ok" or the reason it cannot run}`` for every registered solver."""
    out = {}
    for name in SOLVERS:
        try:
            ok, why = get_solver(name).available()
        except Exception as exc:  # a broken install must not hide the others
            ok, why = False, f"{type(exc).__name__}: {exc}"
        out[name] = "ok" if ok else why
    return out
