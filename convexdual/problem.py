"""The convex dual program's data: :class:`DualProblem` and :func:`build_problem`."""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from convexdual._validation import as_images, as_targets, check_beta, check_kernel_size
from convexdual.engine import check_memory
from convexdual.losses import Loss, get_loss
from convexdual.patterns import SignPatterns, data_key, sample_patterns, unique_gates

if TYPE_CHECKING:
    from convexdual.engine import PatternEngine

__all__ = ["DualProblem", "build_problem", "beta_max"]

logger = logging.getLogger(__name__)


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
        memory_limit_mb: memory limit of the problem's engine and explicit paths (None: half of
            the memory available when it is first needed).
        comm: the ranks over which the images are sharded (:mod:`convexdual.distributed`,
            :func:`~convexdual.distributed.build_sharded_problem`); ``inputs``/``targets`` are then
            this rank's images, ``n``/``y`` this rank's rows, and every value of (4) (objective,
            violation, certificate) is over all ranks. None: one process.
        device: where the engine's operator passes run (the scans of the solvers that use the
            engine, the zero test and the certificate's dual bound); the exact cone projections run on
            the CPU in float64. ``cd.solve(..., device="cuda")`` sets it.

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
    memory_limit_mb: float | None = None
    comm: Any = dataclasses.field(default=None, repr=False, compare=False)
    device: Any = dataclasses.field(default="cpu", repr=False, compare=False)

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
    def engine(self) -> "PatternEngine":
        """The :class:`~convexdual.engine.PatternEngine` of this problem (masks from the gates on
        these inputs, operator, cone projections, scan, dual bound, violation)."""
        from convexdual.engine import PatternEngine

        budget = 512.0 if self.memory_limit_mb is None else max(32.0, min(512.0, self.memory_limit_mb / 4))
        return PatternEngine(self.inputs, self.kernel_size, self.patterns.gates, memory_budget_mb=budget,
                             comm=self.comm, device=self.device)

    @property
    def distributed(self) -> bool:
        """True when the images are sharded over several ranks."""
        return self.comm is not None and self.comm.world > 1

    @property
    def X(self) -> np.ndarray:
        """Patch rows ``(n, d)`` float64 (``n x d``, never ``P x n``)."""
        return self.engine.X

    def mask(self, i: int) -> np.ndarray:
        """``1[X g_i >= 0]``: the mask of pattern ``i`` on this problem's rows, ``(n,)`` bool."""
        return self.engine.mask(i)

    def masks(self, index: Any = None) -> np.ndarray:
        """Explicit masks ``(m, n)`` bool of the given patterns (all by default); refused (with the
        size) when they do not fit the memory limit. For small problems and tests."""
        return self.engine.masks(index, self.memory_limit_mb)

    @functools.cached_property
    def weight_scale(self) -> float:
        """Natural size of a group's weights, ``max|y| / max_j ||x_j||``: thresholds for
        "zero" groups are relative to it (and to the largest group)."""
        xmax = self.engine.xmax
        ymax = self.engine.comm.max(float(np.abs(self.y).max(initial=0.0)))
        return ymax / xmax if xmax > 0 else 0.0

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
        return self.engine.predict(W, Z)

    def objective(self, W: np.ndarray, Z: np.ndarray) -> float:
        """Value of (4): ``L(yhat - y) + beta sum_i (||w_i|| + ||z_i||)`` (a sum, not a mean)."""
        W, Z = self.check_weights(W, Z)
        r = self.predict(W, Z) - self.y
        reg = np.linalg.norm(W, axis=1).sum() + np.linalg.norm(Z, axis=1).sum()
        return float(self.engine.reduce(self.loss.value(r)) + self.beta * reg)

    def cone_violation(self, W: np.ndarray, Z: np.ndarray, rel_tol: float = 1e-6) -> float:
        """Largest relative violation of ``(2 D_i - I) X w_i >= 0`` (and z_i), scale-free
        (:meth:`convexdual.engine.PatternEngine.cone_violation`)."""
        W, Z = self.check_weights(W, Z)
        return self.engine.cone_violation(W, Z, rel_tol=rel_tol, scale=self.weight_scale)

    def __repr__(self) -> str:
        N, C, H, W = self.inputs.shape
        return (f"DualProblem(N={N}, C={C}, H={H}, W={W}, k={self.kernel_size}, n={self.n:,}, d={self.d}, "
                f"P={self.P}, beta={self.beta:.6g}, loss={self.loss.name!r}, residual={self.residual}, "
                f"patterns={self.patterns.source!r}{', exact' if self.exact else ''})")

    def describe(self) -> dict[str, Any]:
        return {
            "N": self.num_images, "C": self.in_channels, "H": self.image_shape[0], "W": self.image_shape[1],
            "kernel_size": self.kernel_size, "n": self.n, "d": self.d, "P": self.P,
            "beta": self.beta, "loss": self.loss.name, "residual": self.residual,
            "exact_patterns": self.exact, "pattern_source": self.patterns.source,
            **({"N": self.engine.num_images_total, "n": self.engine.n_total, "ranks": self.comm.world,
                "rank_N": self.num_images, "rank_n": self.n} if self.distributed else {}),
        }


