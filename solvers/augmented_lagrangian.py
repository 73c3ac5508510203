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
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from convexdual.operators import PatternOperator
from convexdual.problem import DualProblem
from convexdual.result import Status
from convexdual.solvers._common import TorchSolverOptions, certified_bound, torch_dtype
from convexdual.solvers._harness import Evaluation, IterativeSolver, Outcome, Step
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


class _State:
    """The dense data of the augmented Lagrangian (patch rows, masks, signs) and its iterates."""

    def __init__(self, problem: DualProblem, o: AugmentedLagrangianOptions) -> None:
        dt = torch_dtype(o.dtype)
        op = PatternOperator.from_problem(problem, device=o.device, dtype=dt, memory_budget_mb=o.memory_budget_mb,
                                          backend="torch")
        need = 2 * problem.P * problem.n * op.itemsize * 4
        if need > op.memory_budget:
            raise ValueError(f"augmented_lagrangian keeps ~{need / 2**20:.0f} MiB of cone multipliers and values "
                             f"(2 P n = {2 * problem.P * problem.n:,} rows) but memory_budget_mb is "
                             f"{o.memory_budget_mb}; raise it, use fewer patterns, or use solver='clarabel-ws'")
        self.problem, self.o, self.op, self.dt = problem, o, op, dt
        self.X = X = torch.cat([op.patches(s, e) for s, e in op.batches()]).to(dt)  # (n, d)
        self.M = M = (X @ op.gates.T >= 0).to(dt)  # (n, P)
        self.S2 = torch.cat([2 * M - 1, 2 * M - 1], 1)  # (n, 2P): the signs of w then z groups
        self.y = torch.as_tensor(problem.y, dtype=dt, device=op.device)
        self.P, self.beta = problem.P, float(problem.beta)
        self.xnorm2 = float(torch.linalg.matrix_norm(X, ord=2)) ** 2
        self.xmax = float(X.norm(dim=1).max()) or 1.0
        self.best: tuple[float, np.ndarray | None] = (np.inf, None)
        self.gap = self.viol = float("nan")

    def parts(self, U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(yhat, C)``: the prediction and the cone values ``(2 D_i - I) X u_g``, ``(n, 2P)``."""
        XU = self.X @ U.T  # (n, 2P)
        yhat = ((XU[:, :self.P] - XU[:, self.P:]) * self.M).sum(1)
        return yhat, XU * self.S2

    def grad(self, U: torch.Tensor, lam: torch.Tensor, rho: float) -> torch.Tensor:
        yhat, C = self.parts(U)
        r = yhat - self.y
        g = (self.M * r[:, None]).T @ self.X  # (P, d)
        pen = torch.clamp(lam - rho * C, min=0.0) * self.S2  # (n, 2P)
        return torch.cat([g, -g]) - pen.T @ self.X


class AugmentedLagrangianSolver(IterativeSolver):
    """Augmented Lagrangian + restarted FISTA, exact cone polish, certified stop."""

    name: ClassVar[str] = "augmented_lagrangian"
    options_class: ClassVar[type] = AugmentedLagrangianOptions
    losses: ClassVar[tuple[str, ...]] = ("squared",)
    progress_desc: ClassVar[str] = "augmented Lagrangian"

    def _setup(self, problem: DualProblem, o: AugmentedLagrangianOptions) -> _State:
        return _State(problem, o)

    def _fresh(self, s: _State) -> None:
        s.Lf = 2.0 * 1.05 * power_lipschitz(s.op, 30, s.o.seed)
        s.rho = s.o.rho * s.Lf / s.xnorm2
        s.U = torch.zeros(2 * s.P, s.problem.d, dtype=s.dt, device=s.op.device)
        s.lam = torch.zeros(s.problem.n, 2 * s.P, dtype=s.dt, device=s.op.device)
        s.last_viol = np.inf

    def _restore(self, s: _State, st: dict[str, Any]) -> None:
        s.U, s.lam = st["U"].to(s.op.device, s.dt), st["lam"].to(s.op.device, s.dt)
        s.rho, s.Lf, s.last_viol = float(st["rho"]), float(st["Lf"]), float(st["last_viol"])

    def _state(self, s: _State) -> dict[str, Any]:
        return {"U": s.U, "lam": s.lam, "rho": s.rho, "Lf": s.Lf, "last_viol": s.last_viol}

    def _step(self, s: _State, it: int, time_left: float | None) -> Step:
        """``inner_iter`` restarted FISTA steps, the multiplier update, then the exact polish and
        its certificate (every outer iteration)."""
        o, problem, P = s.o, s.problem, s.P
        step = 1.0 / (s.Lf + s.rho * s.xnorm2)
        U = s.U
        Uprev, tk = U.clone(), 1.0
        for _ in range(o.inner_iter):
            tn = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * tk * tk))
            Yk = U + ((tk - 1.0) / tn) * (U - Uprev)
            Un = group_soft_threshold(Yk - step * s.grad(Yk, s.lam, s.rho), step * s.beta)
            if float(((Yk - Un) * (Un - U)).sum()) > 0:
                tn = 1.0
            Uprev, U, tk = U, Un, tn
        s.U = U
        _, C = s.parts(U)
        s.lam = torch.clamp(s.lam - s.rho * C, min=0.0)
        norms = U.norm(dim=1)
        raw_viol = float((torch.clamp(-C, min=0).max(0).values / (s.xmax * norms.clamp_min(1e-300)))
                         [norms > 1e-6 * norms.max().clamp_min(1e-300)].max()) if float(norms.max()) > 0 else 0.0
        if raw_viol > o.rho_decrease * s.last_viol:
            s.rho *= o.rho_growth
        s.last_viol = raw_viol
        # exact polish + certificate
        Upol = _polish(problem, U.double().cpu().numpy())
        Wp, Zp = Upol[:P], Upol[P:]
        pobj = problem.objective(Wp, Zp)
        lower, _ = certified_bound(problem, problem.predict(Wp, Zp))
        s.gap = (pobj - lower) / max(abs(pobj), 1e-300)
        s.viol = problem.cone_violation(Wp, Zp)
        s.last = (pobj, Upol)
        if pobj < s.best[0]:
            s.best = s.last
        return Step(Evaluation(pobj, lower, s.gap, s.viol, {"raw_violation": raw_viol, "rho": s.rho}))

    def _on_stop(self, s: _State, status: Status) -> None:
        s.best = s.last  # the certified point

    def _outcome(self, s: _State, status: Status, message: str, iterations: int,
                 history: list[dict[str, Any]]) -> Outcome:
        Ubest = s.best[1] if s.best[1] is not None else _polish(s.problem, s.U.double().cpu().numpy())
        W, Z = Ubest[:s.P].copy(), Ubest[s.P:].copy()
        if not message:
            message = (f"certified relative gap {s.gap:.2e}, violation {s.viol:.2e} after {iterations} outer "
                       "iterations")
        return Outcome(s.problem.objective(W, Z), W, Z, message, {"rho": s.rho, **s.problem.describe()})


def _polish(problem: DualProblem, U: np.ndarray) -> np.ndarray:
    """Project every nonzero group exactly onto its cone (the engine's projection)."""
    out = U.copy()
    P = problem.P
    for g in np.flatnonzero(np.linalg.norm(U, axis=1) > 0):
        out[g] = problem.engine.project(int(g % P), U[g])[1]
    return out
