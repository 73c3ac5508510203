"""Reference optima: computed once by an exact solve, certified, stored as JSON by fingerprint.

A reference is the objective of (4) at a point whose certificate holds (relative duality
gap <= :data:`REFERENCE_GAP`, cone violation <= 1e-7) together with the certified lower
bound; it is written atomically to ``<folder>/<fingerprint>.json`` (never pickled) and
reused by every later run on the same problem (same inputs, targets, gates, kernel,
beta, loss, residual). The exact solver is MOSEK when licensed, else Clarabel through
CVXPY (the plain program (4)); above :data:`CVXPY_REFERENCE_ROWS` cone rows the plain SOCP
is not built and the squared loss uses ``active_set`` (restricted Clarabel solves, the
same certificate engine).
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import Any

__all__ = ["REFERENCE_GAP", "CVXPY_REFERENCE_ROWS", "reference_path", "load_reference", "compute_reference",
           "get_reference"]

FORMAT = "convexdual-benchmark-reference"
VERSION = 1
#: certified relative gap a reference must reach
REFERENCE_GAP = 1e-8
#: largest n * P for which the reference is the plain CVXPY program
CVXPY_REFERENCE_ROWS = 150_000


def reference_path(folder: str | Path, fingerprint: str) -> Path:
    return Path(folder) / f"{fingerprint}.json"


def load_reference(folder: str | Path, fingerprint: str) -> dict[str, Any] | None:
    """The stored reference of ``fingerprint`` (None when there is none); refuses a file of another problem."""
    path = reference_path(folder, fingerprint)
    if not path.is_file():
        return None
    try:
        ref = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"reference {path} is not readable JSON ({exc}); delete it to recompute") from exc
    if ref.get("format") != FORMAT or ref.get("fingerprint") != fingerprint or "objective" not in ref:
        raise ValueError(f"reference {path} is not a convexdual benchmark reference of problem {fingerprint[:12]}...; "
                         "delete it to recompute")
    return ref


def _exact_solver(problem: Any) -> tuple[str, dict[str, Any]]:
    from convexdual._registry import get_solver

    if problem.n * problem.P <= CVXPY_REFERENCE_ROWS or problem.loss.name != "squared":
        ok, _ = get_solver("mosek").available()
        return ("mosek" if ok else "clarabel"), {"tol": 1e-10, "max_iter": 500}
    return "active_set", {"tol": 1e-10, "num_threads": 1}


def compute_reference(problem: Any, instance: str, *, device: str = "cpu") -> dict[str, Any]:
    """Solve ``problem`` exactly and certify it; the reference record (not written)."""
    import convexdual as cd
    from convexdual.checkpoint import problem_fingerprint

    name, opts = _exact_solver(problem)
    t0 = time.perf_counter()
    res = cd.solve(problem, name, options=opts, device=device, tolerance=REFERENCE_GAP)
    secs = time.perf_counter() - t0
    c = res.certificate
    if c is None or not (c.relative_gap <= REFERENCE_GAP and c.max_violation <= 1e-7):
        raise RuntimeError(f"the exact solve of {instance} by {name} did not certify (status {res.status.value}, "
                           f"gap {getattr(c, 'relative_gap', float('nan')):.2e}, violation "
                           f"{getattr(c, 'max_violation', float('nan')):.2e}): no reference")
    return {"format": FORMAT, "version": VERSION, "fingerprint": problem_fingerprint(problem), "instance": instance,
            "objective": float(c.convex_objective), "dual_bound": float(c.dual_bound),
            "relative_gap": float(c.relative_gap), "max_violation": float(c.max_violation),
            "num_neurons": int(c.num_neurons), "scope": c.scope, "status": res.status.value, "solver": name,
            "options": opts, "seconds": secs, "problem": problem.describe(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "convexdual_version": _version()}


def get_reference(problem: Any, instance: str, folder: str | Path, *, device: str = "cpu") -> tuple[dict[str, Any], bool]:
    """``(reference, computed_now)``: the stored one, else computed and written atomically."""
    from convexdual._io import atomic_write_json
    from convexdual.checkpoint import problem_fingerprint

    fp = problem_fingerprint(problem)
    ref = load_reference(folder, fp)
    if ref is not None:
        return ref, False
    ref = compute_reference(problem, instance, device=device)
    atomic_write_json(reference_path(folder, fp), ref)
    return ref, True


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("convexdual")
    except Exception:  # pragma: no cover
        return "unknown"