def beta_max(noisy, clean, kernel_size: int, patterns: SignPatterns, residual: bool = False,
             residual_channel: int = 0) -> float:
    """``max_i ||X^T D_i y||``: the gated bound above which the squared-loss solution of (4) is
    zero (docs/math.md §6). A common choice of beta is a small fraction of it. One streaming pass
    of the pattern operator (no ``P x n`` masks)."""
    from convexdual.engine import PatternEngine

    x = as_images(noisy)
    y = as_targets(clean, x)
    k = check_kernel_size(kernel_size, x.shape[2], x.shape[3])
    if not isinstance(patterns, SignPatterns):
        raise TypeError(f"patterns must be a SignPatterns, got {type(patterns).__name__}")
    if patterns.gates.shape[1] != x.shape[1] * k * k:
        raise ValueError(f"the patterns have d = {patterns.gates.shape[1]} but C*k*k = {x.shape[1] * k * k}")
    if residual:
        y = y - x[:, int(residual_channel)]
    G = PatternEngine(x, k, patterns.gates).adjoint(y.reshape(-1))
    return float(np.sqrt((G * G).sum(axis=1)).max())


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
    memory_limit_mb: float | None = None,
    progress: bool = False,
) -> DualProblem:
    """Validate the data and build program (4)'s data (nothing is solved).

    Args:
        noisy: inputs ``(N, H, W)`` or ``(N, C, H, W)``, numpy or torch.
        clean: targets ``(N, H, W)`` or ``(N, 1, H, W)``.
        kernel_size: odd k, at most the image size.
        beta: weight decay of (2), > 0.
        num_patterns: Gaussian gates to sample when ``patterns`` is not given.
        seed: seed of the gate sampling.
        patterns: a ready :class:`SignPatterns` (e.g. ``enumerate_patterns``). Its masks are
            always recomputed from its gates on these inputs; gates that give the same pattern
            here are merged. An exact (enumerated) set is accepted only for the data it enumerated.
        loss: "squared" (default), "absolute", "huber", or a Loss.
        huber_delta: the Huber threshold.
        residual: learn the residual ``clean - noisy[:, residual_channel]`` (skip net).
        residual_channel: which input channel the skip connection carries.
        memory_limit_mb: refuse, before allocating, a problem whose data, patch rows and gates
            do not fit (None: half of the available memory).
        progress: tqdm bars while sampling / deduplicating patterns.

    Raises:
        MemoryBudgetError: the problem does not fit ``memory_limit_mb`` (with the size it needs).
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
    if memory_limit_mb is not None and not (float(memory_limit_mb) > 0):
        raise ValueError(f"memory_limit_mb must be > 0 (MB) or None, got {memory_limit_mb!r}")
    N, C, H, W = x.shape
    n, d = N * H * W, C * k * k
    P_est = int(num_patterns) if patterns is None and isinstance(num_patterns, (int, np.integer)) else (
        len(patterns) if isinstance(patterns, SignPatterns) else 0)
    # inputs, targets, patch rows X (and one temporary copy), gates: what the problem itself holds
    check_memory(8.0 * (x.size + y.size + 2 * n * d + 2 * P_est * d), memory_limit_mb,
                 f"the problem (n = {n:,} patch rows, d = {d}, P = {P_est:,})",
                 "use fewer or smaller images or fewer patterns, a machine with more memory, or more processes")
    key = data_key(x, k)
    if patterns is None:
        patterns = sample_patterns(x, k, num_patterns, seed=seed, memory_limit_mb=memory_limit_mb,
                                   progress=progress)
    else:
        if not isinstance(patterns, SignPatterns):
            raise TypeError(f"patterns must be a SignPatterns, got {type(patterns).__name__}")
        if patterns.gates.shape[1] != d:
            raise ValueError(
                f"patterns have gates of dimension d = {patterns.gates.shape[1]}, but the data has "
                f"d = C*k*k = {d}; compute the patterns on these inputs with this kernel size")
        if patterns.exact and patterns.data_key != key:
            raise ValueError(
                "these patterns were enumerated on other images (or another kernel size): an enumeration is "
                "exact only for the data it enumerated. Enumerate on these inputs "
                "(cd.enumerate_patterns(noisy, k)) or sample patterns")
        if patterns.data_key != key or patterns.info.get("deduplicated") is False:
            keep = unique_gates(x, k, patterns.gates, progress=progress)
            if len(keep) < len(patterns) or patterns.data_key != key:
                logger.info("patterns: %d gates give %d distinct patterns on these inputs", len(patterns), len(keep))
            patterns = SignPatterns(gates=patterns.gates[keep], exact=patterns.exact, data_key=key,
                                    num_requested=patterns.num_requested or len(patterns),
                                    source=patterns.source, info={**patterns.info, "deduplicated": True})
    return DualProblem(inputs=x, targets=y, kernel_size=k, beta=b, patterns=patterns, loss=lo,
                       residual=bool(residual), residual_channel=int(residual_channel),
                       memory_limit_mb=None if memory_limit_mb is None else float(memory_limit_mb))
