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

#: bytes of hidden activations (``images x H x W x width``) one forward pass may hold; the
#: default number of images per pass is derived from it (a dense net of 16,000 filters on 28x28
#: digits holds 100 MB per image, so 256 images at once would need 26 GB)
ACTIVATION_BUDGET_BYTES = 2**28
#: on CPU, nets at least this wide predict through the fused numba operator (when numba is
#: installed and ``batch_size`` is left to the budget); narrower nets through torch's convolutions
FUSED_MIN_WIDTH = 128


def images_per_pass(batch_size: Any, width: int, pixels: int, itemsize: int) -> int:
    """``batch_size`` checked (an int >= 1), or for ``None`` the most images whose hidden
    activations fit :data:`ACTIVATION_BUDGET_BYTES` (at least 1)."""
    if batch_size is None:
        return max(1, ACTIVATION_BUDGET_BYTES // max(1, int(width) * int(pixels) * int(itemsize)))
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1 or None (sized to memory), got {batch_size!r}")
    return int(batch_size)


def read_network_file(path: Path, fmt: str, what: str) -> dict[str, Any]:
    """The dict of a convexdual network file (``torch.load(weights_only=True)``: tensors, numbers and
    strings only), checked to be of format ``fmt``; a :class:`DataFormatError` naming ``path`` otherwise."""
    if not path.is_file():
        raise DataFormatError(f"no network file at {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataFormatError(f"{path} is not a readable torch file (or holds more than weights): {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise DataFormatError(f"{path} is not a convexdual {what} file (expected format {fmt!r})")
    return blob


class TwoLayerConvNet(nn.Module):
    """``f(x) = [x_c +] sum_j v_j relu(x (*) u_j)`` (docs/math.md, eq. 1).

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
    def predict(self, images: Any, *, batch_size: int | None = None,
                device: torch.device | str | None = None) -> np.ndarray:
        """Batched inference on numpy/torch images ``(N, [C,] H, W)``; returns numpy ``(N, H, W)``.

        Args:
            images: inputs, ``(N, H, W)`` (one channel) or ``(N, C, H, W)``.
            batch_size: images per forward pass (>= 1); None: as many as keep the hidden
                activations within :data:`ACTIVATION_BUDGET_BYTES` (256 MB). With None, on CPU,
                nets of at least :data:`FUSED_MIN_WIDTH` filters on large inputs run through the
                fused numba pattern operator instead (same numbers up to rounding; 16,000 filters
                over 4,400 digits 28x28: minutes of convolutions otherwise).
            device: where to run ("cpu", "cuda", ...); default: where the weights are. The
                module is moved there (checked first: "cuda" on a CPU-only torch is a ValueError).
        """
        from convexdual._validation import as_images, check_device

        p = next(self.parameters())
        dev = check_device(device) if device is not None else p.device
        x = as_images(images, "images")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"images have {x.shape[1]} channel(s) but the network takes {self.in_channels}: "
                             f"give (N, {self.in_channels}, H, W)" + (" or (N, H, W)" if self.in_channels == 1 else ""))
        if dev.type == "cpu" and self.width >= FUSED_MIN_WIDTH and x.shape[0] * self.width * x.shape[2] * x.shape[3] \
                >= 5_000_000 and batch_size is None:
            from convexdual._fused_kernels import numba_available

            if numba_available():
                return self._predict_fused(x, p.dtype)
        batch_size = images_per_pass(batch_size, self.width, x.shape[2] * x.shape[3], p.element_size())
        module = self.to(dev) if dev != p.device else self
        outs = []
        for s in range(0, x.shape[0], batch_size):
            xb = torch.from_numpy(x[s : s + batch_size]).to(dev, p.dtype)
            outs.append(module(xb)[:, 0].double().cpu().numpy())
        return np.concatenate(outs)

    def _predict_fused(self, x: np.ndarray, dtype: torch.dtype) -> np.ndarray:
        """The same outputs through the fused pattern operator: with a 1x1 second layer,
        ``sum_m v_m relu(x_p^T u_m) = sum_m 1[x_p^T u_m >= 0] x_p^T (v_m u_m)``, i.e. the operator
        with gates ``U`` applied to ``v U``; no ``width x pixels`` activation is ever stored."""
        from convexdual.operators import PatternOperator

        U, v = self.filters()
        op = PatternOperator(x, self.kernel_size, U, dtype=dtype, backend="numba")
        out = op.forward(torch.as_tensor(v[:, None] * U, dtype=dtype)).double().numpy()
        out = out.reshape(x.shape[0], x.shape[2], x.shape[3])
        if self.residual:
            out = out + x[:, self.residual_channel].astype(np.float64)
        return out

    def to(self, *args: Any, **kwargs: Any) -> "TwoLayerConvNet":
        """``nn.Module.to`` with the device checked first (a clear ValueError for "cuda" on a CPU-only torch)."""
        from convexdual._validation import check_device

        dev = kwargs.get("device")
        if dev is None and args and isinstance(args[0], (str, torch.device)):
            dev = args[0]
        if dev is not None:
            check_device(dev)
        return super().to(*args, **kwargs)

    # ---- persistence ----------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "width": self.width, "kernel_size": self.kernel_size,
                "residual": self.residual, "residual_channel": self.residual_channel}

    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Save weights, architecture and JSON-able metadata to one ``.pt`` file, atomically.

        The file holds only tensors, numbers and strings (it loads with
        ``torch.load(weights_only=True)``). It is written under a temporary name in the
        same folder and renamed, so an existing file is replaced whole or not at all.
        Read it back with :meth:`load`, which returns ``(net, metadata)``.
        """
        from convexdual._io import atomic_torch_save

        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict of JSON-able values, got {type(metadata).__name__}")
        try:
            meta_json = json.dumps(metadata or {}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metadata must hold JSON-able values (str, finite numbers, lists, dicts): {exc}") from None
        return atomic_torch_save({"format": _FORMAT, "config": self.config(),
                                  "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
                                  "metadata_json": meta_json}, Path(path))

    @classmethod
    def load(cls, path: str | Path, *, device: torch.device | str = "cpu") -> tuple["TwoLayerConvNet", dict[str, Any]]:
        """Load a network saved by :meth:`save`.

        Returns a **tuple** ``(net, metadata)``: the network, and the dict passed to
        :meth:`save` (``{}`` if none)::

            net, meta = TwoLayerConvNet.load("runs/solve/network.pt")
            beta = meta.get("beta")
            denoised = net.predict(noisy)

        The file is read with ``torch.load(..., weights_only=True)`` (no code runs) and
        every field is checked before the module is built.

        Raises:
            DataFormatError: no such file, not a torch file, not a convexdual network file,
                or inconsistent/invalid content (missing config, weights whose shapes do not
                match the config, non-finite weights, bad metadata), with what is wrong.
            ValueError: ``device`` is not usable here (e.g. "cuda" on a CPU-only torch).
        """
        from convexdual._validation import check_device

        dev = check_device(device)
        path = Path(path)
        blob = read_network_file(path, _FORMAT, "network")
        cfg = _check_config(blob.get("config"), path)
        sd = _check_state_dict(blob.get("state_dict"), cfg, path)
        meta = _read_metadata(blob, path)
        return cls._from_checked(cfg, sd).to(dev), meta

    @classmethod
    def _from_checked(cls, cfg: dict[str, Any], sd: dict[str, torch.Tensor]) -> TwoLayerConvNet:
        """The net of a checked ``config`` and ``state_dict`` (:func:`_check_config`, :func:`_check_state_dict`)."""
        net = cls(cfg["in_channels"], cfg["width"], cfg["kernel_size"], residual=cfg["residual"],
                  residual_channel=cfg["residual_channel"], dtype=sd["conv1.weight"].dtype)
        net.load_state_dict(sd)
        return net

    def extra_repr(self) -> str:
        return f"width={self.width}, kernel_size={self.kernel_size}, residual={self.residual}"


def _read_metadata(blob: dict[str, Any], path: Path) -> dict[str, Any]:
    """The ``metadata_json`` of a network file as a dict (a JSON object), or DataFormatError."""
    meta_json = blob.get("metadata_json", "{}")
    try:
        meta = json.loads(meta_json) if isinstance(meta_json, str) else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise DataFormatError(f"{path}: metadata_json must be a JSON object (a dict); got {str(meta_json)[:80]!r}")
    return meta


def _check_config(cfg: Any, path: Path) -> dict[str, Any]:
    """The ``config`` of a network file, every field checked (types and ranges)."""
    keys = ("in_channels", "width", "kernel_size", "residual", "residual_channel")
    if not isinstance(cfg, dict):
        raise DataFormatError(f"{path} has no architecture config (expected a dict with {', '.join(keys)})")
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise DataFormatError(f"{path}: config lacks {', '.join(missing)} (needs {', '.join(keys)})")

    def is_int(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    C, m, k, res, rc = (cfg[k] for k in keys)
    if not is_int(C) or C < 1:
        raise DataFormatError(f"{path}: config in_channels must be an int >= 1, got {C!r}")
    if not is_int(m) or m < 0:
        raise DataFormatError(f"{path}: config width must be an int >= 0, got {m!r}")
    if not is_int(k) or k < 1 or k % 2 == 0:
        raise DataFormatError(f"{path}: config kernel_size must be an odd int >= 1, got {k!r}")
    if not isinstance(res, bool):
        raise DataFormatError(f"{path}: config residual must be true or false, got {res!r}")
    if not is_int(rc) or not 0 <= rc < C:
        raise DataFormatError(f"{path}: config residual_channel must be an int in [0, {C - 1}], got {rc!r}")
    return {k: cfg[k] for k in keys}


def _check_state_dict(sd: Any, cfg: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The weights of a network file: exactly conv1/conv2, float, shapes from ``cfg``, finite."""
    m, C, k = max(cfg["width"], 1), cfg["in_channels"], cfg["kernel_size"]
    want = {"conv1.weight": (m, C, k, k), "conv2.weight": (1, m, 1, 1)}
    if not isinstance(sd, dict) or set(sd) != set(want):
        got = sorted(sd) if isinstance(sd, dict) else type(sd).__name__
        raise DataFormatError(f"{path}: state_dict must hold exactly {sorted(want)}; got {got}")
    dtypes = set()
    for name, shape in want.items():
        t = sd[name]
        if not isinstance(t, torch.Tensor) or t.dtype not in (torch.float32, torch.float64):
            raise DataFormatError(f"{path}: {name} must be a float32/float64 tensor, got "
                                  f"{getattr(t, 'dtype', type(t).__name__)}")
        if tuple(t.shape) != shape:
            raise DataFormatError(
                f"{path}: {name} has shape {tuple(t.shape)} but the config (width {cfg['width']}, in_channels {C}, "
                f"kernel_size {k}) needs {shape}; the file is inconsistent")
        if not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise DataFormatError(f"{path}: {name} has {bad} NaN/Inf value(s); a network's weights must be finite")
        dtypes.add(t.dtype)
    if len(dtypes) > 1:
        raise DataFormatError(f"{path}: conv1.weight and conv2.weight have different dtypes {sorted(map(str, dtypes))}")
    if cfg["width"] == 0 and any(bool(sd[n].abs().sum() > 0) for n in want):
        raise DataFormatError(f"{path}: config width is 0 but the stored weights are not zero")
    return sd


def primal_objective(net: TwoLayerConvNet, inputs: Any, targets: Any, beta: float, loss: Any = "squared",
                     *, batch_size: int | None = None, huber_delta: float | None = None, comm: Any = None) -> float:
    """Objective (2) of a network on data: ``sum L(f(x_n) - y_n) + beta/2 sum(||u_j||^2 + v_j^2)``.

    Computed in float64 through the network itself (a check independent of the
    convex program).

    Args:
        net: the network.
        inputs: ``(N, [C,] H, W)``; targets: ``(N, H, W)``.
        beta: weight decay (> 0).
        loss: a name ("squared", "absolute", "huber") or a :class:`~convexdual.losses.Loss`.
        huber_delta: delta of the Huber loss when ``loss="huber"`` (default 1.0).
        comm: the ranks holding the images (:mod:`convexdual.distributed`): ``inputs``/``targets``
            are this rank's, and the loss is summed over every rank's.
    """
    from convexdual._validation import as_images, as_targets, check_beta
    from convexdual.losses import get_loss

    if huber_delta is not None:
        if not (isinstance(loss, str) and loss.lower() == "huber"):
            raise ValueError("huber_delta is only for loss='huber'")
        loss = get_loss("huber", delta=huber_delta)
    else:
        loss = get_loss(loss)
    beta = check_beta(beta)
    inputs = as_images(inputs, "inputs")
    targets = as_targets(targets, inputs, "targets")
    pred = net.predict(inputs, batch_size=batch_size)
    fit = loss.value((pred - targets).reshape(-1))
    if comm is not None:
        fit = comm.sum(float(fit))
    U, v = net.filters()
    reg = 0.5 * beta * (float(np.sum(U * U)) + float(np.sum(v * v)))
    return float(fit + reg) if math.isfinite(fit) else float("nan")
