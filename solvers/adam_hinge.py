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
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch

from convexdual.operators import PatternOperator
from convexdual.problem import DualProblem
from convexdual.result import Status
from convexdual.solvers._common import TorchSolverOptions, certified_bound, torch_dtype
from convexdual.solvers._harness import Evaluation, IterativeSolver, Outcome, Step

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


def _norm_gradient(W: torch.Tensor) -> torch.Tensor:
    """Gradient of ``sum_i ||w_i||``: ``w_i / ||w_i||``, and 0 (a subgradient) at ``w_i = 0``."""
    norms = W.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, W / norms.clamp_min(torch.finfo(W.dtype).tiny), torch.zeros_like(W))


class AdamHingeSolver(IterativeSolver):
    """Minibatch Adam on the hinge-penalised program (4) (the paper's approach)."""

    name: ClassVar[str] = "adam_hinge"
    options_class: ClassVar[type] = AdamHingeOptions
    losses: ClassVar[tuple[str, ...]] = ("squared",)  # its minibatch loss is the squared one
    progress_desc: ClassVar[str] = "adam+hinge"

    def _setup(self, problem: DualProblem, o: AdamHingeOptions) -> SimpleNamespace:
        dt = torch_dtype(o.dtype)
        op = PatternOperator.from_problem(problem, device=o.device, dtype=dt, memory_budget_mb=o.memory_budget_mb,
                                          backend=o.backend)
        gen = torch.Generator(device="cpu").manual_seed(int(o.seed))
        W = (o.init_scale * torch.randn(problem.P, problem.d, generator=gen, dtype=torch.float64)).to(op.device, dt)
        Z = (o.init_scale * torch.randn(problem.P, problem.d, generator=gen, dtype=torch.float64)).to(op.device, dt)
        W.requires_grad_(True)
        Z.requires_grad_(True)
        return SimpleNamespace(problem=problem, o=o, dt=dt, op=op, gen=gen, W=W, Z=Z,
                               y=torch.as_tensor(problem.y, dtype=dt, device=op.device),
                               opt=torch.optim.Adam([W, Z], lr=o.lr), gap=float("nan"), viol=float("nan"))

    def _restore(self, s: SimpleNamespace, st: dict[str, Any]) -> None:
        with torch.no_grad():
            s.W.copy_(st["W"])
            s.Z.copy_(st["Z"])
        s.opt.load_state_dict(st["opt"])
        s.gen.set_state(st["rng"])

    def _state(self, s: SimpleNamespace) -> dict[str, Any]:
        return {"W": s.W.detach(), "Z": s.Z.detach(), "opt": s.opt.state_dict(), "rng": s.gen.get_state()}

    def _step(self, s: SimpleNamespace, ep: int, time_left: float | None) -> Step:
        """One epoch of minibatches; every ``check_every`` epochs the exact certificate."""
        o, op, problem, W, Z, dt = s.o, s.op, s.problem, s.W, s.Z, s.dt
        N = problem.num_images
        perm = torch.randperm(N, generator=s.gen).tolist()
        for b in range(0, N, o.batch_size):
            imgs = perm[b:b + o.batch_size]
            scale = N / len(imgs)
            # data + hinge terms: one fused pass (PatternOperator.hinge_gradient), no rows x P tensors
            _, _, gW, gZ = op.hinge_gradient(W, Z, s.y, o.hinge, imgs)
            W.grad = scale * gW + problem.beta * _norm_gradient(W.detach())
            Z.grad = scale * gZ + problem.beta * _norm_gradient(Z.detach())
            s.opt.step()
        if not ((ep + 1) % o.check_every == 0 or ep + 1 == o.max_iter):
            return Step()
        Wn, Zn = W.detach().double().cpu().numpy(), Z.detach().double().cpu().numpy()
        yhat = op.forward(torch.as_tensor(Wn - Zn, dtype=dt)).double().cpu().numpy()
        pobj = float(problem.loss.value(yhat - problem.y)
                     + problem.beta * (np.linalg.norm(Wn, axis=1).sum() + np.linalg.norm(Zn, axis=1).sum()))
        lower, _ = certified_bound(problem, yhat)
        s.gap = (pobj - lower) / max(abs(pobj), 1e-300)
        s.viol = problem.cone_violation(Wn, Zn)
        return Step(Evaluation(pobj, lower, s.gap, s.viol))

    def _outcome(self, s: SimpleNamespace, status: Status, message: str, iterations: int,
                 history: list[dict[str, Any]]) -> Outcome:
        Wn, Zn = s.W.detach().double().cpu().numpy(), s.Z.detach().double().cpu().numpy()
        if not message:
            message = f"after {iterations} epochs: certified relative gap {s.gap:.2e}, cone violation {s.viol:.2e}"
        return Outcome(s.problem.objective(Wn, Zn), Wn, Zn, message, s.problem.describe())
