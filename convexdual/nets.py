"""The primal network of eq. (1): conv k x k -> ReLU -> conv 1 x 1 (+ skip)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convexdual.errors import DataFormatError

__all__ = ["TwoLayerConvNet", "primal_objective"]

_FORMAT = "convexdual.TwoLayerConvNet/1"


class TwoLayerConvNet(nn.Module):
    """``f(x) = [x_c +] sum_j v_j relu(x (*) u_j)`` (MATH.md eq. 1).

    ``Conv2d(C, m, k, padding=k//2, bias=False)`` -> ReLU -> ``Conv2d(m, 1, 1, bias=False)``,
    plus ``x[:, residual_channel]`` when ``residual``.

    Args:
        in_channels: C.
        width: number of filters m (a width of 0 is stored as one zero filter).
        kernel_size: odd k.
        residual: add the skip connection (Corollary 1.1).
        residual_channel: which input channel the skip carries.

    Shapes:
        input ``(N, C, H, W)`` -> output ``(N, 1, H, W)``.
    """

    def __init__(self, in_channels: int, width: int, kernel_size: int, *, residual: bool = False,
                 residual_channel: int = 0, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        self.in_channels = int(in_channels)
        self.width = int(width)
        self.kernel_size = int(kernel_size)
        self.residual = bool(residual)
        self.residual_channel = int(residual_channel)
        m = max(self.width, 1)
        self.conv1 = nn.Conv2d(in_channels, m, kernel_size, padding=kernel_size // 2, bias=False,
                               dtype=dtype, device=device)
        self.conv2 = nn.Conv2d(m, 1, 1, bias=False, dtype=dtype, device=device)
        if self.width == 0:
            with torch.no_grad():
                self.conv1.weight.zero_()
                self.conv2.weight.zero_()

    # ---- construction -------------------------------------------------------
    @classmethod
    def from_filters(cls, U: np.ndarray, v: np.ndarray, in_channels: int, kernel_size: int, *,
                     residual: bool = False, residual_channel: int = 0,
                     dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> "TwoLayerConvNet":
        """Build from first-layer filters ``U (m, C*k*k)`` and output weights ``v (m,)``."""
        U = np.asarray(U, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        if U.ndim != 2 or U.shape[0] != v.shape[0] or U.shape[1] != in_channels * kernel_size**2:
            raise ValueError(f"U must be (m, C*k*k) = (m, {in_channels * kernel_size**2}) and v (m,); "
                             f"got {U.shape} and {v.shape}")
        net = cls(in_channels, U.shape[0], kernel_size, residual=residual,
                  residual_channel=residual_channel, dtype=dtype, device=device)
        if U.shape[0] > 0:
            with torch.no_grad():
                net.conv1.weight.copy_(torch.from_numpy(U.reshape(-1, in_channels, kernel_size, kernel_size)))
                net.conv2.weight.copy_(torch.from_numpy(v.reshape(1, -1, 1, 1)))
        return net

    def filters(self) -> tuple[np.ndarray, np.ndarray]:
        """``(U (m, d), v (m,))`` as float64 numpy (empty for width 0)."""
        if self.width == 0:
            return np.zeros((0, self.in_channels * self.kernel_size**2)), np.zeros(0)
        U = self.conv1.weight.detach().cpu().double().numpy().reshape(self.width, -1)
        v = self.conv2.weight.detach().cpu().double().numpy().reshape(-1)
        return U, v

    # ---- inference ----------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        out = self.conv2(torch.relu(self.conv1(x)))
        if self.residual:
            out = out + x[:, self.residual_channel : self.residual_channel + 1]
        return out

    @torch.no_grad()
    def predict(self, images: Any, *, batch_size: int = 256, device: torch.device | str | None = None) -> np.ndarray:
        """Batched inference on numpy/torch images ``(N, [C,] H, W)``; returns numpy ``(N, H, W)``."""
        from convexdual._validation import as_images

        x = as_images(images, "images")
        p = next(self.parameters())
        dev = torch.device(device) if device is not None else p.device
        module = self.to(dev) if dev != p.device else self
        outs = []
        for s in range(0, x.shape[0], batch_size):
            xb = torch.from_numpy(x[s : s + batch_size]).to(dev, p.dtype)
            outs.append(module(xb)[:, 0].double().cpu().numpy())
        return np.concatenate(outs)

    # ---- persistence ----------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "width": self.width, "kernel_size": self.kernel_size,
                "residual": self.residual, "residual_channel": self.residual_channel}

    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Save weights, architecture and JSON-able metadata to one ``.pt`` file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": _FORMAT, "config": self.config(),
                    "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
                    "metadata_json": json.dumps(metadata or {})}, path)
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: torch.device | str = "cpu") -> tuple["TwoLayerConvNet", dict[str, Any]]:
        """Load a network saved by :meth:`save`; returns ``(net, metadata)``."""
        path = Path(path)
        if not path.is_file():
            raise DataFormatError(f"no network file at {path}")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DataFormatError(f"{path} is not a readable torch file: {exc}") from exc
        if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
            raise DataFormatError(f"{path} is not a convexdual network file (expected format {_FORMAT!r})")
        cfg = blob["config"]
        sd = blob["state_dict"]
        dtype = sd["conv1.weight"].dtype
        net = cls(cfg["in_channels"], cfg["width"], cfg["kernel_size"], residual=cfg["residual"],
                  residual_channel=cfg["residual_channel"], dtype=dtype)
        net.load_state_dict(sd)
        return net.to(device), json.loads(blob.get("metadata_json", "{}"))

    def extra_repr(self) -> str:
        return f"width={self.width}, kernel_size={self.kernel_size}, residual={self.residual}"


def primal_objective(net: TwoLayerConvNet, inputs: np.ndarray, targets: np.ndarray, beta: float, loss,
                     *, batch_size: int = 256) -> float:
    """Objective (2) of a network on data: ``sum L(f(x_n) - y_n) + beta/2 sum(||u_j||^2 + v_j^2)``.

    Computed in float64 through the network itself (a check independent of the
    convex program). ``inputs (N, C, H, W)``, ``targets (N, H, W)``.
    """
    pred = net.predict(inputs, batch_size=batch_size)
    fit = loss.value((pred - targets).reshape(-1))
    U, v = net.filters()
    reg = 0.5 * beta * (float(np.sum(U * U)) + float(np.sum(v * v)))
    return float(fit + reg) if math.isfinite(fit) else float("nan")
