"""Peer solvers outside convexdual: ``pyscnn`` (import name ``scnn``, pilancilab's convex nets).

scnn solves the *same* program (4) on the explicit patch matrix when called with
``unitize_data=False`` and ``lam = beta / n`` (it minimises ``1/(2n)||.||^2 + lam sum||.||``:
``n`` times its objective is ours). Two peers:

* ``scnn-al``: its augmented Lagrangian on ``ConvexReLU`` (the constrained program (4));
* ``scnn-rfista``: its R-FISTA on ``ConvexGatedReLU``, the gated relaxation (no cone
  constraints): a lower bound, scored like every point by our objective *and* violation.

scnn has no time limit and returns its metrics only at the end; the budget is enforced by
wrapping its ``OptimizationProcedure._record_time`` (called at every metrics record, every
``metric_freq`` iterations) for the duration of the call: past the budget it stops the run
and the trace recorded so far is kept (no final point then). Its trace points carry scnn's
own objective (times n) and its constraint-gap metric (2-norm, not our relative cone
violation: ``violation`` is None there, so they never count as within an accuracy); the
final point (when it finishes) is mapped back to our ``(W, Z)`` and evaluated with our
objective, violation and certificate. Squared loss only (scnn has no other).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import numpy as np

__all__ = ["PEERS", "peer_available", "run_peer"]

#: peer name -> what it is
PEERS = {
    "scnn-al": "pyscnn augmented Lagrangian on ConvexReLU (program (4)), unitize_data=False, lam = beta / n",
    "scnn-rfista": "pyscnn R-FISTA on ConvexGatedReLU (the gated relaxation, a lower bound), lam = beta / n",
}


def peer_available(name: str) -> tuple[bool, str]:
    try:
        import scnn  # noqa: F401
        from scnn.solvers import AL, RFISTA  # noqa: F401
    except Exception as exc:
        return False, (f"pyscnn is not installed ({type(exc).__name__}: {exc}); install it beside our torch with "
                       "a constraint file pinning torch (see docs/PERFORMANCE notes): pip install -c pins.txt pyscnn")
    return True, "ok"


class _Budget(Exception):
    def __init__(self, log: dict[str, Any]) -> None:
        super().__init__("time limit")
        self.log = log


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Stop scnn's optimisation loop at its next metrics record after ``seconds``."""
    try:
        from scnn.private.methods.optimization_procedures.optimization_procedure import OptimizationProcedure
    except ImportError:  # another scnn layout: no limit (the runner's hard limit still applies)
        yield
        return
    original = OptimizationProcedure._record_time
    t0 = time.perf_counter()

    def record(self, metrics_log, start_time):
        out = original(self, metrics_log, start_time)
        if seconds is not None and time.perf_counter() - t0 > seconds:
            raise _Budget(dict(metrics_log))
        return out

    OptimizationProcedure._record_time = record
    try:
        yield
    finally:
        OptimizationProcedure._record_time = original


def _trace(log: dict[str, Any], n: int, offset: float) -> list[dict[str, Any]]:
    times = np.cumsum(np.asarray(log.get("time", []), dtype=float))
    obj = np.asarray(log.get("train_base_objective", []), dtype=float) * n
    gaps = log.get("train_constraint_gaps")
    m = min(len(times), len(obj))
    out = []
    for k in range(m):
        g = None if gaps is None or k >= len(gaps) else float(np.asarray(gaps[k], dtype=float))
        out.append({"time": offset + float(times[k]), "objective": float(obj[k]), "violation": None,
                    "scnn_constraint_gap": g, "source": "scnn metrics"})
    return out


def run_peer(name: str, problem: Any, *, time_limit: float | None, tol: float = 1e-8,
             max_iters: int = 100_000, metric_freq: int = 10) -> dict[str, Any]:
    """Run peer ``name`` on ``problem``; a cell record (status, trace, final evaluation)."""
    from scnn.metrics import Metrics
    from scnn.models import ConvexGatedReLU, ConvexReLU
    from scnn.optimize import optimize_model
    from scnn.regularizers import NeuronGL1
    from scnn.solvers import AL, RFISTA

    from convexdual.certificate import certify_solution

    if problem.loss.name != "squared":
        return {"status": "not_applicable", "message": f"scnn supports the squared loss only (instance: "
                f"{problem.loss.name})", "trace": []}
    gated = name == "scnn-rfista"
    t0 = time.perf_counter()
    X, y, n = np.array(problem.X), np.array(problem.y), problem.n
    G = np.array(problem.patterns.gates.T)  # a copy: scnn must not touch the problem's gates
    model = ConvexGatedReLU(G) if gated else ConvexReLU(G)
    solver = RFISTA(model, max_iters=max_iters, tol=tol) if gated else AL(
        model, max_primal_iters=max_iters, max_dual_iters=max_iters, tol=tol, constraint_tol=tol)
    metrics = Metrics(metric_freq=metric_freq, model_loss=True, constraint_gaps=not gated)
    build = time.perf_counter() - t0
    rec: dict[str, Any] = {"settings": {"tol": tol, "max_iters": max_iters, "metric_freq": metric_freq,
                                        "unitize_data": False, "lam": problem.beta / n, "dtype": "float64"}}
    t1 = time.perf_counter()
    try:
        with _time_limit(None if time_limit is None else max(0.0, time_limit - build)):
            m, met = optimize_model(model, solver, metrics, X, y, regularizer=NeuronGL1(problem.beta / n),
                                    return_convex=True, unitize_data=False, dtype="float64")
    except _Budget as stop:
        rec.update(status="time_limit", message=f"stopped at the time limit ({time_limit:g} s); scnn returns no "
                   "point then, only its metrics", trace=_trace(stop.log, n, build),
                   timings={"build": build, "solve": time.perf_counter() - t1})
        return rec
    solve = time.perf_counter() - t1
    log = {"time": np.diff(np.concatenate([[0.0], np.asarray(met.time, dtype=float)])),
           "train_base_objective": met.model_loss,
           "train_constraint_gaps": None if gated else met.constraint_gaps}
    trace = _trace(log, n, build)
    # map scnn's (deduplicated, reordered) patterns back to ours by their masks on nonzero rows
    nz = np.linalg.norm(X, axis=1) > 0
    ours = {problem.mask(i)[nz].tobytes(): i for i in range(problem.P)}
    D = (X @ m.G > 0)[nz]
    W, Z = np.zeros((problem.P, problem.d)), np.zeros((problem.P, problem.d))
    for k in range(D.shape[1]):
        i = ours.get(D[:, k].tobytes())
        if i is None:
            rec.update(status="solver_error", message="a scnn pattern is not one of ours (ties X g == 0?)",
                       trace=trace, timings={"build": build, "solve": solve})
            return rec
        if gated:
            W[i] = m.parameters[0][0][k]
        else:
            W[i], Z[i] = m.parameters[0][0][k], m.parameters[1][0][k]
    c = certify_solution(problem, W, Z)
    final = {"time": build + solve, "objective": float(c.convex_objective), "violation": float(c.max_violation),
             "source": "final point, our objective and violation"}
    rec.update(status="finished", message="scnn reports no status or duality gap: it stopped at its own "
               "tolerance or iteration limit", trace=trace + [final], objective=float(c.convex_objective),
               certificate={"relative_gap": float(c.relative_gap), "max_violation": float(c.max_violation),
                            "dual_bound": float(c.dual_bound), "num_neurons": int(c.num_neurons), "ok": bool(c.ok)},
               timings={"build": build, "solve": solve})
    return rec
