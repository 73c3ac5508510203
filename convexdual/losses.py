"""Convex losses L(yhat, y) summed over patch rows (docs/math.md §4, Appendix E).

Each loss gives what the solvers and certificates need:

* ``value(r)`` with ``r = yhat - y`` (numpy) and ``torch_value(r)``;
* ``cvxpy(r)``: the same as a CVXPY expression;
* ``dual_candidate(r)``: ``v = -dL/dyhat`` (a subgradient for non-smooth losses),
  the optimal dual point when ``yhat`` is optimal;
* the Fenchel dual objective ``dual_value(v, y) = -L*(-v)`` and the domain of
  ``L*`` (``||v||_inf <= dual_bound``), so a certificate can scale a candidate.

Conventions: squared ``1/2 r^2``; absolute ``|r|``; Huber
``1/2 r^2`` for ``|r| <= delta`` else ``delta (|r| - delta/2)`` (``= cvxpy.huber/2``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Loss", "SquaredLoss", "AbsoluteLoss", "HuberLoss", "get_loss", "LOSSES"]


@dataclass(frozen=True)
class Loss:
    """Base class; subclasses are frozen dataclasses."""

    name: str = "loss"

    # --- values ---------------------------------------------------------
    def value(self, r: np.ndarray) -> float:
        raise NotImplementedError

    def torch_value(self, r: Any) -> Any:
        raise NotImplementedError

    def cvxpy(self, r: Any) -> Any:
        raise NotImplementedError

    # --- dual -----------------------------------------------------------
    def dual_candidate(self, r: np.ndarray) -> np.ndarray:
        """``v = -dL/dyhat`` at ``r = yhat - y``."""
        raise NotImplementedError

    @property
    def dual_bound(self) -> float:
        """``L*`` is finite only on ``||v||_inf <= dual_bound`` (inf: everywhere)."""
        return float("inf")

    def dual_value(self, v: np.ndarray, y: np.ndarray) -> float:
        """``-L*(-v)``; -inf outside the domain."""
        raise NotImplementedError

    def best_dual_scale(self, v: np.ndarray, y: np.ndarray, s_max: float) -> float:
        """argmax of ``dual_value(s v, y)`` over ``0 <= s <= s_max``."""
        raise NotImplementedError

    @property
    def smooth(self) -> bool:
        return True


@dataclass(frozen=True)
class SquaredLoss(Loss):
    name: str = "squared"

    def value(self, r):
        return 0.5 * float(np.dot(r.ravel(), r.ravel()))

    def torch_value(self, r):
        return 0.5 * (r * r).sum()

    def cvxpy(self, r):
        import cvxpy as cp

        return 0.5 * cp.sum_squares(r)

    def dual_candidate(self, r):
        return -np.asarray(r, dtype=np.float64)

    def dual_value(self, v, y):
        return float(v @ y - 0.5 * v @ v)

    def best_dual_scale(self, v, y, s_max):
        vv = float(v @ v)
        if vv == 0.0:
            return 0.0
        return float(np.clip((v @ y) / vv, 0.0, s_max))


@dataclass(frozen=True)
class AbsoluteLoss(Loss):
    name: str = "absolute"

    def value(self, r):
        return float(np.abs(r).sum())

    def torch_value(self, r):
        return r.abs().sum()

    def cvxpy(self, r):
        import cvxpy as cp

        return cp.norm1(r)

    def dual_candidate(self, r):
        return -np.sign(np.asarray(r, dtype=np.float64))

    @property
    def dual_bound(self):
        return 1.0

    @property
    def smooth(self):
        return False

    def dual_value(self, v, y):
        if np.max(np.abs(v), initial=0.0) > 1.0 + 1e-12:
            return -np.inf
        return float(v @ y)

    def best_dual_scale(self, v, y, s_max):
        return float(s_max) if float(v @ y) > 0 else 0.0


@dataclass(frozen=True)
class HuberLoss(Loss):
    name: str = "huber"
    delta: float = 1.0

    def __post_init__(self):
        if not np.isfinite(self.delta) or self.delta <= 0:
            raise ValueError(f"Huber delta must be a finite number > 0, got {self.delta!r}")

    def value(self, r):
        a = np.abs(r)
        return float(np.where(a <= self.delta, 0.5 * a**2, self.delta * (a - 0.5 * self.delta)).sum())

    def torch_value(self, r):
        import torch

        return torch.nn.functional.huber_loss(r, torch.zeros_like(r), reduction="sum", delta=self.delta)

    def cvxpy(self, r):
        import cvxpy as cp

        return 0.5 * cp.sum(cp.huber(r, self.delta))

    def dual_candidate(self, r):
        return -np.clip(np.asarray(r, dtype=np.float64), -self.delta, self.delta)

    @property
    def dual_bound(self):
        return float(self.delta)

    def dual_value(self, v, y):
        if np.max(np.abs(v), initial=0.0) > self.delta * (1 + 1e-12):
            return -np.inf
        return float(v @ y - 0.5 * v @ v)

    def best_dual_scale(self, v, y, s_max):
        vv = float(v @ v)
        if vv == 0.0:
            return 0.0
        return float(np.clip((v @ y) / vv, 0.0, s_max))


LOSSES = {"squared": SquaredLoss, "absolute": AbsoluteLoss, "l1": AbsoluteLoss, "huber": HuberLoss}


def get_loss(loss: str | Loss, **params: float) -> Loss:
    """A Loss from a name ("squared", "absolute", "huber") or a Loss instance."""
    if isinstance(loss, Loss):
        return loss
    if not isinstance(loss, str) or loss.lower() not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of 'squared', 'absolute', 'huber' or pass a Loss")
    cls = LOSSES[loss.lower()]
    return cls(**params) if cls is HuberLoss else cls()
