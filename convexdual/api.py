"""``convexdual.solve``: pick a solver, solve, recover, certify.

Above the backends, every solve goes through the same steps:

1. **choose** the solver (:func:`choose_solver` behind ``"auto"``);
2. **options** from the solver's dataclass, a dict or keyword arguments (checked by name);
3. **zero test**: when the dual constraints hold at the zero network's dual point (one scan of
   the engine), the zero network is optimal and is returned, certified, by every solver;
4. **units**: data far from unit scale are solved in rescaled units and the answer is scaled
   back, so results do not depend on the data's units;
5. **finalize**: recover the CNN (eq. 5) and certify it; the status follows the certificate.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from convexdual._registry import get_solver
from convexdual.errors import SolverUnavailableError
from convexdual.losses import HuberLoss
from convexdual.problem import DualProblem
from convexdual.result import SolveResult, Status, Timings

__all__ = ["solve", "resolve_solver", "choose_solver", "make_options", "AUTO_ORDER"]

logger = logging.getLogger(__name__)

#: data whose largest input and target magnitudes lie in this range are solved as they are
_UNIT_RANGE = (1e-2, 1e2)


#: what ``"auto"`` tries, in order: the first that is available and accepts the problem
AUTO_ORDER = ("active_set", "mosek", "clarabel")


def choose_solver(problem: DualProblem | None = None) -> tuple[Any, str]:
    """The solver ``"auto"`` means for ``problem``, and why: the first of :data:`AUTO_ORDER` that
    is available and accepts the problem (its declared losses and scale); the last one otherwise.

    Squared loss: ``active_set`` (exact and certified; the fastest measured: 199x plain
    CVXPY + Clarabel at n = 1,280 / P = 100, and the only exact path at the paper's size).
    Other losses: MOSEK when licensed, else Clarabel (the plain program (4) via CVXPY).
    Without a problem, only solvers that take every loss are considered.
    """
    skipped: list[str] = []
    for name in AUTO_ORDER[:-1]:
        s = get_solver(name)
        if not (s.accepts(problem)[0] if problem is not None else s.losses is None):
            continue
        ok, why = s.available()
        if ok:
            return s, ("solver='auto': " + "; ".join(skipped) + f"; using {s.label or name}") if skipped else ""
        skipped.append(f"{s.label or name} unavailable ({why})")
        logger.info("solver='auto': %s unavailable (%s)", name, why)
    last = get_solver(AUTO_ORDER[-1])  # the last resort: it says itself why it cannot run
    return last, ("solver='auto': " + "; ".join(skipped) + f"; using {last.label or last.name}") if skipped else ""


def resolve_solver(solver: str, problem: DualProblem | None = None) -> tuple[Any, str]:
    """The solver object for a name (``"auto"``: :func:`choose_solver`), and a note explaining a
    fallback ("" otherwise). Raises SolverUnavailableError when a named solver cannot run."""
    if not isinstance(solver, str):
        raise TypeError(f"solver must be a name such as 'auto', 'active_set', 'clarabel' or 'mosek'; got {solver!r}")
    if solver.lower() == "auto":
        return choose_solver(problem)
    s = get_solver(solver)
    ok, why = s.available()
    if not ok:
        raise SolverUnavailableError(why)
    return s, ""


def make_options(backend: Any, options: Any = None, **changes: Any) -> Any:
    """The backend's options dataclass from ``options`` (its dataclass, the generic
    :class:`~convexdual.solvers.base.SolverOptions`, a dict or None) and keyword ``changes``.

    Raises:
        TypeError: an options object of another solver, or a name the solver does not have
            (the message lists the allowed names).
    """
    from convexdual.solvers.base import SolverOptions

    cls = backend.options_class
    allowed = {f.name for f in dataclasses.fields(cls)}
    if options is None:
        base: dict[str, Any] = {}
    elif isinstance(options, dict):
        base = dict(options)
    elif isinstance(options, cls):
        return dataclasses.replace(options, **_checked(changes, allowed, backend.name)) if changes else options
    elif type(options) is SolverOptions:
        base = {f.name: getattr(options, f.name) for f in dataclasses.fields(SolverOptions)}
    else:
        raise TypeError(f"options for solver {backend.name!r} must be {cls.__name__}, a dict or None; "
                        f"got {type(options).__name__}")
    base.update(changes)
    return cls(**_checked(base, allowed, backend.name))


def _checked(values: dict[str, Any], allowed: set[str], name: str) -> dict[str, Any]:
    bad = sorted(set(values) - allowed)
    if bad:
        raise TypeError(f"solver {name!r} has no option(s) {', '.join(map(repr, bad))}; "
                        f"its options are: {', '.join(sorted(allowed))}")
    return values


def _zero_result(problem: DualProblem, name: str) -> SolveResult | None:
    """The zero network when it is optimal: every dual constraint holds at its dual point
    ``v0 = -dL/dyhat(0)`` (one scan over all patterns, stopping at the first violator)."""
    v0 = problem.loss.dual_candidate(-problem.y)
    if np.isfinite(problem.loss.dual_bound) and problem.engine.comm.max(float(np.abs(v0).max(initial=0.0))) > \
            problem.loss.dual_bound:
        return None
    scan = problem.engine.scan(v0, threshold=problem.beta, limit=1, first=True, tag="dual")
    if scan.found:
        return None
    Wz = np.zeros((problem.P, problem.d))
    msg = (f"the zero network is optimal: every dual constraint holds at its dual point (max "
           f"{scan.max_value:.6g} <= beta = {problem.beta:.6g}, exact cone projections)")
    return SolveResult(status=Status.OPTIMAL, objective=problem.objective(Wz, Wz), W=Wz, Z=Wz.copy(), solver=name,
                       iterations=0, timings=Timings(), message=msg, dual=v0, info={"zero_network": True})


def _unit_scales(problem: DualProblem) -> tuple[float, float] | None:
    """``(a, b)``: the inputs' and the targets' largest magnitudes, when either lies outside the
    unit range (None: solve as it is)."""
    comm = problem.engine.comm
    a = comm.max(float(np.abs(problem.inputs).max(initial=0.0)))
    b = comm.max(float(np.abs(problem.y).max(initial=0.0)))
    lo, hi = _UNIT_RANGE
    if a == 0.0 or b == 0.0 or (lo <= a <= hi and lo <= b <= hi):
        return None
    return a, b


def _rescaled(problem: DualProblem, a: float, b: float) -> tuple[DualProblem, float]:
    """Program (4) in units where inputs and targets are of size 1, and the weights' scale.

    With ``X = a X'``, ``y = b y'``, ``w = (b / a) w'``: the squared and Huber objectives are
    ``b^2 [L'(...) + beta / (a b) sum ||w'||]`` (Huber threshold ``delta / b``), the absolute one
    ``b [sum |r'| + beta / a sum ||w'||]``; the sign patterns are unchanged (``a > 0``).
    """
    loss = problem.loss
    if loss.name == "absolute":
        beta = problem.beta / a
    else:
        beta = problem.beta / (a * b)
        if isinstance(loss, HuberLoss):
            loss = HuberLoss(delta=loss.delta / b)
    scaled = dataclasses.replace(problem, inputs=problem.inputs / a, targets=problem.y.reshape(problem.targets.shape) / b,
                                 residual=False, residual_channel=0, beta=beta, loss=loss)
    return scaled, b / a


def solve(problem: DualProblem, solver: str = "auto", options: Any = None, *, recover: bool = True,
          certify: bool = True, device: Any = "cpu", tolerance: float = 1e-6,
          violation_tolerance: float = 1e-7, progress: bool = False, **option_values: Any) -> SolveResult:
    """Solve program (4), recover the primal CNN (eq. 5) and certify it (docs/math.md §6).

    Args:
        problem: from :func:`convexdual.build_problem`.
        solver: "auto" (:func:`choose_solver`: ``active_set`` for the squared loss, MOSEK if
            licensed else Clarabel otherwise), or any name in ``convexdual.available_solvers()``.
        options: the solver's options dataclass, a dict of its option names, or None.
        recover: build ``result.network``.
        certify: attach ``result.certificate``.
        device: where the work runs ("cpu", "cuda", a torch.device): the operator passes of the
            problem's engine (zero test, scans, the certificate's dual bound), the solver's own
            passes unless its options name a device, and the recovered network. The exact cone
            projections and the restricted programs run on the CPU in float64.
        tolerance, violation_tolerance: thresholds of ``certificate.ok``; the status is OPTIMAL
            only when the certificate holds at them.
        progress: tqdm bars (solver rounds, the certificate's scan) where the solver has them.
        **option_values: options by name (``time_limit=600``), as CVXPY users expect.

    Returns:
        A :class:`SolveResult`; check ``result.status`` (or ``raise_for_status()``).

    Raises:
        TypeError: ``problem`` or ``options`` of the wrong type, or an unknown option name.
        SolverUnavailableError: unknown, missing or unlicensed solver (named explicitly).
    """
    from convexdual.pipeline import finalize

    if not isinstance(problem, DualProblem):
        raise TypeError(f"problem must be a DualProblem from convexdual.build_problem(); got {type(problem).__name__}")
    backend, note = resolve_solver(solver, problem)
    fields = {f.name for f in dataclasses.fields(backend.options_class)}
    if progress and "progress" in fields and "progress" not in option_values and not (
            isinstance(options, dict) and "progress" in options):
        option_values["progress"] = True
    if str(device) != "cpu":
        from convexdual._validation import check_device

        dev = check_device(device)
        if str(problem.device) != str(dev):  # the engine follows (a new one, on the device)
            problem = dataclasses.replace(problem, device=dev)
        named = "device" in option_values or (options is not None and (not isinstance(options, dict)
                                                                        or "device" in options))
        if "device" in fields and not named:  # an options object or a named device is the user's choice
            option_values["device"] = dev
    opts = make_options(backend, options, **option_values)
    if problem.distributed:  # images sharded over ranks: only a solver that declares it runs (active_set)
        backend.check_problem(problem)
    raw = _zero_result(problem, backend.name)
    if raw is None:
        scales = _unit_scales(problem)
        if scales is None:
            raw = backend.solve(problem, opts)
        else:
            a, b = scales
            scaled, wscale = _rescaled(problem, a, b)
            raw = backend.solve(scaled, opts)
            raw = _unscale(problem, raw, wscale, b, a)
    if note:
        raw = dataclasses.replace(raw, message=f"{note}. {raw.message}" if raw.message else note)
    return finalize(problem, raw, recover=recover, certify=certify, device=device, tolerance=tolerance,
                    violation_tolerance=violation_tolerance, progress=progress)


def _unscale(problem: DualProblem, raw: SolveResult, wscale: float, b: float, a: float) -> SolveResult:
    """A raw result of the rescaled program in the problem's own units."""
    note = (f"solved in rescaled units (inputs / {a:.3g}, targets / {b:.3g}) and scaled back")
    if raw.W is None or raw.Z is None:
        return dataclasses.replace(raw, message=f"{raw.message}; {note}" if raw.message else note)
    W, Z = raw.W * wscale, raw.Z * wscale
    dual = None
    if raw.dual is not None:
        dual = np.asarray(raw.dual) * (1.0 if problem.loss.name == "absolute" else b)
    return dataclasses.replace(raw, W=W, Z=Z, dual=dual, objective=problem.objective(W, Z),
                               message=f"{raw.message}; {note}" if raw.message else note,
                               info={**raw.info, "unit_scales": {"inputs": a, "targets": b}})
