"""Numerical primitives shared by the solvers (no solver imports another solver module).

Shapes: a group matrix ``V`` is ``(P, d)`` (one row per pattern), as in the solvers.
"""

from __future__ import annotations

import torch

from convexdual.operators import PatternOperator

__all__ = ["group_soft_threshold", "power_lipschitz"]


def group_soft_threshold(V: torch.Tensor, tau: float) -> torch.Tensor:
    """Prox of ``tau * sum_i ||v_i||``: shrink each row's norm by ``tau``. Shapes: ``(P, d)``."""
    nrm = V.norm(dim=1, keepdim=True)
    return V * torch.clamp(1.0 - tau / nrm.clamp_min(1e-300), min=0.0)


def power_lipschitz(op: PatternOperator, iterations: int, seed: int) -> float:
    """``||A||_2^2`` of the pattern operator by the power method (deterministic given ``seed``)."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    V = torch.randn(op.P, op.d, generator=gen, dtype=torch.float64).to(device=op.device, dtype=op.dtype)
    V = V / V.norm()
    zero = torch.zeros(op.n, device=op.device, dtype=op.dtype)
    lam = 0.0
    for _ in range(max(1, iterations)):
        _, AtAV = op.gradient_sq(V, zero)
        lam = float(AtAV.norm())
        if lam == 0.0:
            return 1.0
        V = AtAV / lam
    return lam
