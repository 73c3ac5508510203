"""Recover the primal network from dual weights (docs/math.md §5, eq. 5)."""

from __future__ import annotations

import numpy as np
import torch

from convexdual.nets import TwoLayerConvNet
from convexdual.problem import DualProblem

__all__ = ["recover_filters", "recover_network", "active_groups"]


def active_groups(W: np.ndarray, Z: np.ndarray, rel_tol: float = 1e-6,
                  scale: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the nonzero groups: ``||w_i|| > rel_tol * max(max_j ||.||, scale)``.

    Interior-point solutions carry tiny nonzeros (~1e-10) on inactive groups;
    this threshold is explicit so the neuron count is honest and reproducible.
    ``scale`` is the data's natural weight size (``DualProblem.weight_scale``), so an
    all-zero solution is not mistaken for a net of tiny neurons.
    """
    nw = np.linalg.norm(W, axis=1)
    nz = np.linalg.norm(Z, axis=1)
    thr = rel_tol * max(nw.max(initial=0.0), nz.max(initial=0.0), float(scale))
    if thr == 0.0:
        return nw > 0, nz > 0
    return nw > thr, nz > thr


def recover_filters(W: np.ndarray, Z: np.ndarray, rel_tol: float = 1e-6,
                    scale: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eq. (5): ``u = w/sqrt(||w||), v = +sqrt(||w||)`` and ``u = z/sqrt(||z||), v = -sqrt(||z||)``.

    Returns:
        ``U (m, d)``, ``v (m,)`` and ``groups (m,)``: the index of the group each
        neuron came from (``i`` for ``w_i``, ``P + i`` for ``z_i``).
    """
    W = np.asarray(W, dtype=np.float64)
    Z = np.asarray(Z, dtype=np.float64)
    aw, az = active_groups(W, Z, rel_tol, scale)
    nw = np.linalg.norm(W[aw], axis=1)
    nz = np.linalg.norm(Z[az], axis=1)
    U = np.concatenate([W[aw] / np.sqrt(nw)[:, None], Z[az] / np.sqrt(nz)[:, None]])
    v = np.concatenate([np.sqrt(nw), -np.sqrt(nz)])
    groups = np.concatenate([np.flatnonzero(aw), len(W) + np.flatnonzero(az)])
    return U, v, groups


def recover_network(problem: DualProblem, W: np.ndarray, Z: np.ndarray, *, rel_tol: float = 1e-6,
                    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> TwoLayerConvNet:
    """The torch CNN of eq. (1) with the recovered filters; on ``device``."""
    W, Z = problem.check_weights(W, Z)
    U, v, _ = recover_filters(W, Z, rel_tol, problem.weight_scale)
    return TwoLayerConvNet.from_filters(U, v, problem.in_channels, problem.kernel_size,
                                        residual=problem.residual, residual_channel=problem.residual_channel,
                                        dtype=dtype, device=device)
