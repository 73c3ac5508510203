"""The convex dual program's data: :class:`DualProblem` and :func:`build_problem`."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from convexdual._validation import as_images, as_targets, check_beta, check_kernel_size
from convexdual.losses import Loss, get_loss
from convexdual.patches import patch_matrix
from convexdual.patterns import SignPatterns, sample_patterns

__all__ = ["DualProblem", "build_problem", "beta_max"]


@dataclass(frozen=True, eq=False)
class DualProblem:
    """Program (4) for one data set, validated.

    Attributes:
        inputs: noisy images ``(N, C, H, W)`` float64.
        targets: clean images ``(N, H, W)`` float64.
        kernel_size: odd ``k``; zero padding ``k // 2``, stride 1.
        beta: weight decay of (2) (> 0).
        patterns: the sign patterns ``D_i`` (sampled or enumerated).
        loss: a convex :class:`~convexdual.losses.Loss`.
        residual: if True the network is ``f(x) = x[:, residual_channel] + sum_j ...``
            (Corollary 1.1) and the program regresses on ``targets - skip``.
        residual_channel: the input channel that holds the image for the skip.

    Shapes:
        ``n = N*H*W`` patch rows, ``d = C*k*k`` columns, ``P`` patterns; dual
        weights ``W, Z`` are ``(P, d)``.
    """

    inputs: np.ndarray
    targets: np.ndarray
    kernel_size: int
    beta: float
    patterns: SignPatterns
    loss: Loss
    residual: bool = False
    residual_channel: int = 0

    # ---- sizes ------------------------------------------------------------
    @property
    def num_images(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.inputs.shape[1])

    @property
    def image_shape(self) -> tuple[int, int]:
        return (int(self.inputs.shape[2]), int(self.inputs.shape[3]))

    @property
    def n(self) -> int:
        return int(self.inputs.shape[0] * self.inputs.shape[2] * self.inputs.shape[3])

    @property
    def d(self) -> int:
        return int(self.inputs.shape[1] * self.kernel_size**2)

    @property
    def P(self) -> int:
        return self.patterns.num_patterns

    @property
    def exact(self) -> bool:
        """True when the patterns are every cell: (4) is then the exact problem (2)."""
        return bool(self.patterns.exact)

    # ---- data the programs use ------------------------------------------------
    @property
    def skip(self) -> np.ndarray:
        """What the skip connection adds, ``(N, H, W)`` (zeros without residual)."""
        if self.residual:
            return self.inputs[:, self.residual_channel]
        return np.zeros_like(self.targets)

    @functools.cached_property
    def y(self) -> np.ndarray:
        """The regression target of (4), ``(n,)``: ``targets - skip``."""
        return (self.targets - self.skip).reshape(-1)

    @functools.cached_property
    def X(self) -> np.ndarray:
        """Explicit patch matrix ``(n, d)``; only for problems that fit in memory."""
        return patch_matrix(self.inputs, self.kernel_size)

    @functools.cached_property
    def weight_scale(self) -> float:
        """Natural size of a group's weights, ``max|y| / max_j ||x_j||``: thresholds for
        "zero" groups are relative to it (and to the largest group)."""
        xmax = float(np.linalg.norm(self.X, axis=1).max()) if self.n * self.d <= 50_000_000 else float(
            np.sqrt((self.inputs**2).sum(axis=1).max() * self.kernel_size**2))
        return float(np.abs(self.y).max()) / xmax if xmax > 0 else 0.0

    @functools.cached_property
    def row_masks(self) -> np.ndarray:
        """``(P, n)`` float64 0/1 masks."""
        return self.patterns.row_masks().astype(np.float64)

    # ---- the program's functions --------------------------------------------
    def check_weights(self, W: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        W = np.asarray(W, dtype=np.float64)
        Z = np.asarray(Z, dtype=np.float64)
        if W.shape != (self.P, self.d) or Z.shape != (self.P, self.d):
            raise ValueError(
                f"dual weights must both have shape (P, d) = {(self.P, self.d)}; got {W.shape} and {Z.shape}"
            )
        return W, Z

    def predict(self, W: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """``sum_i D_i X (w_i - z_i)``, length n (without the skip)."""
        W, Z = self.check_weights(W, Z)
        XW = self.X @ (W - Z).T  # (n, P)
        return np.einsum("pn,np->n", self.row_masks, XW)

    def objective(self, W: np.ndarray, Z: np.ndarray) -> float:
        """Value of (4): ``L(yhat - y) + beta sum_i (||w_i|| + ||z_i||)`` (a sum, not a mean)."""
        W, Z = self.check_weights(W, Z)
        r = self.predict(W, Z) - self.y
        reg = np.linalg.norm(W, axis=1).sum() + np.linalg.norm(Z, axis=1).sum()
        return float(self.loss.value(r) + self.beta * reg)

    def cone_violation(self, W: np.ndarray, Z: np.ndarray, rel_tol: float = 1e-6) -> float:
        """Largest relative violation of ``(2 D_i - I) X w_i >= 0`` (and z_i).

        ``max_i max_rows relu(-(2D_i - I) X w_i) / (max_j ||x_j|| * s)`` over the groups that
        become neurons (``||w_i|| > rel_tol * s``, the threshold of
        :func:`~convexdual.recover.active_groups`), with ``s = max(max_j ||w_j||, weight_scale)``
        the size of the solution. The numerator is how far a recovered neuron's ReLU departs
        from its pattern on a row; the denominator is the size of the largest group's
        contribution there, so 0 means feasible and the number is scale-free. Groups below the
        threshold are dropped by the recovery; their effect shows in the certificate's
        recovery error.
        """
        W, Z = self.check_weights(W, Z)
        S = 2.0 * self.row_masks - 1.0  # (P, n)
        xmax = float(np.linalg.norm(self.X, axis=1).max()) or 1.0
        top = max(np.linalg.norm(W, axis=1).max(initial=0.0), np.linalg.norm(Z, axis=1).max(initial=0.0),
                  self.weight_scale)
        if top == 0.0:
            return 0.0
        worst = 0.0
        for V in (W, Z):
            nz = np.linalg.norm(V, axis=1) > rel_tol * top
            if not nz.any():
                continue
            XV = (self.X @ V[nz].T).T  # (p, n)
            worst = max(worst, float(np.maximum(-(S[nz] * XV), 0.0).max()) / (xmax * top))
        return worst

    def describe(self) -> dict[str, Any]:
        return {
            "N": self.num_images, "C": self.in_channels, "H": self.image_shape[0], "W": self.image_shape[1],
            "kernel_size": self.kernel_size, "n": self.n, "d": self.d, "P": self.P,
            "beta": self.beta, "loss": self.loss.name, "residual": self.residual,
            "exact_patterns": self.exact, "pattern_source": self.patterns.source,
        }


def beta_max(noisy, clean, kernel_size: int, patterns: SignPatterns, residual: bool = False,
             residual_channel: int = 0) -> float:
    """``max_i ||X^T D_i y||``: the gated bound above which the squared-loss
    solution of (4) is zero (MATH.md §6). A common choice is a small fraction of it."""
    x = as_images(noisy)
    y = as_targets(clean, x)
    if residual:
        y = y - x[:, residual_channel]
    X = patch_matrix(x, kernel_size)
    G = patterns.row_masks().astype(np.float64) @ (X * y.reshape(-1, 1))  # (P, d)
    return float(np.linalg.norm(G, axis=1).max())


def build_problem(
    noisy: Any,
    clean: Any,
    kernel_size: int = 3,
    beta: float = 1.0,
    *,
    num_patterns: int = 100,
    seed: int | np.random.Generator | None = 0,
    patterns: SignPatterns | None = None,
    loss: str | Loss = "squared",
    huber_delta: float = 1.0,
    residual: bool = False,
    residual_channel: int = 0,
) -> DualProblem:
    """Validate the data and build program (4)'s data (nothing is solved).

    Args:
        noisy: inputs ``(N, H, W)`` or ``(N, C, H, W)``, numpy or torch.
        clean: targets ``(N, H, W)`` or ``(N, 1, H, W)``.
        kernel_size: odd k, at most the image size.
        beta: weight decay of (2), > 0.
        num_patterns: Gaussian gates to sample when ``patterns`` is not given.
        seed: seed of the gate sampling.
        patterns: a ready :class:`SignPatterns` (e.g. ``enumerate_patterns``);
            it must have been computed on these same inputs.
        loss: "squared" (default), "absolute", "huber", or a Loss.
        huber_delta: the Huber threshold.
        residual: learn the residual ``clean - noisy[:, residual_channel]`` (skip net).
        residual_channel: which input channel the skip connection carries.

    Raises:
        ValueError / TypeError: with what was wrong and what is allowed.
    """
    x = as_images(noisy, "noisy")
    y = as_targets(clean, x, "clean")
    k = check_kernel_size(kernel_size, x.shape[2], x.shape[3])
    b = check_beta(beta)
    lo = get_loss(loss, delta=huber_delta) if (isinstance(loss, str) and loss.lower() == "huber") else get_loss(loss)
    if not isinstance(residual, (bool, np.bool_)):
        raise TypeError(f"residual must be True or False, got {residual!r}")
    if residual and not (0 <= int(residual_channel) < x.shape[1]):
        raise ValueError(
            f"residual_channel must index an input channel (0..{x.shape[1] - 1}); got {residual_channel}"
        )
    if patterns is None:
        patterns = sample_patterns(x, k, num_patterns, seed=seed)
    else:
        if not isinstance(patterns, SignPatterns):
            raise TypeError(f"patterns must be a SignPatterns, got {type(patterns).__name__}")
        N, _, H, W = x.shape
        if patterns.masks.shape[1:] != (N, H, W) or patterns.gates.shape[1] != x.shape[1] * k * k:
            raise ValueError(
                f"patterns were computed for masks {patterns.masks.shape[1:]} and d = {patterns.gates.shape[1]}, "
                f"but the data has (N, H, W) = {(N, H, W)} and d = C*k*k = {x.shape[1] * k * k}; "
                "compute the patterns on these inputs with this kernel size"
            )
    return DualProblem(inputs=x, targets=y, kernel_size=k, beta=b, patterns=patterns, loss=lo,
                       residual=bool(residual), residual_channel=int(residual_channel))
