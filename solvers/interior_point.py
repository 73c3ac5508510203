"""Interior-point backends through CVXPY: Clarabel (default), MOSEK, SCS, ECOS.

Each backend maps CVXPY's status (and the native one where CVXPY merges them)
to :class:`~convexdual.result.Status`; anything unknown becomes SOLVER_ERROR,
never "optimal". MOSEK's licence is probed with a tiny solve.

The common options are honoured by every backend, or refused with a message:

========  ==========================  ===============  =======================  =======
backend   tol                         max_iter         time_limit               verbose
========  ==========================  ===============  =======================  =======
Clarabel  gap abs/rel, feasibility    ``max_iter``     ``time_limit``           log
MOSEK     rel. gap, p/d feasibility   ``MAX_ITER...``  ``OPTIMIZER_MAX_TIME``   log
SCS       ``eps_abs`` / ``eps_rel``   ``max_iters``    ``time_limit_secs``      log
ECOS      abs/rel gap, feasibility    ``max_iters``    refused (ValueError)     log
========  ==========================  ===============  =======================  =======

A run that stops at ``max_iter`` (or ``time_limit``) without the backend's "optimal" is
MAX_ITERATIONS (TIME_LIMIT), whatever inaccurate status the backend gave it. SCS, a
first-order method, has its own options class (:class:`SCSOptions`, ``max_iter`` 100,000
by default); the others use :class:`InteriorPointOptions` (``max_iter`` 200).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from convexdual.cvxpy_program import to_cvxpy
from convexdual.errors import SolverUnavailableError
from convexdual.problem import DualProblem
from convexdual.result import SolveResult, Status, Timings
from convexdual.solvers._clarabel import settings_dict
from convexdual.solvers.base import EXPLICIT, SolverBase, SolverOptions

__all__ = ["InteriorPointOptions", "SCSOptions", "ClarabelSolver", "MosekSolver", "SCSSolver", "ECOSSolver",
           "CvxpySolver", "map_cvxpy_status", "probe_mosek"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InteriorPointOptions(SolverOptions):
    """Options of the CVXPY backends.

    Attributes:
        tol: relative/absolute gap and feasibility tolerance given to the backend.
        max_iter: iteration limit.
        time_limit: seconds (Clarabel, MOSEK, SCS), or None; ECOS has no time limit and
            refuses one.
        clarabel_kkt: Clarabel's sparse LDL ("faer" was 2.3x faster than "qdldl" on our
            instances; ignored by other backends).
        native: extra backend options, passed to ``cvxpy.Problem.solve`` as given.
    """

    tol: float = 1e-8
    max_iter: int = 200
    clarabel_kkt: str = "faer"


@dataclass(frozen=True)
class SCSOptions(InteriorPointOptions):
    """Options of SCS: those of :class:`InteriorPointOptions`, with SCS's own iteration
    limit by default (a first-order method: 200 iterations are far too few). ``max_iter``
    is passed to SCS as given (``max_iters``), never raised."""

    max_iter: int = 100_000


_CVXPY_STATUS = {
    "optimal": Status.OPTIMAL,
    "optimal_inaccurate": Status.OPTIMAL_INACCURATE,
    "infeasible": Status.INFEASIBLE,
    "infeasible_inaccurate": Status.INFEASIBLE,
    "unbounded": Status.UNBOUNDED,
    "unbounded_inaccurate": Status.UNBOUNDED,
    "infeasible_or_unbounded": Status.INFEASIBLE,
    "solver_error": Status.SOLVER_ERROR,
}


def map_cvxpy_status(status: str | None, *, hit_time_limit: bool = False) -> Status:
    """CVXPY status string -> Status. ``user_limit`` is split by whether time ran out."""
    if status == "user_limit":
        return Status.TIME_LIMIT if hit_time_limit else Status.MAX_ITERATIONS
    return _CVXPY_STATUS.get(str(status), Status.SOLVER_ERROR)


@functools.lru_cache(maxsize=1)
def probe_mosek() -> tuple[bool, str]:
    """Whether MOSEK is installed *and* licensed: a tiny solve decides (cached per process)."""
    if importlib.util.find_spec("mosek") is None:
        return False, "MOSEK is not installed; install it with: pip install 'convexdual[mosek]' (needs a licence)"
    try:
        import cvxpy as cp

        x = cp.Variable()
        prob = cp.Problem(cp.Minimize(x), [x >= 1])
        prob.solve(solver=cp.MOSEK)
        if prob.status != "optimal":
            return False, f"MOSEK probe solve ended with status {prob.status!r}"
    except Exception as exc:  # licence errors come as mosek.Error / cvxpy.SolverError
        msg = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
        return False, (f"MOSEK is installed but not usable: {msg}. Put a licence at ~/mosek/mosek.lic "
                       "or set MOSEKLM_LICENSE_FILE; or use solver='clarabel'")
    return True, ""


class CvxpySolver(SolverBase):
    """Common CVXPY path; subclasses set the backend name, its module (``requires``) and option mapping."""

    name: ClassVar[str] = "cvxpy"
    cvxpy_name: ClassVar[str] = ""
    options_class: ClassVar[type[SolverOptions]] = InteriorPointOptions
    scale: ClassVar[str] = EXPLICIT

    def available(self) -> tuple[bool, str]:
        ok, why = super().available()
        if not ok:
            return ok, why
        import cvxpy as cp

        if self.cvxpy_name not in cp.installed_solvers():
            return False, f"{self.name} is installed but CVXPY cannot load it"
        return True, ""

    def native_options(self, options: InteriorPointOptions) -> dict[str, Any]:
        return {}

    def check_options(self, options: InteriorPointOptions) -> None:
        """Raise ValueError for a common option this backend cannot honour (before any work)."""

    def solve(self, problem: DualProblem, options: SolverOptions | None = None) -> SolveResult:
        import cvxpy as cp

        cls = self.options_class
        options = options if options is not None else cls()
        if not isinstance(options, InteriorPointOptions):
            options = cls(tol=options.tol, max_iter=options.max_iter, time_limit=options.time_limit,
                          verbose=options.verbose, native=dict(options.native))
        self.check_options(options)
        ok, why = self.available()
        if not ok:
            raise SolverUnavailableError(why)
        t0 = time.perf_counter()
        prog = to_cvxpy(problem)
        t1 = time.perf_counter()
        kwargs = {**self.native_options(options), **options.native}
        message = ""
        try:
            prog.problem.solve(solver=self.cvxpy_name, verbose=options.verbose, **kwargs)
            cv_status = prog.problem.status
        except cp.error.SolverError as exc:
            cv_status, message = "solver_error", str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        except Exception as exc:  # backend crash: report, never "optimal"
            cv_status, message = "solver_error", f"{type(exc).__name__}: {exc}"
        t2 = time.perf_counter()
        hit_time = options.time_limit is not None and (t2 - t1) >= 0.95 * options.time_limit
        status = map_cvxpy_status(cv_status, hit_time_limit=hit_time)
        stats = prog.problem.solver_stats if cv_status != "solver_error" else None
        iters = int(stats.num_iters) if stats is not None and stats.num_iters is not None else -1
        if status is Status.OPTIMAL_INACCURATE and (hit_time or iters >= int(options.max_iter)):
            # the backend ran out of iterations / time and called its last iterate "inaccurate":
            # that is an early stop, reported as such (the certificate still says how good it is)
            status = Status.TIME_LIMIT if hit_time else Status.MAX_ITERATIONS
            why = (f"time limit {options.time_limit:g} s" if hit_time
                   else f"iteration limit max_iter={int(options.max_iter)}")
            message = f"{self.name} stopped at its {why} (CVXPY status {cv_status!r})"
        weights = prog.weights() if status.has_solution else None
        if weights is None and status.has_solution:
            status, message = Status.SOLVER_ERROR, (message or "solver returned no point")
        W, Z = weights if weights is not None else (None, None)
        objective = problem.objective(W, Z) if W is not None else float("nan")
        return SolveResult(
            status=status, objective=objective, W=W, Z=Z, solver=self.name, iterations=iters,
            timings=Timings(build=t1 - t0, solve=t2 - t1),
            message=message or f"CVXPY status {cv_status!r}",
            dual=prog.dual_point() if W is not None else None,
            info={"cvxpy_status": cv_status, "backend": self.cvxpy_name,
                  "solver_time": None if stats is None else stats.solve_time,
                  **problem.describe()},
        )


class ClarabelSolver(CvxpySolver):
    name = "clarabel"
    cvxpy_name = "CLARABEL"
    label = "Clarabel"
    requires = ("cvxpy", "clarabel")

    def native_options(self, o):
        return settings_dict(gap_tol=o.tol, feas_tol=o.tol, max_iter=o.max_iter, kkt=o.clarabel_kkt,
                             time_limit=o.time_limit)


class MosekSolver(CvxpySolver):
    name = "mosek"
    cvxpy_name = "MOSEK"
    label = "MOSEK"
    requires = ("cvxpy", "mosek")
    install = "'convexdual[mosek]'"

    def available(self):
        return probe_mosek()

    def native_options(self, o):
        params: dict[str, Any] = {"MSK_DPAR_INTPNT_CO_TOL_REL_GAP": o.tol, "MSK_DPAR_INTPNT_CO_TOL_PFEAS": o.tol,
                                  "MSK_DPAR_INTPNT_CO_TOL_DFEAS": o.tol, "MSK_IPAR_INTPNT_MAX_ITERATIONS": int(o.max_iter)}
        if o.time_limit is not None:
            params["MSK_DPAR_OPTIMIZER_MAX_TIME"] = float(o.time_limit)
        return {"mosek_params": params}


class SCSSolver(CvxpySolver):
    """SCS (first-order conic); needs many iterations for 1e-6 accuracy."""

    name = "scs"
    cvxpy_name = "SCS"
    requires = ("cvxpy", "scs")
    options_class = SCSOptions

    def native_options(self, o):
        kw: dict[str, Any] = {"eps_abs": float(o.tol), "eps_rel": float(o.tol), "max_iters": int(o.max_iter)}
        if o.time_limit is not None:
            kw["time_limit_secs"] = float(o.time_limit)
        return kw


class ECOSSolver(CvxpySolver):
    name = "ecos"
    cvxpy_name = "ECOS"
    requires = ("cvxpy", "ecos")

    def check_options(self, o):
        if o.time_limit is not None:
            raise ValueError(
                f"ECOS has no time limit, so time_limit={o.time_limit:g} cannot be honoured; bound the work "
                "with max_iter instead, or use solver='clarabel' (or 'scs', 'mosek'), which stop at a time limit")

    def native_options(self, o):
        return {"abstol": o.tol, "reltol": o.tol, "feastol": o.tol, "max_iters": int(o.max_iter)}
