"""The paper's method as a baseline: Adam on (4) with a hinge penalty on cone violations.

Minimises, over minibatches of images (batch 25 in the paper),

    1/2 ||sum_i D_i X (w_i - z_i) - y||^2 + beta sum_i (||w_i|| + ||z_i||)
        + hinge * sum_i sum_rows relu(-(2 D_i - I) X w_i) + relu(-(2 D_i - I) X z_i)

(data and hinge terms rescaled to full-data units). Every ``check_every`` epochs the
full objective of (4), the relative cone violation and the exact certified gap are
logged. Reported honestly: the status is OPTIMAL only if that certificate holds
(gap <= tol and violation <= violation_tol), which a penalty method rarely reaches;
otherwise MAX_ITERATIONS / TIME_LIMIT with the numbers in the message.
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

__all__ = ["AdamHingeOptions", "AdamHingeSolver"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdamHingeOptions(TorchSolverOptions):
    """Options of :class:`AdamHingeSolver` (see :class:`TorchSolverOptions`).

    Attributes:
        max_iter: epochs.
        batch_size: images per minibatch (the paper: 25).
        lr: Adam learning rate.
        hinge: weight of the hinge penalty on cone violations.
        init_scale: standard deviation of the (seeded) Gaussian initialisation.
        check_every: epochs between full-data certificate evaluations.
        checkpoint_every: epochs between checkpoints.
    """

    max_iter: int = 200
    batch_size: int = 25
    lr: float = 1e-2
    hinge: float = 1.0
    init_scale: float = 1e-3
    check_every: int = 10
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.batch_size) < 1 or not (self.lr > 0) or not (self.hinge >= 0):
            raise ValueError("batch_size must be >= 1, lr > 0 and hinge >= 0")


class AdamHingeSolver(TorchSolver):
    """Minibatch Adam on the hinge-penalised program (4) (the paper's approach)."""

    name: ClassVar[str] = "adam_hinge"
    options_class: ClassVar[type] = AdamHingeOptions
    losses: ClassVar[tuple[str, ...]] = ("squared",)  # its minibatch loss is the squared one

    def _solve(self, problem: DualProblem, o: AdamHingeOptions) -> SolveResult:
        t0 = time.perf_counter()
        dt = torch_dtype(o.dtype)
        op = PatternOperator.from_problem(problem, device=o.device, dtype=dt, memory_budget_mb=o.memory_budget_mb,
                                          backend="torch")
        P, d, N, hw = problem.P, problem.d, problem.num_images, op.H * op.W
        y = torch.as_tensor(problem.y, dtype=dt, device=op.device)
        gen = torch.Generator(device="cpu").manual_seed(int(o.seed))
        W = (o.init_scale * torch.randn(P, d, generator=gen, dtype=torch.float64)).to(op.device, dt)
        Z = (o.init_scale * torch.randn(P, d, generator=gen, dtype=torch.float64)).to(op.device, dt)
        W.requires_grad_(True)
        Z.requires_grad_(True)
        opt = torch.optim.Adam([W, Z], lr=o.lr)
        ep0, history, elapsed0 = 0, [], 0.0
        if o.resume_from is not None:
            st = load_checkpoint(o.resume_from, self.name, problem)
            with torch.no_grad():
                W.copy_(st["W"])
                Z.copy_(st["Z"])
            opt.load_state_dict(st["opt"])
            gen.set_state(st["rng"])
            ep0, history, elapsed0 = int(st["epoch"]), list(st["history"]), float(st["elapsed"])
        t1 = time.perf_counter()
        status, message = Status.MAX_ITERATIONS, ""
        bar = progress_bar(o.max_iter, o.progress, "adam+hinge", ep0)
        tstart = time.perf_counter() - elapsed0
        ep = ep0
        gap_rel = viol = float("nan")
        try:
            for ep in range(ep0, o.max_iter):
                perm = torch.randperm(N, generator=gen).tolist()
                for s in range(0, N, o.batch_size):
                    imgs = perm[s:s + o.batch_size]
                    scale = N / len(imgs)
                    Xb = torch.cat([op.patches(i, i + 1) for i in imgs])
                    yb = torch.cat([y[i * hw:(i + 1) * hw] for i in imgs])
                    Mb = (Xb @ op.gates.T >= 0).to(dt)
                    Sb = 2 * Mb - 1
                    XW, XZ = Xb @ W.T, Xb @ Z.T
                    r = ((XW - XZ) * Mb).sum(1) - yb
                    loss = (scale * (0.5 * (r * r).sum() + o.hinge * (torch.relu(-Sb * XW).sum()
                                                                      + torch.relu(-Sb * XZ).sum()))
                            + problem.beta * (W.norm(dim=1).sum() + Z.norm(dim=1).sum()))
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                elapsed = time.perf_counter() - tstart
                bar.update(1)
                if (ep + 1) % o.check_every == 0 or ep + 1 == o.max_iter:
                    Wn, Zn = W.detach().double().cpu().numpy(), Z.detach().double().cpu().numpy()
                    yhat = op.forward(torch.as_tensor(Wn - Zn, dtype=dt)).double().cpu().numpy()
                    pobj = float(problem.loss.value(yhat - problem.y)
                                 + problem.beta * (np.linalg.norm(Wn, axis=1).sum() + np.linalg.norm(Zn, axis=1).sum()))
                    lower, _ = certified_bound(problem, yhat)
                    gap_rel = (pobj - lower) / max(abs(pobj), 1e-300)
                    viol = problem.cone_violation(Wn, Zn)
                    history.append({"iteration": ep + 1, "time": elapsed, "objective": pobj, "dual_bound": lower,
                                    "relative_gap": gap_rel, "violation": viol})
                    bar.set_postfix(obj=f"{pobj:.6g}", gap=f"{gap_rel:.1e}", viol=f"{viol:.1e}")
                    if gap_rel <= o.tol and viol <= o.violation_tol:
                        status = Status.OPTIMAL
                if o.checkpoint_path is not None and (ep + 1) % o.checkpoint_every == 0:
                    save_checkpoint(o.checkpoint_path, self.name, problem,
                                    {"W": W.detach(), "Z": Z.detach(), "opt": opt.state_dict(), "rng": gen.get_state(),
                                     "epoch": ep + 1, "history": history, "elapsed": elapsed})
                if status is Status.OPTIMAL:
                    break
                if o.time_limit is not None and elapsed >= o.time_limit:
                    status = Status.TIME_LIMIT
                    break
        except KeyboardInterrupt:
            status, message = Status.INTERRUPTED, "interrupted by the user"
        finally:
            bar.close()
        t2 = time.perf_counter()
        Wn, Zn = W.detach().double().cpu().numpy(), Z.detach().double().cpu().numpy()
        if not message:
            message = f"after {ep + 1} epochs: certified relative gap {gap_rel:.2e}, cone violation {viol:.2e}"
        return SolveResult(status=status, objective=problem.objective(Wn, Zn), W=Wn, Z=Zn, solver=self.name,
                           iterations=ep + 1, timings=Timings(build=t1 - t0, solve=t2 - t1), message=message,
                           history=tuple(history), info=problem.describe())
