"""Augmented Lagrangian for the constrained program (4), in torch, with certified stopping.

For the cone rows ``c_g(U) = (2 D_i - I) X u_g >= 0`` (``2P`` groups ``u_g``: ``w_i``
then ``z_i``) and multipliers ``Lambda >= 0`` the solver minimises

    1/2 ||sum_i D_i X (w_i - z_i) - y||^2 + beta sum_g ||u_g||
        + 1/(2 rho) sum_g ||(Lambda_g - rho c_g(U))_+||^2

by restarted FISTA (group soft-thresholding) for ``inner_iter`` steps, then
``Lambda <- (Lambda - rho c(U))_+`` and ``rho`` grows while the violation stalls.
After every outer step the active groups are projected *exactly* onto their cones
(NNLS, the same projection the certificate uses) and that polished point is
certified with the exact dual bound of docs/math.md §6; the run stops when its relative
gap is ``<= tol`` and its relative violation ``<= violation_tol``.

Memory: multipliers for every cone row, ``2 P n`` numbers; the solver refuses
problems where they exceed the memory budget (use ``clarabel-ws`` or a pattern
subset there).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from convexdual.operators import PatternOperator
from convexdual.problem import DualProblem
from convexdual.result import SolveResult, Status, Timings
from convexdual.solvers._common import (
    TorchSolver,
    TorchSolverOptions,
    certified_bound,
    load_checkpoint,
    progress_bar,
    save_checkpoint,
    torch_dtype,
)
from convexdual.solvers._primitives import group_soft_threshold, power_lipschitz

__all__ = ["AugmentedLagrangianOptions", "AugmentedLagrangianSolver"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentedLagrangianOptions(TorchSolverOptions):
    """Options of :class:`AugmentedLagrangianSolver` (see :class:`TorchSolverOptions`).

    Attributes:
        max_iter: outer (multiplier) iterations.
        inner_iter: FISTA steps per outer iteration.
        rho: initial penalty, relative to ``||A||^2 / ||X||^2`` (scale-free).
        rho_growth: factor applied when the violation did not drop by ``rho_decrease``.
        rho_decrease: required violation reduction per outer step.
        checkpoint_every: outer iterations between checkpoints.
    """

    max_iter: int = 500
    inner_iter: int = 100
    rho: float = 1.0
    rho_growth: float = 2.0
    rho_decrease: float = 0.5
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.inner_iter) < 1 or not (self.rho > 0) or not (self.rho_growth >= 1):
            raise ValueError("inner_iter must be >= 1, rho > 0 and rho_growth >= 1")


class AugmentedLagrangianSolver(TorchSolver):
    """Augmented Lagrangian + restarted FISTA, exact cone polish, certified stop."""

    name: ClassVar[str] = "augmented_lagrangian"
    options_class: ClassVar[type] = AugmentedLagrangianOptions
    losses: ClassVar[tuple[str, ...]] = ("squared",)

    def _solve(self, problem: DualProblem, o: AugmentedLagrangianOptions) -> SolveResult:
        t0 = time.perf_counter()
        dt = torch_dtype(o.dtype)
        op = PatternOperator.from_problem(problem, device=o.device, dtype=dt, memory_budget_mb=o.memory_budget_mb,
                                          backend="torch")
        need = 2 * problem.P * problem.n * op.itemsize * 4
        if need > op.memory_budget:
            raise ValueError(f"augmented_lagrangian keeps ~{need / 2**20:.0f} MiB of cone multipliers and values "
                             f"(2 P n = {2 * problem.P * problem.n:,} rows) but memory_budget_mb is "
                             f"{o.memory_budget_mb}; raise it, use fewer patterns, or use solver='clarabel-ws'")
        X = torch.cat([op.patches(s, e) for s, e in op.batches()]).to(dt)  # (n, d)
        M = (X @ op.gates.T >= 0).to(dt)  # (n, P)
        S = 2 * M - 1
        y = torch.as_tensor(problem.y, dtype=dt, device=op.device)
        P, d, beta = problem.P, problem.d, float(problem.beta)
        xnorm2 = float(torch.linalg.matrix_norm(X, ord=2)) ** 2
        xmax = float(X.norm(dim=1).max()) or 1.0

        def parts(U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            XU = X @ U.T  # (n, 2P)
            yhat = ((XU[:, :P] - XU[:, P:]) * M).sum(1)
            C = XU * torch.cat([S, S], 1)
            return yhat, C

        def grad(U: torch.Tensor, lam: torch.Tensor, rho: float) -> torch.Tensor:
            yhat, C = parts(U)
            r = yhat - y
            g = (M * r[:, None]).T @ X  # (P, d)
            pen = torch.clamp(lam - rho * C, min=0.0) * torch.cat([S, S], 1)  # (n, 2P)
            return torch.cat([g, -g]) - pen.T @ X

        if o.resume_from is not None:
            st = load_checkpoint(o.resume_from, self.name, problem)
            U, lam = st["U"].to(op.device, dt), st["lam"].to(op.device, dt)
            rho, Lf, it0 = float(st["rho"]), float(st["Lf"]), int(st["iteration"])
            history, elapsed0, last_viol = list(st["history"]), float(st["elapsed"]), float(st["last_viol"])
        else:
            Lf = 2.0 * 1.05 * power_lipschitz(op, 30, o.seed)
            rho = o.rho * Lf / xnorm2
            U = torch.zeros(2 * P, d, dtype=dt, device=op.device)
            lam = torch.zeros(problem.n, 2 * P, dtype=dt, device=op.device)
            it0, history, elapsed0, last_viol = 0, [], 0.0, np.inf
        t1 = time.perf_counter()
        status, message = Status.MAX_ITERATIONS, ""
        best: tuple[float, np.ndarray | None] = (np.inf, None)
        bar = progress_bar(o.max_iter, o.progress, "augmented Lagrangian", it0)
        tstart = time.perf_counter() - elapsed0
        it = it0
        gap_rel = viol = float("nan")
        try:
            for it in range(it0, o.max_iter):
                step = 1.0 / (Lf + rho * xnorm2)
                Uprev, tk = U.clone(), 1.0
                for _ in range(o.inner_iter):
                    tn = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * tk * tk))
                    Yk = U + ((tk - 1.0) / tn) * (U - Uprev)
                    Un = group_soft_threshold(Yk - step * grad(Yk, lam, rho), step * beta)
                    if float(((Yk - Un) * (Un - U)).sum()) > 0:
                        tn = 1.0
                    Uprev, U, tk = U, Un, tn
                _, C = parts(U)
                lam = torch.clamp(lam - rho * C, min=0.0)
                norms = U.norm(dim=1)
                raw_viol = float((torch.clamp(-C, min=0).max(0).values / (xmax * norms.clamp_min(1e-300)))
                                 [norms > 1e-6 * norms.max().clamp_min(1e-300)].max()) if float(norms.max()) > 0 else 0.0
                if raw_viol > o.rho_decrease * last_viol:
                    rho *= o.rho_growth
                last_viol = raw_viol
                # exact polish + certificate
                Upol = _polish(problem, U.double().cpu().numpy())
                Wp, Zp = Upol[:P], Upol[P:]
                pobj = problem.objective(Wp, Zp)
                yhat = problem.predict(Wp, Zp)
                lower, _ = certified_bound(problem, yhat)
                gap_rel = (pobj - lower) / max(abs(pobj), 1e-300)
                viol = problem.cone_violation(Wp, Zp)
                if pobj < best[0]:
                    best = (pobj, Upol)
                elapsed = time.perf_counter() - tstart
                history.append({"iteration": it + 1, "time": elapsed, "objective": pobj, "dual_bound": lower,
                                "relative_gap": gap_rel, "violation": viol, "raw_violation": raw_viol, "rho": rho})
                bar.update(1)
                bar.set_postfix(obj=f"{pobj:.6g}", gap=f"{gap_rel:.1e}", viol=f"{viol:.1e}")
                if o.checkpoint_path is not None and (it + 1) % o.checkpoint_every == 0:
                    save_checkpoint(o.checkpoint_path, self.name, problem,
                                    {"U": U, "lam": lam, "rho": rho, "Lf": Lf, "iteration": it + 1,
                                     "history": history, "elapsed": elapsed, "last_viol": last_viol})
                if gap_rel <= o.tol and viol <= o.violation_tol:
                    status, best = Status.OPTIMAL, (pobj, Upol)
                    break
                if o.time_limit is not None and elapsed >= o.time_limit:
                    status = Status.TIME_LIMIT
                    break
        except KeyboardInterrupt:
            status, message = Status.INTERRUPTED, "interrupted by the user"
        finally:
            bar.close()
        t2 = time.perf_counter()
        Ubest = best[1] if best[1] is not None else _polish(problem, U.double().cpu().numpy())
        W, Z = Ubest[:P].copy(), Ubest[P:].copy()
        if not message:
            message = f"certified relative gap {gap_rel:.2e}, violation {viol:.2e} after {it + 1} outer iterations"
        return SolveResult(status=status, objective=problem.objective(W, Z), W=W, Z=Z, solver=self.name,
                           iterations=it + 1, timings=Timings(build=t1 - t0, solve=t2 - t1), message=message,
                           history=tuple(history), info={"rho": rho, **problem.describe()})


def _polish(problem: DualProblem, U: np.ndarray) -> np.ndarray:
    """Project every nonzero group exactly onto its cone (the engine's projection)."""
    out = U.copy()
    P = problem.P
    for g in np.flatnonzero(np.linalg.norm(U, axis=1) > 0):
        out[g] = problem.engine.project(int(g % P), U[g])[1]
    return out
