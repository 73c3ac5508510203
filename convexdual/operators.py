"""The pattern operator ``V -> sum_i D_i X v_i`` and its adjoint, at any scale.

``D_i = diag(1[X g_i >= 0])`` is given by its *gate* ``g_i``; ``X`` is the patch
matrix of docs/math.md §2. :class:`PatternOperator` never forms ``X`` for all images
nor the ``P x n`` masks at once: it walks over batches of images, forms that
batch's patch rows (``unfold``), recomputes the batch's masks from the gates (or
reads them from a cache when the whole cache fits the memory budget) and reduces.

Two backends, chosen automatically (``backend="auto"``) and giving the same numbers:

* ``"numba"`` (CPU, when numba is installed): fused kernels from
  :mod:`convexdual._fused_kernels`; the ``b x P`` intermediates never reach main
  memory. Used for large problems on CPU.
* ``"torch"`` (any device, e.g. CUDA): batched matmuls, batch size from the memory
  budget; masks cached as dense 0/1 matrices when they fit the budget.

Shapes:
    ``n = N*H*W`` rows in (N, H, W) order (the order of ``DualProblem.y``),
    ``d = C*k*k``, weights ``V (P, d)``, row vectors ``(n,)``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convexdual._fused_kernels import build_kernels, numba_available
from convexdual.patches import patch_matrix

__all__ = ["PatternOperator", "unfold_patches"]

logger = logging.getLogger(__name__)

_BACKENDS = ("auto", "torch", "numba")


def unfold_patches(images: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Patch rows of a batch of images, like :func:`convexdual.patches.patch_matrix`.

    Shapes:
        images ``(b, C, H, W)`` -> ``(b*H*W, C*k*k)``.
    """
    k = int(kernel_size)
    b, C, H, W = images.shape
    cols = F.unfold(images, k, padding=k // 2)  # (b, C*k*k, H*W)
    return cols.transpose(1, 2).reshape(b * H * W, C * k * k)


def _pad_rows(a: np.ndarray, npdt: Any) -> np.ndarray:
    """``a`` in ``npdt``, C-contiguous, with zero rows appended up to a multiple of 4 (the numba
    kernels' register block; a zero row adds nothing to any of their sums)."""
    pad = (-a.shape[0]) % 4
    a = a.astype(npdt, copy=False)
    if pad:
        a = np.concatenate([a, np.zeros((pad,) + a.shape[1:], npdt)])
    return np.ascontiguousarray(a)


class PatternOperator:
    """``A V = sum_i D_i X v_i`` and ``A^T r = (X^T D_i r)_i`` without the patch matrix.

    Args:
        inputs: images ``(N, C, H, W)`` (numpy or torch).
        kernel_size: odd ``k``.
        gates: ``(P, d)`` gate vectors; ``D_i = diag(1[X g_i >= 0])``.
        device: where the torch backend computes ("cpu", "cuda", torch.device).
        dtype: torch.float32 or torch.float64 (all computation in this dtype;
            the masks are always computed from the gates in this dtype).
        memory_budget_mb: bound on the operator's working memory (image batches,
            mask cache). Masks are cached only when they fit in half of it.
        backend: "auto", "torch" or "numba" (CPU only).
        num_threads: threads of the numba kernels (None: numba's default).

    Raises:
        ValueError: bad shapes, dtype, backend or budget.
    """

    def __init__(self, inputs: Any, kernel_size: int, gates: Any, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float64, memory_budget_mb: float = 512.0, backend: str = "auto",
                 num_threads: int | None = None) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        if not (memory_budget_mb > 0):
            raise ValueError(f"memory_budget_mb must be > 0, got {memory_budget_mb}")
        self.device = torch.device(device)
        self.dtype = dtype
        x = torch.as_tensor(np.asarray(inputs) if not torch.is_tensor(inputs) else inputs)
        if x.ndim != 4:
            raise ValueError(f"inputs must be (N, C, H, W); got shape {tuple(x.shape)}")
        self.kernel_size = int(kernel_size)
        self.images = x.to(device=self.device, dtype=dtype).contiguous()
        N, C, H, W = self.images.shape
        self.N, self.C, self.H, self.W = int(N), int(C), int(H), int(W)
        self.d = self.C * self.kernel_size**2
        g = torch.as_tensor(np.asarray(gates) if not torch.is_tensor(gates) else gates)
        if g.ndim != 2 or g.shape[1] != self.d:
            raise ValueError(f"gates must be (P, d) with d = C*k*k = {self.d}; got shape {tuple(g.shape)}")
        self.gates = g.to(device=self.device, dtype=dtype).contiguous()
        self.P = int(self.gates.shape[0])
        self.n = self.N * self.H * self.W
        self.memory_budget = float(memory_budget_mb) * 2**20
        if backend == "numba" and self.device.type != "cpu":
            raise ValueError("backend='numba' runs on CPU only; use backend='torch' (or 'auto') on CUDA")
        if backend == "numba" and not numba_available():
            raise ValueError("backend='numba' needs numba (pip install numba); or use backend='torch'")
        if backend == "auto":
            big = self.n * self.P >= 5_000_000
            backend = "numba" if (self.device.type == "cpu" and big and numba_available()) else "torch"
        self.backend = backend
        self.num_threads = num_threads
        # torch backend: image batch size so that ~4 (b*H*W, P) intermediates fit the budget
        per_image = self.H * self.W * max(self.P, self.d) * self.itemsize * 4
        self.batch_images = int(max(1, min(self.N, self.memory_budget // max(per_image, 1))))
        mask_bytes = self.n * self.P * self.itemsize
        self._cache_masks = backend == "torch" and mask_bytes <= self.memory_budget / 2
        self._mask_cache: list[torch.Tensor] | None = None
        self._kernels: dict[str, Any] | None = None
        self._cache_patches = self.n * self.d * self.itemsize <= self.memory_budget / 4
        self._patch_cache: dict[tuple[int, int], torch.Tensor] = {}
        logger.debug("PatternOperator n=%d P=%d d=%d backend=%s batch=%d cache=%s", self.n, self.P, self.d,
                     self.backend, self.batch_images, self._cache_masks)

    @classmethod
    def from_problem(cls, problem: Any, **kwargs: Any) -> "PatternOperator":
        """The operator of a :class:`~convexdual.problem.DualProblem` (its inputs, k and gates)."""
        return cls(problem.inputs, problem.kernel_size, problem.patterns.gates, **kwargs)

    @property
    def itemsize(self) -> int:
        return 4 if self.dtype == torch.float32 else 8

    # ------------------------------------------------------------------ batches
    def batches(self) -> list[tuple[int, int]]:
        """Image batches ``(first, stop)``; row range is ``first*H*W : stop*H*W``."""
        b = self.batch_images
        return [(s, min(self.N, s + b)) for s in range(0, self.N, b)]

    def patches(self, first: int, stop: int) -> torch.Tensor:
        """Patch rows of images ``first:stop``, ``((stop-first)*H*W, d)``.

        Cached per batch when all patch rows fit in a quarter of the memory budget.
        """
        key = (first, stop)
        if key in self._patch_cache:
            return self._patch_cache[key]
        if self.device.type == "cpu":  # numpy's strided windows beat im2col on CPU
            Xb = torch.from_numpy(patch_matrix(self.images[first:stop].numpy(), self.kernel_size))
        else:
            Xb = unfold_patches(self.images[first:stop], self.kernel_size)
        if self._cache_patches:
            self._patch_cache[key] = Xb
        return Xb

    def batch_masks(self, index: int, Xb: torch.Tensor, gates: torch.Tensor | None = None) -> torch.Tensor:
        """0/1 masks ``(rows, P)`` of batch ``index`` (cached when allowed) or for the given gates."""
        if gates is not None:
            return (Xb @ gates.T >= 0).to(self.dtype)
        if self._cache_masks:
            if self._mask_cache is None:
                self._mask_cache = [None] * len(self.batches())  # type: ignore[list-item]
            m = self._mask_cache[index]
            if m is None:
                m = (Xb @ self.gates.T >= 0).to(self.dtype)
                self._mask_cache[index] = m
            return m
        return (Xb @ self.gates.T >= 0).to(self.dtype)

    def _vec(self, v: Any, shape: tuple[int, ...], name: str) -> torch.Tensor:
        t = torch.as_tensor(v, device=self.device, dtype=self.dtype)
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}; got {tuple(t.shape)}")
        return t

    # ------------------------------------------------------------------ operator
    def forward(self, V: Any) -> torch.Tensor:
        """``sum_i D_i X v_i`` for ``V (P, d)``; returns ``(n,)``."""
        V = self._vec(V, (self.P, self.d), "V")
        if self.backend == "numba":
            return self._numba("forward", V)[0]
        out = torch.empty(self.n, device=self.device, dtype=self.dtype)
        hw = self.H * self.W
        for bi, (s, e) in enumerate(self.batches()):
            Xb = self.patches(s, e)
            Mb = self.batch_masks(bi, Xb)
            out[s * hw:e * hw] = ((Xb @ V.T) * Mb).sum(1)
        return out

    def adjoint(self, r: Any) -> torch.Tensor:
        """``(X^T D_i r)_i`` for ``r (n,)``; returns ``(P, d)``."""
        r = self._vec(r, (self.n,), "r")
        if self.backend == "numba":
            return self._numba("adjoint", None, r=r)[1]
        acc = torch.zeros(self.P, self.d, device=self.device, dtype=self.dtype)
        hw = self.H * self.W
        for bi, (s, e) in enumerate(self.batches()):
            Xb = self.patches(s, e)
            Mb = self.batch_masks(bi, Xb)
            acc.addmm_(Mb.T, Xb * r[s * hw:e * hw, None])
        return acc

    def gradient_sq(self, V: Any, y: Any, weight: Any | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One fused pass: ``yhat = A V`` and ``A^T ((yhat - y) * weight)``.

        Returns:
            ``(yhat (n,), grad (P, d))``: the squared loss ``1/2||yhat - y||^2`` has
            gradient ``grad`` when ``weight`` is None (all ones).
        """
        V = self._vec(V, (self.P, self.d), "V")
        y = self._vec(y, (self.n,), "y")
        w = None if weight is None else self._vec(weight, (self.n,), "weight")
        if self.backend == "numba":
            return self._numba("fused_sq", V, y=y, w=w)
        yhat = torch.empty(self.n, device=self.device, dtype=self.dtype)
        acc = torch.zeros(self.P, self.d, device=self.device, dtype=self.dtype)
        hw = self.H * self.W
        for bi, (s, e) in enumerate(self.batches()):
            Xb = self.patches(s, e)
            Mb = self.batch_masks(bi, Xb)
            yb = ((Xb @ V.T) * Mb).sum(1)
            yhat[s * hw:e * hw] = yb
            rb = yb - y[s * hw:e * hw]
            if w is not None:
                rb = rb * w[s * hw:e * hw]
            acc.addmm_(Mb.T, Xb * rb[:, None])
        return yhat, acc

    def hinge_gradient(self, W: Any, Z: Any, y: Any, hinge: float, images: Any
                       ) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
        """The minibatch gradient of the paper's hinge-penalised (4), in one pass over the rows.

        On the patch rows of ``images`` (image indices), with ``V = W - Z`` and the cone
        residuals ``a_i = (2 D_i - I) X w_i``, ``b_i = (2 D_i - I) X z_i``, the function

            1/2 ||sum_i D_i X v_i - y||^2 + hinge * sum_i sum_rows (relu(-a_i) + relu(-b_i))

        is differentiated in ``W`` and ``Z`` without autograd and without keeping a
        ``rows x P`` matrix (numba: fused per row block; torch: image chunks within the budget).

        Args:
            W, Z: ``(P, d)`` weights.
            y: ``(n,)`` targets of all rows (the rows of ``images`` are read).
            hinge: weight of the penalty (>= 0).
            images: indices of the images of the minibatch.

        Returns:
            ``(yhat, penalty, grad_W, grad_Z)``: the model on those rows (in the order of
            ``images``), the value of the hinge term, and the two ``(P, d)`` gradients.
        """
        W = self._vec(W, (self.P, self.d), "W").detach()  # values only: the gradient is computed here
        Z = self._vec(Z, (self.P, self.d), "Z").detach()
        y = self._vec(y, (self.n,), "y")
        idx = [int(i) for i in np.asarray(images, dtype=np.int64).reshape(-1)]
        if not idx or min(idx) < 0 or max(idx) >= self.N:
            raise ValueError(f"images must be a nonempty list of indices in [0, {self.N}); got {len(idx)} "
                             f"indices in [{min(idx, default=0)}, {max(idx, default=0)}]")
        if not (float(hinge) >= 0):
            raise ValueError(f"hinge must be >= 0, got {hinge}")
        hw = self.H * self.W
        Xb = torch.cat([self.patches(i, i + 1) for i in idx])
        yb = torch.cat([y[i * hw:(i + 1) * hw] for i in idx])
        if self.backend == "numba":
            return self._numba_hinge(Xb, yb, W, Z, float(hinge))
        yhat = torch.empty(len(yb), device=self.device, dtype=self.dtype)
        gW = torch.zeros(self.P, self.d, device=self.device, dtype=self.dtype)
        gZ = torch.zeros_like(gW)
        penalty = torch.zeros((), device=self.device, dtype=self.dtype)
        rows = max(hw, int(self.memory_budget // max(1, self.P * self.itemsize * 6)))
        for s in range(0, len(yb), rows):
            X = Xb[s:s + rows]
            M = (X @ self.gates.T >= 0).to(self.dtype)
            S = 2 * M - 1
            XW, XZ = X @ W.T, X @ Z.T
            yh = ((XW - XZ) * M).sum(1)
            yhat[s:s + rows] = yh
            MR = M * (yh - yb[s:s + rows])[:, None]
            AW, AZ = S * XW, S * XZ
            penalty += hinge * (torch.relu(-AW).sum() + torch.relu(-AZ).sum())
            gW.addmm_((MR - hinge * S * (AW < 0)).T, X)
            gZ.addmm_((-MR - hinge * S * (AZ < 0)).T, X)
        return yhat, float(penalty), gW, gZ

    def cone_violations(self, W: Any, Z: Any) -> torch.Tensor:
        """Per group the largest violation of its cone over every row, in one pass.

        Returns:
            ``(P, 2)``: column 0 is ``max_j relu(-((2 D_i - I) X w_i)_j)``, column 1 the same
            for ``Z`` (0 for a group inside its cone).
        """
        W = self._vec(W, (self.P, self.d), "W")
        Z = self._vec(Z, (self.P, self.d), "Z")
        if self.backend == "numba":
            kernels, T, npdt = self._numba_setup()
            out = np.zeros((T, 2, self.P), npdt)
            cols = [np.ascontiguousarray(A.cpu().numpy().T, dtype=npdt) for A in (self.gates, W, Z)]
            for _, Xb, _, _ in self._padded_blocks(npdt):
                kernels["violation"](Xb, *cols, out)
            return torch.from_numpy(out.max(0).T.copy()).to(self.device)
        out = torch.zeros(self.P, 2, device=self.device, dtype=self.dtype)
        rows = max(self.H * self.W, int(self.memory_budget // max(1, self.P * self.itemsize * 4)))
        for s, e in self.batches():
            Xb = self.patches(s, e)
            for c in range(0, Xb.shape[0], rows):
                X = Xb[c:c + rows]
                S = torch.where(X @ self.gates.T >= 0, 1.0, -1.0).to(self.dtype)
                for k, V in enumerate((W, Z)):
                    out[:, k] = torch.maximum(out[:, k], (-S * (X @ V.T)).amax(0))
        return out

    # ------------------------------------------------------------------ groups
    def group_values(self, gate_index: Any, V: Any) -> torch.Tensor:
        """``(D_i X v, sign rows)`` helper: ``(2 D_i - I) X v`` for chosen groups.

        Args:
            gate_index: ``(m,)`` pattern index of each group.
            V: ``(m, d)`` weights of those groups.

        Returns:
            ``(n, m)``: column ``g`` is ``(2 D_{i_g} - I) X v_g``; nonnegative iff the
            group satisfies its cone constraint.
        """
        idx = torch.as_tensor(gate_index, device=self.device, dtype=torch.long)
        V = torch.as_tensor(V, device=self.device, dtype=self.dtype).reshape(len(idx), self.d)
        G = self.gates[idx]
        out = torch.empty(self.n, len(idx), device=self.device, dtype=self.dtype)
        hw = self.H * self.W
        for s, e in self.batches():
            Xb = self.patches(s, e)
            S = torch.where(Xb @ G.T >= 0, 1.0, -1.0).to(self.dtype)
            out[s * hw:e * hw] = S * (Xb @ V.T)
        return out

    def max_row_norm(self) -> float:
        """``max_j ||x_j||`` over patch rows (the scale of relative cone violations)."""
        best = 0.0
        for s, e in self.batches():
            best = max(best, float(self.patches(s, e).norm(dim=1).max()))
        return best

    # ------------------------------------------------------------------ numba path
    def _numba_setup(self) -> tuple[dict[str, Any], int, Any]:
        """``(kernels, threads, numpy dtype)`` of the numba path (kernels compiled or loaded once)."""
        import numba

        if self._kernels is None:
            self._kernels = build_kernels(self.d, 4)
        if self.num_threads is not None:
            numba.set_num_threads(int(self.num_threads))
        return self._kernels, numba.get_num_threads(), (np.float32 if self.dtype == torch.float32 else np.float64)

    def _numba(self, kind: str, V: torch.Tensor | None, *, r: torch.Tensor | None = None,
               y: torch.Tensor | None = None, w: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        kernels, T, npdt = self._numba_setup()
        GT = np.ascontiguousarray(self.gates.cpu().numpy().T, dtype=npdt)
        VT = None if V is None else np.ascontiguousarray(V.cpu().numpy().T, dtype=npdt)
        out = np.zeros((T, self.d, self.P), dtype=npdt)
        yhat = np.zeros(self.n, dtype=npdt)
        hw = self.H * self.W
        rn = None if r is None else r.cpu().numpy()
        yn = None if y is None else y.cpu().numpy()
        wn = None if w is None else w.cpu().numpy()
        for sl, Xb, m, pad in self._padded_blocks(npdt):

            def padv(v: np.ndarray | None) -> np.ndarray:
                v = np.zeros(m, npdt) if v is None else v[sl].astype(npdt, copy=False)
                return np.ascontiguousarray(np.concatenate([v, np.zeros(pad, npdt)]) if pad else v)

            yb = np.empty(m + pad, dtype=npdt)
            if kind == "forward":
                kernels["forward"](Xb, GT, VT, out, yb)
            elif kind == "adjoint":
                kernels["adjoint"](Xb, GT, padv(rn), out)
            else:
                wb = padv(wn) if wn is not None else np.ones(m + pad, npdt)
                if pad:
                    wb[m:] = 0
                kernels["fused_sq"](Xb, GT, VT, padv(yn), wb, out, yb)
            yhat[sl] = yb[:m]
        grad = torch.from_numpy(out.sum(0).T.copy()).to(self.device)
        return torch.from_numpy(yhat).to(self.device), grad

    def _padded_blocks(self, npdt: Any) -> Any:
        """Image batches for the numba kernels, bounded by the budget for the patch rows:
        ``(row slice, X block padded with zero rows to a multiple of 4, rows, padding)``."""
        hw = self.H * self.W
        b = int(max(1, min(self.N, self.memory_budget // max(1, hw * self.d * self.itemsize * 4))))
        for s in range(0, self.N, b):
            e = min(self.N, s + b)
            Xb = self.patches(s, e).cpu().numpy()
            yield slice(s * hw, e * hw), _pad_rows(Xb, npdt), Xb.shape[0], (-Xb.shape[0]) % 4

    def _numba_hinge(self, Xb: torch.Tensor, yb: torch.Tensor, W: torch.Tensor, Z: torch.Tensor,
                     hinge: float) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
        kernels, T, npdt = self._numba_setup()
        m = Xb.shape[0]
        X, yv, wgt = _pad_rows(Xb.numpy(), npdt), _pad_rows(yb.numpy(), npdt), _pad_rows(np.ones(m), npdt)

        def cols(A: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(A.numpy().T, dtype=npdt)

        outW = np.zeros((T, self.d, self.P), npdt)
        outZ = np.zeros_like(outW)
        yhat = np.zeros(len(X), npdt)
        hval = np.zeros(T, npdt)
        kernels["fused_hinge"](X, cols(self.gates), cols(W - Z), cols(W), cols(Z), yv, wgt, npdt(hinge),
                               outW, outZ, yhat, hval)
        grad = [torch.from_numpy(o.sum(0).T.copy()) for o in (outW, outZ)]
        return torch.from_numpy(yhat[:m]), float(hval.sum()), grad[0], grad[1]

    def describe(self) -> dict[str, Any]:
        return {"n": self.n, "P": self.P, "d": self.d, "backend": self.backend, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "batch_images": self.batch_images,
                "cache_masks": self._cache_masks, "memory_budget_mb": self.memory_budget / 2**20}

